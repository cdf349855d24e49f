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
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Set
from urllib.parse import urlsplit

import attr
from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from acetwist.engine_api import EngineSession, IEngine
from acetwist.engines.api import EngineRecord, IEnginePool, ILoadLedger, IReservation
from acetwist.engines.events import EventSender
from acetwist.engines.health import HEALTHY, PROBE_PATH, UNKNOWN, Health
from acetwist.engines.http import CallFailed, JsonHTTP, Reply
from acetwist.engines.select import Candidate, load, rank, why_none
from acetwist.errors import EngineError, ErrorKind
from acetwist.redact import redact_credentials

log = Logger()

RESERVED, COMMITTED, RELEASED = "reserved", "committed", "released"

#: when no engine is eligible, an unhealthy one is probed again at a request if its last probe is this old (s)
RECHECK_AFTER = 1.0


@attr.s(auto_attribs=True, eq=False)
class _Engine:
    """One engine's state in the pool."""

    record: EngineRecord
    client: IEngine
    order: int
    health: Health = attr.Factory(Health)
    listed: bool = True
    sessions: int = 0
    pending: int = 0
    cluster: int = 0
    last_chosen: float = -math.inf
    probe: Optional[Deferred[None]] = None
    old_clients: List[IEngine] = attr.Factory(list)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def healthy(self) -> bool:
        return self.health.healthy and self.record.orchestrator_health == HEALTHY

    @property
    def in_use(self) -> bool:
        return self.sessions > 0 or self.pending > 0

    def load(self) -> int:
        return load(self.sessions, self.cluster, self.record.stream_count, self.pending)


@implementer(IReservation)
class Reservation:
    """
    A slot on one engine for one stream, taken by L{EnginePool.reserve}.

    @ivar stream_key: the stream it was taken for (C{id:<hex>} or C{infohash:<hex>}).
    @ivar slot: its unique name in the ledger.
    @ivar worker_id: the worker that holds it.
    @ivar state: C{reserved}, C{committed} or C{released}.
    @ivar session: the engine session it was committed with.
    """

    def __init__(self, pool: "EnginePool", entry: _Engine, stream_key: str, slot: str) -> None:
        self._pool = pool
        self._entry = entry
        self.engine_id: str = entry.id
        self.engine: IEngine = entry.client
        self.engine_url: str = entry.record.url
        self.stream_key = stream_key
        self.slot = slot
        self.worker_id = pool.worker_id
        self.state = RESERVED
        self.session: Optional[EngineSession] = None
        #: the orchestrator's id of the stream (from its stream_started answer), if it gave one
        self.orchestrator_stream_id: Optional[str] = None

    def commit(self, session: EngineSession) -> None:
        self._pool._commit(self, self._entry, session)

    def release(self, reason: str) -> None:
        self._pool._release(self, self._entry, reason)

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
        self.make_client = make_client
        self.probes = probes
        self.worker_id = worker_id
        self.capacity_override = capacity
        self.check_interval = check_interval
        self.probe_timeout = min(probe_timeout, check_interval)
        self.events = events
        self.reservation_ttl = reservation_ttl
        self.refresh_interval = refresh_interval
        self.retry_after = retry_after
        self.trust_new_engines = trust_new_engines
        self.on_stop = on_stop
        self._engines: Dict[str, _Engine] = {}
        self._live: Dict[str, Reservation] = {}
        self._watchers: List[Callable[[str], None]] = []
        self._closing: Set[Deferred[None]] = set()
        self._loops: List[LoopingCall] = []
        self._slots = 0
        self._forgotten_calls = [0, 0]
        self._started = False
        self._stopped = False
        self._stop_d: Optional[Deferred[None]] = None
        self.counters: Dict[str, int] = {"reserved": 0, "refused": 0, "ledger_full": 0}

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
        return self._forgotten_calls[0] + sum(c.json_calls for c in self._clients())

    @property
    def stop_calls(self) -> int:
        """stop calls made through every engine client, ever."""
        return self._forgotten_calls[1] + sum(c.stop_calls for c in self._clients())

    def _clients(self) -> List[IEngine]:
        return [c for e in self._engines.values() for c in [e.client, *e.old_clients]]

    def engine(self, engine_id: str) -> Optional[IEngine]:
        """The client of engine C{engine_id}, if the pool has it."""
        entry = self._engines.get(engine_id)
        return entry.client if entry is not None else None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self._started or self._stopped:
            return
        self._started = True
        self.source.start(self._apply)
        # New engines are probed as they are listed; then every engine every check interval.
        for interval, call in ((self.check_interval, self._probe_all), (self.refresh_interval, self._refresh)):
            loop = LoopingCall(call)
            loop.clock = self.clock
            loop.start(interval, now=False)
            self._loops.append(loop)

    def stop(self) -> "Deferred[None]":
        if self._stop_d is None:
            self._stop_d = Deferred.fromCoroutine(self._stop())
        return _observe(self._stop_d)

    async def _stop(self) -> None:
        self._stopped = True
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops.clear()
        self.source.stop()
        for entry in self._engines.values():
            if entry.probe is not None:
                entry.probe.cancel()
        if self.events is not None:
            await self.events.flush(5.0)
        closing = [_observe(c.close()) for c in self._clients()] + list(self._closing)
        await DeferredList(closing, consumeErrors=True)
        if self.on_stop is not None:
            try:
                await self.on_stop()
            except Exception:
                log.failure("engine pool: closing its HTTP connections")

    # ------------------------------------------------------------ the list

    def _apply(self, records: List[EngineRecord]) -> None:
        """A new engine list: add engines, update known ones, and stop choosing those that left."""
        if self._stopped:
            return
        listed: Set[str] = set()
        for order, record in enumerate(records):
            listed.add(record.id)
            entry = self._engines.get(record.id)
            if entry is None:
                entry = self._engines[record.id] = _Engine(record, self.make_client(record.url), order)
                if self.trust_new_engines:
                    entry.health.state = HEALTHY
                log.info("engine pool: engine {id} at {url} added", id=record.id, url=redact_credentials(record.url))
                if self._started:
                    self._probe(entry)
                continue
            was_healthy = entry.healthy
            moved = record.url != entry.record.url
            if moved:
                log.info("engine pool: engine {id} moved to {url}", id=record.id, url=redact_credentials(record.url))
                entry.old_clients.append(entry.client)
                entry.client = self.make_client(record.url)
                entry.health = Health()
                if self.trust_new_engines:
                    entry.health.state = HEALTHY
                if entry.probe is not None:
                    entry.probe.cancel()
            if not entry.listed:
                log.info("engine pool: engine {id} is listed again", id=record.id)
            entry.record, entry.order, entry.listed = record, order, True
            if entry.health.state == UNKNOWN and self._started:
                self._probe(entry)
            if was_healthy and not entry.healthy:
                self._unhealthy(entry, "it moved to a new address" if moved
                                else f"the orchestrator says {record.orchestrator_health}")
        for entry in list(self._engines.values()):
            if entry.id not in listed and entry.listed:
                entry.listed = False
                log.info("engine pool: engine {id} left the list; no new channels on it ({n} keep it)",
                         id=entry.id, n=entry.sessions)
                self._maybe_forget(entry)

    def _maybe_forget(self, entry: _Engine) -> None:
        """Drop an engine that left the list once nothing uses it (closing its clients)."""
        if entry.listed or entry.in_use or self._engines.get(entry.id) is not entry:
            return
        del self._engines[entry.id]
        if entry.probe is not None:
            entry.probe.cancel()
        for client in (entry.client, *entry.old_clients):
            self._forgotten_calls[0] += client.json_calls
            self._forgotten_calls[1] += client.stop_calls
            self._track_close(client)

    def _track_close(self, client: IEngine) -> None:
        closed = _observe(client.close())
        self._closing.add(closed)

        def forget(result: None) -> None:
            self._closing.discard(closed)

        closed.addCallback(forget)

    # ------------------------------------------------------------ health

    def on_unhealthy(self, callback: Callable[[str], None]) -> Callable[[], None]:
        """Call C{callback(engine_id)} whenever an engine becomes unhealthy; returns an unsubscribe function."""
        self._watchers.append(callback)

        def unsubscribe() -> None:
            if callback in self._watchers:
                self._watchers.remove(callback)

        return unsubscribe

    def healthy(self, engine_id: str) -> bool:
        """Engine C{engine_id} is known and healthy (probes and the orchestrator agree)."""
        entry = self._engines.get(engine_id)
        return entry is not None and entry.healthy

    def connection_failed(self, engine_id: str) -> None:
        entry = self._engines.get(engine_id)
        if entry is not None and entry.health.connection_failed("a call could not connect"):
            self._unhealthy(entry, "a call could not connect")

    def _unhealthy(self, entry: _Engine, why: str) -> None:
        log.warn("engine pool: engine {id} is unhealthy ({why}); {n} channels on it here",
                 id=entry.id, why=why, n=entry.sessions)
        for callback in list(self._watchers):
            try:
                callback(entry.id)
            except Exception:
                log.failure("engine pool: an unhealthy-engine callback failed")

    def _probe_all(self) -> None:
        for entry in list(self._engines.values()):
            self._probe(entry)

    def _probe(self, entry: _Engine) -> "Deferred[None]":
        """Probe C{entry} (unless a probe is already going); fires when it is done."""
        if entry.probe is None and not self._stopped:
            d = entry.probe = self.probes.get(entry.record.url + PROBE_PATH, self.probe_timeout).addCallbacks(
                self._probed, self._probe_failed, callbackArgs=(entry,), errbackArgs=(entry,))

            def done(result: Any) -> None:
                if entry.probe is d:
                    entry.probe = None
                if isinstance(result, Failure) and not result.check(CancelledError):
                    log.failure("engine pool: probing {id}", result, id=entry.id)

            d.addBoth(done)
            if entry.probe is None:  # it finished at once
                return succeed(None)
        return _observe(entry.probe) if entry.probe is not None else succeed(None)

    def _probed(self, reply: Reply, entry: _Engine) -> None:
        now = float(self.clock.seconds())
        if reply.code != 200:
            self._probe_result(entry, entry.health.probe_failed(now, f"HTTP {reply.code}"))
            return
        was = entry.health.state
        if entry.health.probe_ok(now) and was != UNKNOWN:
            log.info("engine pool: engine {id} is healthy again", id=entry.id)

    def _probe_failed(self, failure: Failure, entry: _Engine) -> None:
        failure.trap(CallFailed)
        if self._stopped:
            return
        assert isinstance(failure.value, CallFailed)
        self._probe_result(entry, entry.health.probe_failed(float(self.clock.seconds()), failure.value.why))

    def _probe_result(self, entry: _Engine, changed: bool) -> None:
        if changed and entry.record.orchestrator_health == HEALTHY:
            self._unhealthy(entry, entry.health.last_error or "probes failed")

    # ------------------------------------------------------------ load

    def _candidates(self) -> List[Candidate]:
        capacity = self.capacity
        return [
            Candidate(id=e.id, healthy=e.healthy, listed=e.listed, draining=e.record.draining,
                      forwarded=e.record.forwarded, load=e.load(), capacity=capacity,
                      last_chosen=e.last_chosen, order=e.order)
            for e in self._engines.values()
        ]

    def _refresh(self) -> "Deferred[None]":
        """Commit running sessions' slots again (so they do not expire) and read the cluster's loads."""
        for reservation in list(self._live.values()):
            if reservation.state == COMMITTED:
                self.ledger.commit(reservation.engine_id, reservation.slot)
        return self._read_loads()

    def _read_loads(self) -> "Deferred[None]":
        def read(loads: Dict[str, int]) -> None:
            for entry in self._engines.values():
                entry.cluster = loads.get(entry.id, 0)

        def failed(failure: Failure) -> None:
            log.debug("engine pool: cluster loads unknown ({why})", why=failure.getErrorMessage())

        return self.ledger.loads().addCallbacks(read, failed)

    def eligible(self, exclude: FrozenSet[str] = frozenset()) -> bool:
        return bool(rank(self._candidates(), exclude))

    def can_fail_over(self, engine_id: str) -> bool:
        return any(known != engine_id for known in self._engines)

    # ------------------------------------------------------------ reservations

    def reserve(self, stream_key: str, only: Optional[str] = None,
                exclude: FrozenSet[str] = frozenset()) -> "Deferred[IReservation]":
        return Deferred.fromCoroutine(self._reserve(stream_key, only, exclude))

    async def _reserve(self, stream_key: str, only: Optional[str], exclude: FrozenSet[str]) -> IReservation:
        self._check_running()
        if not rank(self._candidates(), exclude, only):
            await self.source.when_read()
            await self._probe_now(only, exclude)
        await self._read_loads()
        tried: Set[str] = set()
        while True:
            self._check_running()
            ranked = rank(self._candidates(), exclude | tried, only)
            if not ranked:
                raise self._no_engine(only, exclude, tried)
            entry = self._engines[ranked[0].id]
            tried.add(entry.id)
            self._slots += 1
            slot = f"{stream_key}|{self.worker_id}|{self._slots}"
            entry.pending += 1
            try:
                ok = await self.ledger.reserve(entry.id, slot, self.capacity, self.reservation_ttl)
            except Exception as e:
                entry.pending -= 1
                self._maybe_forget(entry)
                raise EngineError(503, f"cannot count engine load: {e}", retry_after=self.retry_after,
                                  kind=ErrorKind.CLUSTER) from None
            if not ok:
                entry.pending -= 1
                entry.cluster = max(entry.cluster, self.capacity)
                self.counters["ledger_full"] += 1
                self._maybe_forget(entry)
                continue
            entry.cluster += 1
            entry.last_chosen = float(self.clock.seconds())
            reservation = Reservation(self, entry, stream_key, slot)
            self._live[slot] = reservation
            self.counters["reserved"] += 1
            if self._stopped:
                reservation.release("the proxy is stopping")
                self._check_running()
            log.debug("engine pool: {key} reserved on {id} (load {load})", key=stream_key, id=entry.id,
                      load=entry.load())
            return reservation

    def _check_running(self) -> None:
        if self._stopped:
            raise EngineError(503, "the proxy is stopping", kind=ErrorKind.STOPPED)

    async def _probe_now(self, only: Optional[str], exclude: FrozenSet[str]) -> None:
        """
        Nothing is eligible: probe at once (and wait for, within the probe
        deadline) every engine that could take the stream but for its
        health: new engines not probed yet, and unhealthy ones not probed in
        the last L{RECHECK_AFTER} seconds. So an engine back from a restart
        takes streams again at the first request, not at the next probe round.
        """
        now = float(self.clock.seconds())
        waiting = [self._probe(e) for e in self._engines.values()
                   if not e.health.healthy and e.listed and not e.record.draining and e.id not in exclude
                   and (only is None or e.id == only)
                   and (e.probe is not None or e.health.last_probe is None
                        or now - e.health.last_probe >= RECHECK_AFTER)]
        if waiting:
            await DeferredList(waiting, consumeErrors=True)

    def _no_engine(self, only: Optional[str], exclude: FrozenSet[str], tried: Set[str]) -> EngineError:
        self.counters["refused"] += 1
        candidates = [attr.evolve(c, load=max(c.load, self.capacity)) if c.id in tried else c
                      for c in self._candidates()]
        what = f"engine {only}" if only is not None else "no engine"
        why = why_none(candidates, exclude, only)
        return EngineError(503, f"{what} can take a stream now ({why})", retry_after=self.retry_after,
                           kind=ErrorKind.LIMIT)

    def _commit(self, reservation: Reservation, entry: _Engine, session: EngineSession) -> None:
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

    def _release(self, reservation: Reservation, entry: _Engine, reason: str) -> None:
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
        self._maybe_forget(entry)

    # ------------------------------------------------------------ status

    def status(self) -> List[Dict[str, Any]]:
        capacity = self.capacity
        out = []
        for entry in sorted(self._engines.values(), key=lambda e: (not e.listed, e.order)):
            record = entry.record
            out.append({
                "id": entry.id,
                "url": record.url,
                "name": record.name,
                "healthy": entry.healthy,
                "probe": entry.health.state,
                "orchestrator_health": record.orchestrator_health,
                "forwarded": record.forwarded,
                "draining": record.draining,
                "listed": entry.listed,
                "load": entry.load(),
                "capacity": capacity,
                "sessions": entry.sessions,
                "reservations": entry.pending,
                "cluster_load": entry.cluster,
                "stream_count": record.stream_count,
                "last_error": entry.health.last_error,
                "last_probe": entry.health.last_probe,
                "last_chosen": entry.last_chosen if entry.last_chosen > -math.inf else None,
            })
        return out

    def source_status(self) -> Dict[str, Any]:
        """Where the list comes from and whether it is current (C{stale} while the orchestrator cannot be read)."""
        out = dict(self.source.status())
        out.update(capacity=self.capacity, eligible=len(rank(self._candidates())), **self.counters)
        if self.events is not None:
            out["events"] = dict(self.events.counters, queued=self.events.queued)
        return out


def _observe(d: "Deferred[Any]") -> "Deferred[None]":
    """A new Deferred that fires (with None) when C{d} has fired, leaving C{d}'s result alone."""
    out: Deferred[None] = Deferred()

    def fire(result: Any) -> Any:
        out.callback(None)
        return result

    d.addBoth(fire)
    return out
