# -*- test-case-name: tests.test_upstream -*-
"""
What the engine's HTTP clients share: the JSON calls of
L{acetwist.upstream.EngineClient}, the playback reads of
L{acetwist.playback.PlaybackReader} and L{acetwist.engine_hls.HLSReader}.
They send the same User-Agent, classify a connection that failed the same
way, and put the URLs the engine hands out on the engine's own address.
"""

from __future__ import annotations

from urllib.parse import urljoin, urlsplit, urlunsplit

from twisted.internet import error as net_error
from twisted.python.failure import Failure
from twisted.web.client import RequestTransmissionFailed, ResponseNeverReceived

from acetwist.errors import EngineError, ErrorKind

USER_AGENT = b"acetwist"


def is_connection_failure(failure: Failure) -> bool:
    """
    The engine could not be reached: the connection was refused, could not
    be made, or was lost before any response (L{ResponseNeverReceived} wraps
    the loss; L{RequestTransmissionFailed} a loss while the request was sent).
    """
    return bool(
        failure.check(
            net_error.ConnectError,  # refused, TCP timeout, no route, connect timeout
            net_error.DNSLookupError,
            net_error.ConnectingCancelledError,
            net_error.ConnectionClosed,  # lost, done, aborted
            ResponseNeverReceived,
            RequestTransmissionFailed,
        )
    )


def could_not_connect(failure: Failure) -> bool:
    """
    No connection could be made at all (refused, timed out, no route, no
    name): the engine itself is down, as opposed to a connection it accepted
    and then dropped (as an engine does to a session it superseded).
    """
    return bool(failure.check(net_error.ConnectError, net_error.DNSLookupError, net_error.ConnectingCancelledError))


def unreachable(failure: Failure) -> EngineError:
    """The error for a call that failed as L{is_connection_failure} says: unreachable, retry after 5 s."""
    assert failure.type is not None
    error = EngineError(503, f"engine unreachable: {failure.type.__name__}", retry_after=5,
                        kind=ErrorKind.UNREACHABLE)
    error.engine_down = could_not_connect(failure)
    return error


def rebase(url: str, engine: str) -> str:
    """Put C{url}'s path and query on the engine's scheme://host:port (engines build URLs from Host)."""
    base = urlsplit(engine)
    parts = urlsplit(url)
    return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))


def resolve(uri: str, playlist_url: str) -> str:
    """
    A playlist entry's URL: C{uri} (relative or absolute) resolved against
    C{playlist_url}, then rebased onto C{playlist_url}'s scheme://host:port.
    """
    return rebase(urljoin(playlist_url, uri), playlist_url)
