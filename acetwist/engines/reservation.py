# -*- test-case-name: tests.test_engine_pool,tests.test_engine_pool_events,tests.test_engine_pool_redis -*-
"""
Reservations on the pool's engines. L{ReservationBook.reserve} ranks the
engines, takes a slot on the best in the ledger (atomically, under
capacity; a full ledger means the next engine), and hands out a
L{Reservation}; the channel commits it with the session the engine granted,
or releases it. Committed slots are committed again every refresh so the
ledger keeps them. With an orchestrator, a commit sends C{stream_started} and
the release after it C{stream_ended}.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, FrozenSet, Optional, Set
from urllib.parse import urlsplit

import attr
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from acetwist.engine_api import EngineSession, IEngine
from acetwist.engines.api import ILoadLedger, IReservation
from acetwist.engines.entry import EngineEntry
from acetwist.engines.events import EventSender
from acetwist.engines.roster import EngineRoster
from acetwist.engines.select import rank, why_none
from acetwist.errors import EngineError, ErrorKind

log = Logger()

RESERVED, COMMITTED, RELEASED = "reserved", "committed", "released"


@implementer(IReservation)
class Reservation:
    """
    A slot on one engine for one stream, taken by L{ReservationBook.reserve}.

    @ivar stream_key: the stream it was taken for (C{id:<hex>} or C{infohash:<hex>}).
    @ivar slot: its unique name in the ledger.
    @ivar worker_id: the worker that holds it.
    @ivar state: C{reserved}, C{committed} or C{released}.
    @ivar session: the engine session it was committed with.
    """

    def __init__(self, book: "ReservationBook", entry: EngineEntry, stream_key: str, slot: str) -> None:
        self._book = book
        self._entry = entry
        self.engine_id: str = entry.id
        self.engine: IEngine = entry.client
        self.engine_url: str = entry.record.url
        self.stream_key = stream_key
        self.slot = slot
        self.worker_id = book.worker_id
        self.state = RESERVED
        self.session: Optional[EngineSession] = None
        #: the orchestrator's id of the stream (from its stream_started answer), if it gave one
        self.orchestrator_stream_id: Optional[str] = None

    def commit(self, session: EngineSession) -> None:
        self._book.commit(self, self._entry, session)

    def release(self, reason: str) -> None:
        self._book.release(self, self._entry, reason)

    def __repr__(self) -> str:
        return f"<Reservation {self.stream_key} on {self.engine_id} {self.state}>"


def stream_started_body(reservation: Reservation, session: EngineSession) -> Dict[str, Any]:
    """The C{stream_started} event of a committed reservation."""
    kind, _, value = reservation.stream_key.partition(":")
    parts = urlsplit(reservation.engine_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return {
        "content_id": value,
        "container_id": reservation.engine_id,
        "engine_id": reservation.engine_id,
        "engine": {"host": parts.hostname or "", "port": port},
        "stream": {"key_type": "infohash" if kind == "infohash" else "content_id", "key": value},
        "session": {
            "playback_session_id": session.playback_session_id,
            "stat_url": session.stat_url,
            "command_url": session.command_url,
            "is_live": session.is_live,
        },
        "labels": {"source": "acetwist", "worker": reservation.worker_id},
    }


def stream_ended_body(reservation: Reservation, reason: str) -> Dict[str, Any]:
    """
    The C{stream_ended} event of a reservation released after its commit
    (with the orchestrator's C{stream_id} when its C{stream_started} answer
    gave one: without it, an orchestrator ends the newest stream on that engine).
    """
    body: Dict[str, Any] = {
        "content_id": reservation.stream_key.partition(":")[2],
        "container_id": reservation.engine_id,
        "reason": reason,
    }
    if reservation.orchestrator_stream_id:
        body["stream_id"] = reservation.orchestrator_stream_id
    return body


class ReservationBook:
    """
    The reservations this process holds (see the module docstring).

    @param roster: the engines.
    @param source: the engine list's source (a reservation waits for its first read).
    @param capacity: streams per engine now (0: no limit).
    @ivar counters: C{reserved}, C{refused} (no engine could take a stream), C{ledger_full}
        (the ledger said an engine was full).
    """

    def __init__(self, roster: EngineRoster, source: Any, *, clock: IReactorTime, ledger: ILoadLedger,
                 capacity: Callable[[], int], worker_id: str, events: Optional[EventSender],
                 reservation_ttl: float, retry_after: int) -> None:
        self.roster = roster
        self.source = source
        self.clock = clock
        self.ledger = ledger
        self.capacity = capacity
        self.worker_id = worker_id
        self.events = events
        self.reservation_ttl = reservation_ttl
        self.retry_after = retry_after
        self._live: Dict[str, Reservation] = {}
        self._slots = 0
        self.counters: Dict[str, int] = {"reserved": 0, "refused": 0, "ledger_full": 0}

    def refresh(self) -> "Deferred[None]":
        """Commit running sessions' slots again (so they do not expire) and read the cluster's loads."""
        for reservation in list(self._live.values()):
            if reservation.state == COMMITTED:
                self.ledger.commit(reservation.engine_id, reservation.slot)
        return self.read_loads()

    def read_loads(self) -> "Deferred[None]":
        def read(loads: Dict[str, int]) -> None:
            for entry in self.roster.entries.values():
                entry.cluster = loads.get(entry.id, 0)

        def failed(failure: Failure) -> None:
            log.debug("engine pool: cluster loads unknown ({why})", why=failure.getErrorMessage())

        return self.ledger.loads().addCallbacks(read, failed)

    async def reserve(self, stream_key: str, only: Optional[str], exclude: FrozenSet[str]) -> IReservation:
        self._check_running()
        if not rank(self.roster.candidates(self.capacity()), exclude, only):
            await self.source.when_read()
            await self.roster.probe_now(only, exclude)
        await self.read_loads()
        tried: Set[str] = set()
        while True:
            self._check_running()
            ranked = rank(self.roster.candidates(self.capacity()), exclude | tried, only)
            if not ranked:
                raise self._no_engine(only, exclude, tried)
            entry = self.roster.entries[ranked[0].id]
            tried.add(entry.id)
            self._slots += 1
            slot = f"{stream_key}|{self.worker_id}|{self._slots}"
            entry.pending += 1
            try:
                ok = await self.ledger.reserve(entry.id, slot, self.capacity(), self.reservation_ttl)
            except Exception as e:
                entry.pending -= 1
                self.roster.maybe_forget(entry)
                raise EngineError(503, f"cannot count engine load: {e}", retry_after=self.retry_after,
                                  kind=ErrorKind.CLUSTER) from None
            if not ok:
                entry.pending -= 1
                entry.cluster = max(entry.cluster, self.capacity())
                self.counters["ledger_full"] += 1
                self.roster.maybe_forget(entry)
                continue
            entry.cluster += 1
            entry.last_chosen = float(self.clock.seconds())
            reservation = Reservation(self, entry, stream_key, slot)
            self._live[slot] = reservation
            self.counters["reserved"] += 1
            if self.roster.stopped:
                reservation.release("the proxy is stopping")
                self._check_running()
            log.debug("engine pool: {key} reserved on {id} (load {load})", key=stream_key, id=entry.id,
                      load=entry.load())
            return reservation

    def _check_running(self) -> None:
        if self.roster.stopped:
            raise EngineError(503, "the proxy is stopping", kind=ErrorKind.STOPPED)

    def _no_engine(self, only: Optional[str], exclude: FrozenSet[str], tried: Set[str]) -> EngineError:
        self.counters["refused"] += 1
        capacity = self.capacity()
        candidates = [attr.evolve(c, load=max(c.load, capacity)) if c.id in tried else c
                      for c in self.roster.candidates(capacity)]
        what = f"engine {only}" if only is not None else "no engine"
        why = why_none(candidates, exclude, only)
        return EngineError(503, f"{what} can take a stream now ({why})", retry_after=self.retry_after,
                           kind=ErrorKind.LIMIT)

    def commit(self, reservation: Reservation, entry: EngineEntry, session: EngineSession) -> None:
        if reservation.state != RESERVED:
            log.warn("engine pool: {r} cannot be committed", r=reservation)
            return
        reservation.state, reservation.session = COMMITTED, session
        entry.pending -= 1
        entry.sessions += 1
        self.ledger.commit(entry.id, reservation.slot)
        if self.events is not None:
            def answered(document: Any) -> None:
                if isinstance(document, dict) and isinstance(document.get("id"), (str, int)):
                    reservation.orchestrator_stream_id = str(document["id"])

            self.events.send(reservation.stream_key, "stream_started", stream_started_body(reservation, session),
                             answered)

    def release(self, reservation: Reservation, entry: EngineEntry, reason: str) -> None:
        if reservation.state == RELEASED:
            return
        was, reservation.state = reservation.state, RELEASED
        if was == COMMITTED:
            entry.sessions -= 1
        else:
            entry.pending -= 1
        entry.cluster = max(0, entry.cluster - 1)
        self._live.pop(reservation.slot, None)
        self.ledger.release(entry.id, reservation.slot)
        if was == COMMITTED and self.events is not None:
            self.events.send(reservation.stream_key, "stream_ended",
                             lambda: stream_ended_body(reservation, reason))
        self.roster.maybe_forget(entry)
