# -*- test-case-name: tests.test_engine_pool -*-
"""
L{EnginePool}: the engines a proxy may use (from a static list or an
orchestrator), their health (probes, failed calls, the orchestrator's word),
their load (this process's sessions, the cluster's through an
L{ILoadLedger}, the orchestrator's count), and reservations on them.

A channel asks L{EnginePool.reserve} for an engine; the slot is taken
(atomically, under capacity) before the engine is called; then the channel
commits the reservation with the session the engine granted, or releases it.
A committed reservation is released when its session stops or is lost. With
an orchestrator, a commit sends C{stream_started} and the release after it
C{stream_ended}, in that order per stream.

The pool ties together L{acetwist.engines.roster} (the engines and their
health), L{acetwist.engines.reservation} (reservations) and
L{acetwist.engines.status} (what the status page shows).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, FrozenSet, List, Optional

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from acetwist.engine_api import IEngine
from acetwist.engines.api import IEnginePool, ILoadLedger, IReservation
from acetwist.engines.events import EventSender
from acetwist.engines.http import JsonHTTP
from acetwist.engines.reservation import (
    COMMITTED, RELEASED, RESERVED, Reservation, ReservationBook, stream_ended_body, stream_started_body)
from acetwist.deferreds import observe
from acetwist.engines.roster import RECHECK_AFTER, EngineRoster
from acetwist.engines.select import rank
from acetwist.engines.status import engines_status, source_status

__all__ = ["EnginePool", "Reservation", "RESERVED", "COMMITTED", "RELEASED", "RECHECK_AFTER",
           "stream_started_body", "stream_ended_body"]

log = Logger()


@implementer(IEnginePool)
class EnginePool:
    """
    The engine pool (see the module docstring).

    @param source: a L{acetwist.engines.sources.StaticSource} or L{acetwist.engines.sources.OrchestratorSource}.
    @param ledger: where load is counted (in memory, or Redis for a cluster).
    @param make_client: an engine client for a URL (one per engine, closed on stop).
    @param probes: the HTTP client for probes.
    @param capacity: C{--engine-max-streams} when given (it wins); else the
        source's (the orchestrator's C{max_streams_per_engine}); else 0 (no limit).
    @param events: the orchestrator's event sender, if there is an orchestrator.
    @param reservation_ttl: a reservation not committed or released by then frees its slot.
    @param refresh_interval: committed slots are committed again this often (the
        ledger lets them expire after about three of these), and cluster loads read.
    @param trust_new_engines: a new engine is eligible before its first probe
        answers (default: not until then; a reservation waits for first probes
        when no known engine is eligible).
    """

    log = log

    def __init__(
        self,
        source: Any,
        *,
        clock: IReactorTime,
        ledger: ILoadLedger,
        make_client: Callable[[str], IEngine],
        probes: JsonHTTP,
        worker_id: str,
        capacity: Optional[int] = None,
        check_interval: float = 10.0,
        probe_timeout: float = 5.0,
        events: Optional[EventSender] = None,
        reservation_ttl: float = 30.0,
        refresh_interval: float = 10.0,
        retry_after: int = 5,
        trust_new_engines: bool = False,
        on_stop: Optional[Callable[[], "Deferred[Any]"]] = None,
    ) -> None:
        self.source = source
        self.clock = clock
        self.ledger = ledger
        self.worker_id = worker_id
        self.capacity_override = capacity
        self.check_interval = check_interval
        self.events = events
        self.refresh_interval = refresh_interval
        self.on_stop = on_stop
        self.roster = EngineRoster(clock=clock, make_client=make_client, probes=probes,
                                   probe_timeout=min(probe_timeout, check_interval),
                                   trust_new_engines=trust_new_engines)
        self.book = ReservationBook(self.roster, source, clock=clock, ledger=ledger,
                                    capacity=lambda: self.capacity, worker_id=worker_id, events=events,
                                    reservation_ttl=reservation_ttl, retry_after=retry_after)
        #: C{reserved}, C{refused}, C{ledger_full}
        self.counters: Dict[str, int] = self.book.counters
        self._loops: List[LoopingCall] = []
        self._stop_d: Optional[Deferred[None]] = None

    # ------------------------------------------------------------ properties

    @property
    def capacity(self) -> int:
        """Streams per engine (0: no limit)."""
        if self.capacity_override is not None:
            return self.capacity_override
        return self.source.capacity or 0

    @property
    def json_calls(self) -> int:
        """getstream calls made through every engine client, ever."""
        return self.roster.json_calls

    @property
    def stop_calls(self) -> int:
        """stop calls made through every engine client, ever."""
        return self.roster.stop_calls

    def engine(self, engine_id: str) -> Optional[IEngine]:
        """The client of engine C{engine_id}, if the pool has it."""
        entry = self.roster.entries.get(engine_id)
        return entry.client if entry is not None else None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self.roster.started or self.roster.stopped:
            return
        self.roster.started = True
        self.source.start(self.roster.apply)
        # New engines are probed as they are listed; then every engine every check interval.
        loops = ((self.check_interval, self.roster.probe_all), (self.refresh_interval, self.book.refresh))
        for interval, call in loops:
            loop = LoopingCall(call)
            loop.clock = self.clock
            loop.start(interval, now=False)
            self._loops.append(loop)

    def stop(self) -> "Deferred[None]":
        if self._stop_d is None:
            self._stop_d = Deferred.fromCoroutine(self._stop())
        return observe(self._stop_d)

    async def _stop(self) -> None:
        self.roster.stopped = True
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()
        self.source.stop()
        self.roster.cancel_probes()
        if self.events is not None:
            await self.events.flush(5.0)
        await self.roster.close()
        if self.on_stop is not None:
            try:
                await self.on_stop()
            except Exception:
                log.failure("engine pool: closing its HTTP connections")

    # ------------------------------------------------------------ health

    def on_unhealthy(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call C{callback(engine_id)} whenever an engine becomes unhealthy; returns an unsubscribe function."""
        return self.roster.on_unhealthy(callback)

    def healthy(self, engine_id: str) -> bool:
        """Engine C{engine_id} is known and healthy (probes and the orchestrator agree)."""
        return self.roster.healthy(engine_id)

    def connection_failed(self, engine_id: str) -> None:
        self.roster.connection_failed(engine_id)

    # ------------------------------------------------------------ load and reservations

    def eligible(self, exclude: FrozenSet[str] = frozenset()) -> bool:
        return bool(rank(self.roster.candidates(self.capacity), exclude))

    def can_fail_over(self, engine_id: str) -> bool:
        return any(known != engine_id for known in self.roster.entries)

    def reserve(self, stream_key: str, only: Optional[str] = None,
                exclude: FrozenSet[str] = frozenset()) -> "Deferred[IReservation]":
        return Deferred.fromCoroutine(self.book.reserve(stream_key, only, exclude))

    # ------------------------------------------------------------ status

    def status(self) -> List[Dict[str, Any]]:
        return engines_status(self.roster.entries.values(), self.capacity)

    def source_status(self) -> Dict[str, Any]:
        """Where the list comes from and whether it is current (C{stale} while the orchestrator cannot be read)."""
        return source_status(self.source, capacity=self.capacity,
                             eligible=len(rank(self.roster.candidates(self.capacity))),
                             counters=self.counters, events=self.events)
