"""
The data of the engine source's machine: the session it reads and the
reservation that counts it (L{Granted}), the core it works on
(L{EngineCore}), and what each state holds (L{Open}, L{Attempt}, L{Wait}).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, FrozenSet, List, Optional, Set

import attr
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from acetwist.channel.ladder import Ladder, Step
from acetwist.config import Settings
from acetwist.engine_api import IPlaybackReader
from acetwist.engines.api import IEnginePool, IReservation
from acetwist.errors import EngineError, ErrorKind
from acetwist.upstream import EngineSession, PlaybackEnd, Selector


@attr.s(frozen=True, auto_attribs=True)
class Granted:
    """An engine session and the reservation that counts it on its engine."""

    session: EngineSession
    reservation: IReservation

    @property
    def engine_id(self) -> str:
        return str(self.reservation.engine_id)


@dataclass
class EngineCore:
    """
    What the machine works with, and what it reports.

    @ivar on_session: a new session was granted; False means the channel
        handed it (and its players) to another channel, so it is not read.
    @ivar on_recovering: a recovery incident begins (the ring marks a splice);
        also called when the engine's HLS skips segments or marks a
        discontinuity (L{splice}).
    @ivar on_failed: the source gave up; players get C{error}.
    @ivar had_data: the channel has had stream data (from here or, after a
        takeover, from the mirror): failures climb the ladder instead of being final.
    """

    pool: IEnginePool
    selector: Selector
    settings: Settings
    clock: IReactorTime
    on_data: Callable[[bytes], None]
    on_session: Callable[[Granted], bool]
    on_recovering: Callable[[], None]
    on_failed: Callable[[EngineError], None]
    had_data: bool = False
    key: str = ""
    phase: str = "starting"
    current: Optional[Granted] = None
    ladder: Optional[Ladder] = None
    #: engines tried (and unreachable) for the first session
    tried: FrozenSet[str] = frozenset()
    #: when the channel began looking for another engine (the failover timeout runs from there)
    failover_since: Optional[float] = None
    sessions_opened: int = 0
    last_end_reason: Optional[str] = None
    first_byte_deadline: Optional[float] = None
    #: a session another channel handed us while our own call was in flight:
    #: which of the two the engine made last is unknown, so ours is read and
    #: this one is kept in case the engine says ours is gone
    fallback: Optional[Granted] = None
    stopped_pids: Set[str] = field(default_factory=set)
    stop_calls: List["Deferred[bool]"] = field(default_factory=list)
    log: Logger = field(default_factory=Logger)

    @property
    def session(self) -> Optional[EngineSession]:
        return self.current.session if self.current is not None else None

    def stop_session(self, granted: Optional[Granted], reason: str = "stopped") -> None:
        """Send C{stop} for C{granted}'s session and free its slot, once per session."""
        if granted is None or granted.session.pid in self.stopped_pids:
            return
        self.stopped_pids.add(granted.session.pid)
        self.stop_calls.append(granted.reservation.engine.stop(granted.session))
        granted.reservation.release(reason)

    def new_ladder(self) -> Ladder:
        s = self.settings
        engine_id = self.current.engine_id if self.current is not None else ""
        self.ladder = Ladder(s.reconnect_attempts, s.session_attempts, s.backoff,
                             failover=self.pool.can_fail_over(engine_id))
        self.failover_since = None
        return self.ladder

    def splice(self) -> None:
        """The engine's HLS goes on with a segment that does not continue the last one: the ring marks a splice."""
        self.log.info("{key}: engine HLS spliced (segments missed or a discontinuity)", key=self.key)
        self.on_recovering()

    def begin_incident(self) -> None:
        """The stream was lost after data flowed: recover from the bottom of a new ladder."""
        self.phase = "recovering"
        self.new_ladder()
        self.on_recovering()


@dataclass
class Open:
    """A JSON call in flight (its reply comes to the machine)."""


class Attempt:
    """
    One read of the playback URL. The reader reports to this object, which
    forwards to the machine only while the read is current: a reader that
    reports after it was replaced, or twice, is ignored.
    """

    def __init__(self, on_data: Callable[[bytes], None], on_end: Callable[[PlaybackEnd], None],
                 on_splice: Optional[Callable[[], None]] = None) -> None:
        self._data = on_data  # weak callbacks: the machine holds this read as its state's data
        self._ended = on_end
        self._splice = on_splice
        self.current = True
        self.reader: Optional[IPlaybackReader] = None

    def data(self, data: bytes) -> None:
        if self.current:
            self._data(data)

    def splice(self) -> None:
        if self.current and self._splice is not None:
            self._splice()

    def ended(self, end: PlaybackEnd) -> None:
        if self.current:
            self.current = False
            self._ended(end)

    def abandon(self) -> None:
        self.current = False
        if self.reader is not None:
            self.reader.stop()


@dataclass
class Wait:
    timer: IDelayedCall
    step: Step
    timeout: float

    def cancel(self) -> None:
        if self.timer.active():
            self.timer.cancel()


def as_error(failure: Failure) -> EngineError:
    if isinstance(failure.value, EngineError):
        return failure.value
    _log.failure("unexpected failure of an engine call", failure)
    return EngineError(502, f"internal error: {failure.getErrorMessage()}", kind=ErrorKind.INTERNAL)


_log = Logger()
