"""
The recovery ladder as a plain value: what to try next when the engine
stream is lost, and after how long.

Rungs: re-read the same playback URL (C{reconnect_attempts} times), then open
a new session on the same engine (C{session_attempts} times), then, with
several engines, fail over to another engine (repeatedly: the engine source
gives up after C{--failover-timeout}), else give up. The delay doubles per
attempt (C{backoff}, 2 x, 4 x ..., at most L{MAX_BACKOFF}).

An answer that says the engine no longer knows the session
(L{EngineError.definitive}) skips the remaining re-reads and opens a new
session at once: backoff is for connection failures and empty replies only.
An engine that is down (refused connections, or unhealthy by its probes)
skips everything up to the failover rung, when there is one.
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
    FAILOVER = "another engine"
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
    failover: bool = False
    max_backoff: float = MAX_BACKOFF
    attempts: int = 0
    failovers: int = 0

    def skip_rereads(self) -> None:
        """There is no playback URL of ours to re-read (a takeover): start at the session rungs."""
        self.rereads = 0

    def next(self, error: Optional[EngineError] = None, engine_down: bool = False) -> Step:
        """The step after a failed attempt (or at the start of the incident) that ended with C{error}."""
        definitive = error is not None and error.definitive
        if engine_down and self.failover:
            self.rereads = self.sessions = 0
        if definitive:
            self.rereads = 0
        if self.rereads > 0:
            self.rereads -= 1
            return self._step(Rung.REREAD, self._delay())
        if self.sessions > 0:
            self.sessions -= 1
            return self._step(Rung.SESSION, 0.0 if definitive else self._delay())
        if self.failover:
            # the first move is at once; while no engine can take the stream, look again with backoff
            first = self.failovers == 0
            self.failovers += 1
            return self._step(Rung.FAILOVER, 0.0 if first else self._delay())
        return self._step(Rung.GIVE_UP, 0.0)

    def _delay(self) -> float:
        return float(min(self.backoff * (2 ** self.attempts), self.max_backoff))

    def _step(self, rung: Rung, delay: float) -> Step:
        self.attempts += 1
        return Step(rung, delay, self.attempts)
