"""
Why a player could not get a stream: an L{EngineError} carries the HTTP
status a waiting player gets and an L{ErrorKind} that callers branch on
(never on the message).
"""

from __future__ import annotations

import enum
from typing import Optional


class ErrorKind(enum.Enum):
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    TIMEOUT = "timeout"
    IDLE = "idle"
    EMPTY = "empty"
    GONE = "gone"
    LIMIT = "limit"
    STOPPED = "stopped"
    CLUSTER = "cluster"
    LOST = "lost"


_DEFAULT_KIND = {503: ErrorKind.UNREACHABLE, 504: ErrorKind.TIMEOUT}


class EngineError(Exception):
    """C{status}: what a waiting player gets; C{kind}: why."""

    def __init__(self, status: int, message: str, retry_after: Optional[int] = None, *,
                 kind: Optional[ErrorKind] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.kind = kind if kind is not None else _DEFAULT_KIND.get(status, ErrorKind.REFUSED)

    @property
    def definitive(self) -> bool:
        """The engine no longer knows the session: re-reading its playback URL cannot help."""
        return self.kind is ErrorKind.GONE

    def __repr__(self) -> str:
        return f"EngineError({self.status}, {self.message!r}, kind={self.kind.name})"
