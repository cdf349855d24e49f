"""
The owner's source: an engine session read into the channel's ring.

C{opening -> reading -> waiting for a rung -> (re-reading | re-opening) ...
-> stopped}. Each state owns what it waits for (the JSON call, the reader,
the rung's timer), so leaving it cancels that; a reply that arrives after
the source stopped finds the C{Stopped} state, where an engine session is
stopped once and everything else is ignored.

Every session is opened on an engine the pool reserved for it before the
engine was called (L{IEnginePool.reserve}); the reservation is committed
when the session is granted and released when it is stopped or lost.

Before the stream's first byte a failure is final (the waiting players get
its HTTP status), except an empty reply while the engine warms up, which is
read again until the first-byte deadline, and an unreachable engine when
another one is eligible. After data has flowed, a lost stream climbs the
recovery L{Ladder}, whose last rung moves the channel to another engine.
"""

from __future__ import annotations

from typing import Callable, FrozenSet, Optional, Protocol

from automat import TypeMachineBuilder
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.python.failure import Failure
from zope.interface import implementer

from acetwist.channel.engine_core import Attempt, EngineCore, Granted, Open, Wait, as_error
from acetwist.channel.ladder import Rung, Step
from acetwist.channel.weak import weakly
from acetwist.engines.api import IReservation
from acetwist.errors import EngineError, ErrorKind
from acetwist.interfaces import IStreamSource
from acetwist.engine_api import HLS
from acetwist.upstream import EngineSession, PlaybackEnd

__all__ = ["EngineCore", "EngineSource", "Granted"]

class _Inputs(Protocol):
    def start(self) -> None:
        """Open the first engine session."""

    def stop(self, stop_session: bool) -> None:
        """Stop reading; stop the engine session too when C{stop_session}."""

    def adopt(self, granted: Granted) -> None:
        """Another channel's JSON call replaced our session with C{granted}: read it."""

    def block_cut(self) -> None:
        """The ring cut a block from our data."""

    def engine_unhealthy(self, engine_id: str) -> None:
        """The pool says engine C{engine_id} became unhealthy."""

    def _opened(self, granted: Granted) -> None: ...

    def _open_failed(self, error: EngineError, engine_id: Optional[str]) -> None: ...

    def _data(self, data: bytes) -> None: ...

    def _splice(self) -> None: ...

    def _ended(self, end: PlaybackEnd) -> None: ...

    def _read(self, timeout: float) -> None: ...

    def _open(self, only: Optional[str], exclude: FrozenSet[str]) -> None: ...

    def _climb(self, step: Step, timeout: float) -> None: ...

    def _due(self) -> None: ...

    def _give_up(self, error: EngineError) -> None: ...

    def _handed_over(self) -> None: ...


def _build() -> Callable[[EngineCore], _Inputs]:
    machine = TypeMachineBuilder(_Inputs, EngineCore)

    def call_engine(m: _Inputs, s: EngineCore, only: Optional[str], exclude: FrozenSet[str]) -> Open:
        def reserved(reservation: IReservation) -> None:
            def granted(session: EngineSession) -> None:
                reservation.commit(session)
                m._opened(Granted(session, reservation))

            def refused(failure: Failure) -> None:
                reservation.release("refused")
                m._open_failed(as_error(failure), str(reservation.engine_id))

            reservation.engine.open_session(s.selector).addCallbacks(granted, refused)

        s.pool.reserve(s.key, only=only, exclude=exclude).addCallbacks(
            reserved, lambda f: m._open_failed(as_error(f), None))
        return Open()

    def start_reading(m: _Inputs, s: EngineCore, timeout: float) -> Attempt:
        assert s.current is not None
        attempt = Attempt(weakly(m._data), weakly(m._ended), weakly(m._splice))
        engine, session = s.current.reservation.engine, s.current.session
        if session.format == HLS:
            attempt.reader = engine.read_hls(session.playback_url, on_data=attempt.data, on_splice=attempt.splice,
                                             on_end=attempt.ended, first_byte_timeout=timeout,
                                             idle_timeout=s.settings.idle_timeout)
        else:
            attempt.reader = engine.read(session.playback_url, on_data=attempt.data, on_end=attempt.ended,
                                         first_byte_timeout=timeout, idle_timeout=s.settings.idle_timeout)
        return attempt

    def schedule(m: _Inputs, s: EngineCore, step: Step, timeout: float) -> Wait:
        return Wait(s.clock.callLater(step.delay, weakly(m._due)), step, timeout)

    idle = machine.state("Idle")
    opening = machine.state("Opening", call_engine)
    deciding = machine.state("Deciding")
    reading = machine.state("Reading", start_reading)
    waiting = machine.state("Waiting", schedule)
    stopped = machine.state("Stopped")

    # ---------------------------------------------------------------- idle
    @idle.upon(_Inputs.start).to(deciding)
    def start(m: _Inputs, s: EngineCore) -> None:
        if s.had_data:
            # a takeover: players are waiting, and there is no playback URL of ours to re-read
            s.begin_incident()
            assert s.ladder is not None
            s.ladder.skip_rereads()
        m._open(None, frozenset())

    idle.upon(_Inputs.stop).to(stopped).returns(None)

    # ---------------------------------------------------------------- opening
    def accept(m: _Inputs, s: EngineCore, granted: Granted) -> None:
        session = granted.session
        s.sessions_opened += 1
        s.log.info("engine session {pid} for {key} on {engine} (infohash {ih})", pid=session.pid, key=s.key,
                   engine=granted.engine_id, ih=session.infohash)
        if not s.on_session(granted):
            m._handed_over()
            return
        s.current = granted
        s.failover_since = None
        if not s.had_data:
            s.phase = "prebuffering"
            s.first_byte_deadline = s.clock.seconds() + s.settings.first_byte_timeout
        # a new engine session prebuffers like the first one did: the full first-byte deadline
        m._read(s.settings.first_byte_timeout)

    @opening.upon(_Inputs._opened).to(deciding)
    def opened(m: _Inputs, s: EngineCore, o: Open, granted: Granted) -> None:
        accept(m, s, granted)

    @opening.upon(_Inputs._open_failed).to(deciding)
    def open_failed(m: _Inputs, s: EngineCore, o: Open, error: EngineError, engine_id: Optional[str]) -> None:
        down = note_unreachable(s, error, engine_id) or (
            error.kind is ErrorKind.LIMIT and s.current is not None and not s.pool.healthy(s.current.engine_id))
        if s.fallback is not None:
            # our own call failed, but another channel handed us a live session: use it
            granted, s.fallback = s.fallback, None
            accept(m, s, granted)
        elif not s.had_data:
            tried = s.tried | {engine_id} if engine_id else s.tried
            if down and engine_id and s.pool.eligible(exclude=tried):
                s.tried = tried  # an unreachable engine before any data: try another one at once
                m._open(None, tried)
            else:
                m._give_up(error)
        else:
            s.last_end_reason = error.message
            climb(m, s, error, down)

    @opening.upon(_Inputs.adopt).loop()
    def adopt_while_opening(m: _Inputs, s: EngineCore, o: Open, granted: Granted) -> None:
        s.fallback = granted  # our call's session may supersede it, or be superseded by it

    @opening.upon(_Inputs.stop).to(stopped)
    def stop_opening(m: _Inputs, s: EngineCore, o: Open, stop_session: bool) -> None:
        end_sessions(s, stop_session)  # the reply still to come is stopped in Stopped

    # ---------------------------------------------------------------- deciding (transient)
    deciding.upon(_Inputs._read).to(reading).returns(None)
    deciding.upon(_Inputs._open).to(opening).returns(None)
    deciding.upon(_Inputs._climb).to(waiting).returns(None)
    deciding.upon(_Inputs._handed_over).to(stopped).returns(None)

    @deciding.upon(_Inputs._give_up).to(stopped)
    def give_up(m: _Inputs, s: EngineCore, error: EngineError) -> None:
        end_sessions(s, True, "lost")
        s.on_failed(error)

    @deciding.upon(_Inputs.stop).to(stopped)
    def stop_deciding(m: _Inputs, s: EngineCore, stop_session: bool) -> None:
        end_sessions(s, stop_session)

    # ---------------------------------------------------------------- reading
    @reading.upon(_Inputs._data).loop()
    def data(m: _Inputs, s: EngineCore, a: Attempt, data: bytes) -> None:
        s.had_data = True
        s.fallback = None  # ours is the live one
        s.on_data(data)

    @reading.upon(_Inputs._splice).loop()
    def splice(m: _Inputs, s: EngineCore, a: Attempt) -> None:
        s.splice()

    @reading.upon(_Inputs.block_cut).loop()
    def live(m: _Inputs, s: EngineCore, a: Attempt) -> None:
        if s.phase != "live":
            if s.phase == "recovering" and s.ladder is not None:
                s.log.info("{key} recovered after {n} attempt(s)", key=s.key, n=s.ladder.attempts)
            s.phase = "live"

    @reading.upon(_Inputs._ended).to(deciding)
    def ended(m: _Inputs, s: EngineCore, a: Attempt, end: PlaybackEnd) -> None:
        s.last_end_reason = end.reason
        s.log.info("{key} upstream ended: {reason} ({n} bytes)", key=s.key, reason=end.reason, n=end.bytes_read)
        down = note_unreachable(s, end.error, s.current.engine_id if s.current is not None else None)
        if s.fallback is not None and end.error is not None and end.error.definitive:
            # the engine made the handed-over session after ours: read that one
            granted, s.fallback = s.fallback, None
            if s.current is not None:
                s.current.reservation.release("superseded")
            switch_to(m, s, granted)
        elif not s.had_data:
            before_first_data(m, s, end)
        elif end.bytes_read:
            s.begin_incident()
            climb(m, s, end.error, down)
        else:
            climb(m, s, end.error, down)

    @reading.upon(_Inputs.engine_unhealthy).loop()
    def engine_unhealthy(m: _Inputs, s: EngineCore, a: Attempt, engine_id: str) -> None:
        current = s.current
        if current is None or current.engine_id != engine_id or not s.pool.can_fail_over(engine_id):
            return
        # the engine this stream runs on is failing: move to another one at once
        s.log.warn("{key}: engine {engine} became unhealthy; moving", key=s.key, engine=engine_id)
        read = a.reader.bytes_read if a.reader is not None else 0
        error = EngineError(503, f"engine {engine_id} is unhealthy", kind=ErrorKind.UNREACHABLE)
        error.engine_down = True
        a.ended(PlaybackEnd(f"engine {engine_id} became unhealthy", read, error))
        a.abandon()

    @reading.upon(_Inputs.adopt).to(deciding)
    def adopt_while_reading(m: _Inputs, s: EngineCore, a: Attempt, granted: Granted) -> None:
        a.abandon()
        supersede(s)
        switch_to(m, s, granted)

    @reading.upon(_Inputs.stop).to(stopped)
    def stop_reading(m: _Inputs, s: EngineCore, a: Attempt, stop_session: bool) -> None:
        a.abandon()
        end_sessions(s, stop_session)

    # ---------------------------------------------------------------- waiting for a rung
    @waiting.upon(_Inputs._due).to(deciding)
    def due(m: _Inputs, s: EngineCore, w: Wait) -> None:
        if w.step.attempt:
            s.log.info("{key}: recovery attempt {n} ({rung})", key=s.key, n=w.step.attempt, rung=w.step.rung.value)
        current = s.current
        if w.step.rung is Rung.REREAD and current is not None:
            m._read(w.timeout)
        elif w.step.rung is Rung.FAILOVER and current is not None:
            # the old engine's session is stopped if that engine can still be reached
            s.stop_session(current, "failover")
            m._open(None, frozenset({current.engine_id}))
        elif w.step.rung is Rung.FAILOVER:
            m._open(None, frozenset())
        elif w.step.rung is Rung.SESSION:
            s.stop_session(current, "new session")
            m._open(current.engine_id if current is not None else None, frozenset())
        else:
            m._give_up(lost(s))

    @waiting.upon(_Inputs.adopt).to(deciding)
    def adopt_while_waiting(m: _Inputs, s: EngineCore, w: Wait, granted: Granted) -> None:
        w.cancel()
        supersede(s)
        switch_to(m, s, granted)

    @waiting.upon(_Inputs.stop).to(stopped)
    def stop_waiting(m: _Inputs, s: EngineCore, w: Wait, stop_session: bool) -> None:
        w.cancel()
        end_sessions(s, stop_session)

    # a block cut from data read before the wait (the ring's flush timer) changes nothing
    for state in (idle, opening, deciding, waiting, stopped):
        state.upon(_Inputs.block_cut).loop().returns(None)
        # an engine that fails while the source is not reading is found out by the next rung
        state.upon(_Inputs.engine_unhealthy).loop().returns(None)
        # only the current read splices (see Attempt); nothing to splice outside Reading
        state.upon(_Inputs._splice).loop().returns(None)

    # ---------------------------------------------------------------- stopped
    @stopped.upon(_Inputs._opened).loop()
    @stopped.upon(_Inputs.adopt).loop()
    def too_late(m: _Inputs, s: EngineCore, granted: Granted) -> None:
        s.stop_session(granted)  # nobody will read it

    for call in (_Inputs.start, _Inputs.stop, _Inputs._open_failed, _Inputs._read, _Inputs._open,
                 _Inputs._climb, _Inputs._give_up, _Inputs._handed_over, _Inputs._data, _Inputs._ended):
        stopped.upon(call).loop().returns(None)

    # ---------------------------------------------------------------- shared steps
    def before_first_data(m: _Inputs, s: EngineCore, end: PlaybackEnd) -> None:
        """An empty reply means the engine is warming up; anything else is final."""
        remaining = (s.first_byte_deadline or 0.0) - s.clock.seconds()
        warming = end.error is not None and end.error.kind is ErrorKind.EMPTY
        backoff = s.settings.backoff
        if warming and remaining > backoff:
            m._climb(Step(Rung.REREAD, backoff, 0), remaining - backoff)  # attempt 0: not a recovery
        else:
            m._give_up(end.error or EngineError(502, end.reason))

    def climb(m: _Inputs, s: EngineCore, error: Optional[EngineError], engine_down: bool = False) -> None:
        ladder = s.ladder or s.new_ladder()
        step = ladder.next(error, engine_down)
        if step.rung is Rung.FAILOVER:
            now = s.clock.seconds()
            if s.failover_since is None:
                s.failover_since = now
            elif now - s.failover_since >= s.settings.failover_timeout:
                m._give_up(lost(s))
                return
        if step.rung is Rung.GIVE_UP:
            m._give_up(lost(s))
            return
        s.log.info("{key}: recovery attempt {n} ({rung}) in {delay:g} s", key=s.key, n=step.attempt,
                   rung=step.rung.value, delay=step.delay)
        m._climb(step, s.settings.recovery_first_byte_timeout)

    def lost(s: EngineCore) -> EngineError:
        return EngineError(502, f"engine stream lost and recovery failed ({s.last_end_reason})", kind=ErrorKind.LOST)

    def note_unreachable(s: EngineCore, error: Optional[EngineError], engine_id: Optional[str]) -> bool:
        """Tell the pool about an engine that refused connections; True when the channel should move."""
        if error is not None and error.kind is ErrorKind.UNREACHABLE and error.engine_down and engine_id:
            s.pool.connection_failed(engine_id)
            return True
        return False

    def end_sessions(s: EngineCore, stop_session: bool, reason: str = "stopped") -> None:
        """The source ends: stop our session (or, demoted, only free its slot), and a fallback's."""
        if stop_session:
            s.stop_session(s.current, reason)
        elif s.current is not None:
            s.current.reservation.release("superseded")  # another worker's session replaced it
        s.stop_session(s.fallback, reason)

    def supersede(s: EngineCore) -> None:
        """Another channel's session replaced ours on the engine: ours no longer counts."""
        if s.current is not None:
            s.current.reservation.release("superseded")

    def switch_to(m: _Inputs, s: EngineCore, granted: Granted) -> None:
        s.current = granted
        s.sessions_opened += 1
        if s.had_data:
            s.begin_incident()
        m._read(s.settings.first_byte_timeout)

    return machine.build()


_EngineMachine = _build()


@implementer(IStreamSource)
class EngineSource:
    """The owner reads the engine: one session at a time, recovered along the ladder."""

    def __init__(self, core: EngineCore) -> None:
        self.core = core
        self._machine = _EngineMachine(core)
        self._unsubscribe = core.pool.on_unhealthy(weakly(self._machine.engine_unhealthy))

    @property
    def phase(self) -> str:
        return self.core.phase

    @property
    def session(self) -> Optional[EngineSession]:
        return self.core.session

    @property
    def engine_id(self) -> Optional[str]:
        """The engine the current session runs on."""
        return self.core.current.engine_id if self.core.current is not None else None

    @property
    def engine_url(self) -> Optional[str]:
        current = self.core.current
        return str(current.reservation.engine.base_url) if current is not None else None

    def start(self) -> None:
        self._machine.start()

    def stop(self) -> None:
        """The channel ended: stop reading and stop the engine session."""
        self._unsubscribe()
        self._machine.stop(True)

    def abandon(self) -> None:
        """Another worker owns the stream now: stop reading, leave its session alone."""
        self._unsubscribe()
        self._machine.stop(False)

    def adopt(self, granted: Granted) -> None:
        self._machine.adopt(granted)

    def block_cut(self) -> None:
        self._machine.block_cut()

    def stops_done(self) -> "Deferred[None]":
        """Fires when every engine C{stop} sent so far was answered (or timed out)."""
        if not self.core.stop_calls:
            return succeed(None)
        return DeferredList(list(self.core.stop_calls)).addCallback(lambda _: None)
