"""
The recovery ladder as a plain value: what to try next when the engine
stream is lost, and after how long.

Rungs: re-read the same playback URL (C{reconnect_attempts} times), then open
a new engine session (C{session_attempts} times), then give up. The delay
doubles per attempt (C{backoff}, 2 x, 4 x ..., at most L{MAX_BACKOFF}). An
answer that says the engine no longer knows the session (L{EngineError.definitive})
skips the remaining re-reads and opens a new session at once: backoff is for
connection failures and empty replies only.
"""

from __future__ import annotations

import enum
from typing import Optional

import attr

from acetwist.errors import EngineError

MAX_BACKOFF = 8.0


class Rung(enum.Enum):
    REREAD = "re-read"
    SESSION = "new session"
    GIVE_UP = "give up"


@attr.s(frozen=True, auto_attribs=True)
class Step:
    """The next thing to try: C{rung} after C{delay} seconds; C{attempt} counts from 1."""

    rung: Rung
    delay: float
    attempt: int


@attr.s(auto_attribs=True)
class Ladder:
    """One recovery incident's climb; make a new one for the next incident."""

    rereads: int
    sessions: int
    backoff: float
    max_backoff: float = MAX_BACKOFF
    attempts: int = 0

    def skip_rereads(self) -> None:
        """There is no playback URL of ours to re-read (a takeover): start at the session rungs."""
        self.rereads = 0

    def next(self, error: Optional[EngineError] = None) -> Step:
        """The step after a failed attempt (or at the start of the incident) that ended with C{error}."""
        definitive = error is not None and error.definitive
        if definitive:
            self.rereads = 0
        if self.rereads > 0:
            self.rereads -= 1
            return self._step(Rung.REREAD, self._delay())
        if self.sessions > 0:
            self.sessions -= 1
            return self._step(Rung.SESSION, 0.0 if definitive else self._delay())
        return self._step(Rung.GIVE_UP, 0.0)

    def _delay(self) -> float:
        return float(min(self.backoff * (2 ** self.attempts), self.max_backoff))

    def _step(self, rung: Rung, delay: float) -> Step:
        self.attempts += 1
        return Step(rung, delay, self.attempts)
