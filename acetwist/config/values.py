# -*- test-case-name: tests.test_config,tests.test_engine_pool_config -*-
"""
Parsers of option values (durations, sizes, URLs, endpoints), shared by the
proxy's options and the simulator's. A bad value raises L{ConfigError}.
"""

from __future__ import annotations

import math
import re
from typing import Tuple
from urllib.parse import urlsplit

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?", re.I)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "ki": 1024, "kib": 1024,
               "m": 1000**2, "mb": 1000**2, "mi": 1024**2, "mib": 1024**2,
               "g": 1000**3, "gb": 1000**3, "gi": 1024**3, "gib": 1024**3}


class ConfigError(ValueError):
    """A setting's value is not acceptable."""


def parse_duration(text: str) -> float:
    """Seconds from C{"15"}, C{"1.5"}, C{"500ms"}, C{"15s"}, C{"1m"}, C{"1m30s"} or C{"1h"}."""
    text = text.strip().lower()
    try:
        value = float(text)
    except ValueError:
        pos, value = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            number, unit = float(match.group(1)), match.group(2)
            value += number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
            pos = match.end()
        if pos != len(text) or not text:
            raise ConfigError(f"{text!r} is not a duration (examples: 15, 15s, 500ms, 1m)")
    if not math.isfinite(value):
        raise ConfigError(f"{text!r} is not a finite duration")
    if value < 0:
        raise ConfigError(f"{text!r}: a duration cannot be negative")
    return value


def parse_size(text: str) -> int:
    """Bytes from C{"1048576"}, C{"64KiB"}, C{"16MiB"}, C{"16M"} or C{"1GB"}."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ConfigError(f"{text!r} is not a size (examples: 65536, 64KiB, 16MiB)")
    unit = (match.group(2) or "").lower()
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_engine_url(text: str) -> str:
    """An engine base URL C{http[s]://host[:port]}, without a trailing slash."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{text!r} is not an engine URL like http://127.0.0.1:6878")
    try:
        parts.port
    except ValueError as e:
        raise ConfigError(f"{text!r}: {e}") from None
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"{text!r}: give only scheme://host:port for the engine")
    return f"{parts.scheme}://{parts.netloc}"


def parse_engine_urls(text: str) -> Tuple[str, ...]:
    """One or more engine URLs, comma-separated (a repeated C{--engine} arrives joined by commas)."""
    urls = tuple(parse_engine_url(part) for part in text.split(",") if part.strip())
    if not urls:
        raise ConfigError(f"{text!r}: give at least one engine URL like http://127.0.0.1:6878")
    if len(set(urls)) != len(urls):
        raise ConfigError(f"{text!r}: an engine is listed twice")
    return urls


def parse_orchestrator_url(text: str) -> str:
    """The orchestrator's base URL C{http[s]://host[:port][/path]}, without a trailing slash."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{text!r} is not an orchestrator URL like http://orchestrator:8000")
    try:
        parts.port
    except ValueError as e:
        raise ConfigError(f"{text!r}: {e}") from None
    if parts.query or parts.fragment:
        raise ConfigError(f"{text!r}: give only scheme://host:port[/path] for the orchestrator")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def parse_redis_url(text: str) -> str:
    """C{redis://[[user]:password@]host[:port][/db]}, checked by the Redis coordinator's own parser."""
    from acetwist.coord.settings import parse_redis_url as parse

    try:
        parse(text)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return text.strip()


def parse_prefix(text: str) -> str:
    """A Redis key prefix, checked by the coordinator's own rule."""
    from acetwist.coord.settings import check_prefix

    try:
        check_prefix(text)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return text


def parse_listen(text: str) -> str:
    """
    A Twisted endpoint string (C{tcp:8080}, C{tcp:8080:interface=127.0.0.1},
    C{unix:/run/acetwist.sock}, C{systemd:...}), or acexy's C{:8080} /
    C{host:port} form, which is translated.
    """
    text = text.strip()
    kind = text.split(":", 1)[0]
    if kind in ("tcp", "tcp6", "unix", "ssl", "systemd"):
        return text
    match = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[\w.\-]*):(\d+)", text)
    if match:
        host, port = match.group(1).strip("[]"), int(match.group(2))
        if not 0 <= port <= 65535:
            raise ConfigError(f"{text!r}: port out of range")
        if host in ("", "0.0.0.0"):
            return f"tcp:{port}"
        return f"tcp:{port}:interface={host.replace(':', chr(92) + ':')}"
    raise ConfigError(f"{text!r} is not an endpoint (examples: tcp:8080, tcp:8080:interface=127.0.0.1, :8080)")


#: endpoint kinds whose Twisted parser takes C{backlog=} (a systemd socket is already listening)
_BACKLOG_KINDS = ("tcp", "tcp6", "unix", "ssl")


def with_backlog(endpoint: str, backlog: int) -> str:
    """C{endpoint} with C{:backlog=N} added, unless it already has one or its kind takes none."""
    kind = endpoint.split(":", 1)[0]
    if kind not in _BACKLOG_KINDS or re.search(r"(?<!\\):backlog=", endpoint):
        return endpoint
    return f"{endpoint}:backlog={backlog}"
