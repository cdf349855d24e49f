# -*- test-case-name: tests.test_upstream -*-
"""
Why a stream could not be given to a player.

An L{EngineError} carries two things: C{status}, the HTTP status a waiting
player gets, and C{kind}, why. Callers branch on C{kind} (never on the
message, which is for people and logs).
"""

from __future__ import annotations

import enum
from typing import Dict, Optional


class ErrorKind(enum.Enum):
    """Why the engine (or the proxy) could not give a stream; each kind's usual status in brackets."""

    #: The engine said no: a JSON error (failed to load content), a reply without a playback_url, a
    #: reply that is not JSON, an HTTP 5xx on the playback URL, an HLS playlist that cannot be followed [502].
    REFUSED = "refused"
    #: The connection was refused, failed or was lost before a response, or the engine answered 503 [503].
    UNREACHABLE = "unreachable"
    #: No JSON reply within the deadline; no first stream byte within the deadline [504].
    TIMEOUT = "timeout"
    #: A flowing stream sent nothing for the idle timeout [504].
    IDLE = "idle"
    #: The playback reply ended before any byte: the engine is warming up [502].
    EMPTY = "empty"
    #: The playback URL answered that the engine no longer knows the session (an HTTP 4xx, or
    #: "unknown playback session id"), e.g. after an engine restart [502].
    GONE = "gone"
    #: A proxy limit was reached (channels, players) [503].
    LIMIT = "limit"
    #: The channel was stopped (shutdown) [503].
    STOPPED = "stopped"
    #: The cluster (Redis) cannot be reached [503].
    CLUSTER = "cluster"
    #: The stream was lost and every recovery rung failed [502].
    LOST = "lost"
    #: Something unexpected went wrong in the proxy itself (a bug) [502].
    INTERNAL = "internal"

    @property
    def status(self) -> int:
        """The HTTP status a waiting player usually gets for this kind."""
        return _STATUS[self]

    @property
    def definitive(self) -> bool:
        """
        The engine no longer knows the session: re-reading its playback URL
        cannot help. (A REFUSED playback answer, an HTTP 500 without that
        message, may be passing, so it keeps its re-reads with backoff.)
        """
        return self is ErrorKind.GONE


_STATUS: Dict[ErrorKind, int] = {
    ErrorKind.REFUSED: 502,
    ErrorKind.UNREACHABLE: 503,
    ErrorKind.TIMEOUT: 504,
    ErrorKind.IDLE: 504,
    ErrorKind.EMPTY: 502,
    ErrorKind.GONE: 502,
    ErrorKind.LIMIT: 503,
    ErrorKind.STOPPED: 503,
    ErrorKind.CLUSTER: 503,
    ErrorKind.LOST: 502,
    ErrorKind.INTERNAL: 502,
}


def kind_for_status(status: int) -> ErrorKind:
    """The kind an error with only a status has: 503 unreachable, 504 timeout, anything else refused."""
    if status == 503:
        return ErrorKind.UNREACHABLE
    if status == 504:
        return ErrorKind.TIMEOUT
    return ErrorKind.REFUSED


class EngineError(Exception):
    """
    The engine (or the proxy) could not give us a stream. C{status} is what a
    waiting player gets (502 engine error, 503 unavailable, 504 too slow);
    C{kind} is why, and defaults from C{status} (L{kind_for_status});
    C{retry_after} (seconds) becomes a Retry-After header.
    """

    def __init__(self, status: int, message: str, retry_after: Optional[int] = None, *,
                 kind: Optional[ErrorKind] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.kind: ErrorKind = kind if kind is not None else kind_for_status(status)
        #: no connection to the engine could be made at all (it is down), as opposed to a
        #: connection it accepted and then dropped (as it does to a session it superseded)
        self.engine_down = False

    @property
    def definitive(self) -> bool:
        """Re-reading the same playback URL cannot help: open a new session (or give up) at once."""
        return self.kind.definitive

    def copy(self) -> "EngineError":
        """A new error like this one (to raise again without growing this one's traceback)."""
        copy = EngineError(self.status, self.message, self.retry_after, kind=self.kind)
        copy.engine_down = self.engine_down
        return copy

    def __repr__(self) -> str:
        retry = f", retry_after={self.retry_after}" if self.retry_after is not None else ""
        return f"EngineError({self.status}, {self.message!r}{retry}, kind={self.kind.name})"
