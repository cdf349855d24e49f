# -*- test-case-name: tests.test_web_secrets -*-
"""
Secrets out of what the proxy shows and logs: request URIs lose the values
of their C{token}-like query parameters; engine session URLs lose the
session token they carry (the last path segment), their query and any
C{user:password@}.
"""

from __future__ import annotations

import re
from typing import Optional
from urllib.parse import unquote_to_bytes, urlsplit, urlunsplit

#: what a secret is replaced with
REDACTED = "REDACTED"


def _secret_name(name: bytes) -> bool:
    """A query parameter whose value is a secret: C{token}, C{admin_token}, C{access-token}, ..."""
    return b"token" in unquote_to_bytes(name.replace(b"+", b" ")).lower()


def redact_uri(uri: bytes) -> bytes:
    """C{uri} (a request target, as sent) with the value of every token-like query parameter replaced."""
    path, sep, query = uri.partition(b"?")
    if not sep:
        return uri
    # Twisted parses the query without removing a fragment (C{?id=X#&token=S} authenticates
    # with S), so a fragment is redacted like the rest of the query; C{;} separates too.
    out = []
    for piece in re.split(rb"([&;#])", query):
        name, eq, _value = piece.partition(b"=")
        out.append(name + b"=" + REDACTED.encode() if piece not in (b"&", b";", b"#") and _secret_name(name) else piece)
    return path + b"?" + b"".join(out)


def redact_session_url(url: Optional[str]) -> Optional[str]:
    """
    An engine session URL (C{playback_url}, C{stat_url}, C{command_url}) without
    its secret: C{http://host:6878/ace/cmd/<infohash>/<token>} becomes
    C{http://host:6878/ace/cmd/<infohash>/REDACTED}; a query and credentials are dropped.
    """
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return REDACTED
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    trimmed = parts.path.rstrip("/")
    path = f"{trimmed.rpartition('/')[0]}/{REDACTED}" if trimmed else parts.path
    return urlunsplit((parts.scheme, netloc, path, "", ""))


def redact_credentials(url: str) -> str:
    """C{url} without C{user:password@} (the engine's base URL as shown in /status)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
