# -*- test-case-name: tests.test_engine_pool,tests.test_engine_pool_loopback -*-
"""
L{EngineRoster}: the engines the pool knows and their health. A new list
adds engines, updates known ones, and stops choosing those that left (kept
until nothing uses them, then forgotten and their clients closed). Health
comes from probes (every check interval, and at once when nothing is
eligible), from real calls that could not connect, and from the orchestrator.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, FrozenSet, List, Optional, Set

from twisted.internet.defer import CancelledError, Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from acetwist.deferreds import observe
from acetwist.engine_api import IEngine
from acetwist.engines.api import EngineRecord
from acetwist.engines.entry import EngineEntry
from acetwist.engines.health import HEALTHY, PROBE_PATH, UNKNOWN, Health
from acetwist.engines.http import CallFailed, JsonHTTP, Reply
from acetwist.engines.select import Candidate
from acetwist.redact import redact_credentials

log = Logger()

#: when no engine is eligible, an unhealthy one is probed again at a request if its last probe is this old (s)
RECHECK_AFTER = 1.0


class EngineRoster:
    """
    The engines the pool knows (see the module docstring).

    @ivar entries: every known engine by id (listed, or left but still in use).
    @ivar started: probing has begun (new engines are probed as they are listed).
    @ivar stopped: the pool is stopping: no more list updates or probe results.
    """

    def __init__(self, *, clock: IReactorTime, make_client: Callable[[str], IEngine], probes: JsonHTTP,
                 probe_timeout: float, trust_new_engines: bool) -> None:
        self.clock = clock
        self.make_client = make_client
        self.probes = probes
        self.probe_timeout = probe_timeout
        self.trust_new_engines = trust_new_engines
        self.entries: Dict[str, EngineEntry] = {}
        self.started = False
        self.stopped = False
        self._watchers: List[Callable[[str], None]] = []
        self._closing: Set[Deferred[None]] = set()
        self._forgotten_calls = [0, 0]

    # ------------------------------------------------------------ clients

    @property
    def json_calls(self) -> int:
        """getstream calls made through every engine client, ever."""
        return self._forgotten_calls[0] + sum(c.json_calls for c in self.clients())

    @property
    def stop_calls(self) -> int:
        """stop calls made through every engine client, ever."""
        return self._forgotten_calls[1] + sum(c.stop_calls for c in self.clients())

    def clients(self) -> List[IEngine]:
        return [c for e in self.entries.values() for c in [e.client, *e.old_clients]]

    def cancel_probes(self) -> None:
        for entry in self.entries.values():
            if entry.probe is not None:
                entry.probe.cancel()

    def close(self) -> "Deferred[Any]":
        """Close every client (and wait for those of forgotten engines still closing)."""
        closing = [observe(c.close()) for c in self.clients()] + list(self._closing)
        return DeferredList(closing, consumeErrors=True)

    # ------------------------------------------------------------ the list

    def apply(self, records: List[EngineRecord]) -> None:
        """A new engine list: add engines, update known ones, and stop choosing those that left."""
        if self.stopped:
            return
        listed: Set[str] = set()
        for order, record in enumerate(records):
            listed.add(record.id)
            entry = self.entries.get(record.id)
            if entry is None:
                entry = self.entries[record.id] = EngineEntry(record, self.make_client(record.url), order)
                if self.trust_new_engines:
                    entry.health.state = HEALTHY
                log.info("engine pool: engine {id} at {url} added", id=record.id, url=redact_credentials(record.url))
                if self.started:
                    self.probe(entry)
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
            if entry.health.state == UNKNOWN and self.started:
                self.probe(entry)
            if was_healthy and not entry.healthy:
                self._unhealthy(entry, "it moved to a new address" if moved
                                else f"the orchestrator says {record.orchestrator_health}")
        for entry in list(self.entries.values()):
            if entry.id not in listed and entry.listed:
                entry.listed = False
                log.info("engine pool: engine {id} left the list; no new channels on it ({n} keep it)",
                         id=entry.id, n=entry.sessions)
                self.maybe_forget(entry)

    def maybe_forget(self, entry: EngineEntry) -> None:
        """Drop an engine that left the list once nothing uses it (closing its clients)."""
        if entry.listed or entry.in_use or self.entries.get(entry.id) is not entry:
            return
        del self.entries[entry.id]
        if entry.probe is not None:
            entry.probe.cancel()
        for client in (entry.client, *entry.old_clients):
            self._forgotten_calls[0] += client.json_calls
            self._forgotten_calls[1] += client.stop_calls
            self._track_close(client)

    def _track_close(self, client: IEngine) -> None:
        closed = observe(client.close())
        self._closing.add(closed)

        def forget(result: None) -> None:
            self._closing.discard(closed)

        closed.addCallback(forget)

    def candidates(self, capacity: int) -> List[Candidate]:
        """Every known engine as selection sees it."""
        return [
            Candidate(id=e.id, healthy=e.healthy, listed=e.listed, draining=e.record.draining,
                      forwarded=e.record.forwarded, load=e.load(), capacity=capacity,
                      last_chosen=e.last_chosen, order=e.order)
            for e in self.entries.values()
        ]

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
        entry = self.entries.get(engine_id)
        return entry is not None and entry.healthy

    def connection_failed(self, engine_id: str) -> None:
        entry = self.entries.get(engine_id)
        if entry is not None and entry.health.connection_failed("a call could not connect"):
            self._unhealthy(entry, "a call could not connect")

    def _unhealthy(self, entry: EngineEntry, why: str) -> None:
        log.warn("engine pool: engine {id} is unhealthy ({why}); {n} channels on it here",
                 id=entry.id, why=why, n=entry.sessions)
        for callback in list(self._watchers):
            try:
                callback(entry.id)
            except Exception:
                log.failure("engine pool: an unhealthy-engine callback failed")

    def probe_all(self) -> None:
        for entry in list(self.entries.values()):
            self.probe(entry)

    def probe(self, entry: EngineEntry) -> "Deferred[None]":
        """Probe C{entry} (unless a probe is already going); fires when it is done."""
        if entry.probe is None and not self.stopped:
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
        return observe(entry.probe) if entry.probe is not None else succeed(None)

    def _probed(self, reply: Reply, entry: EngineEntry) -> None:
        now = float(self.clock.seconds())
        if reply.code != 200:
            self._probe_result(entry, entry.health.probe_failed(now, f"HTTP {reply.code}"))
            return
        was = entry.health.state
        if entry.health.probe_ok(now) and was != UNKNOWN:
            log.info("engine pool: engine {id} is healthy again", id=entry.id)

    def _probe_failed(self, failure: Failure, entry: EngineEntry) -> None:
        failure.trap(CallFailed)
        if self.stopped:
            return
        assert isinstance(failure.value, CallFailed)
        self._probe_result(entry, entry.health.probe_failed(float(self.clock.seconds()), failure.value.why))

    def _probe_result(self, entry: EngineEntry, changed: bool) -> None:
        if changed and entry.record.orchestrator_health == HEALTHY:
            self._unhealthy(entry, entry.health.last_error or "probes failed")

    async def probe_now(self, only: Optional[str], exclude: FrozenSet[str]) -> None:
        """
        Nothing is eligible: probe at once (and wait for, within the probe
        deadline) every engine that could take the stream but for its
        health: new engines not probed yet, and unhealthy ones not probed in
        the last L{RECHECK_AFTER} seconds. So an engine back from a restart
        takes streams again at the first request, not at the next probe round.
        """
        now = float(self.clock.seconds())
        waiting = [self.probe(e) for e in self.entries.values()
                   if not e.health.healthy and e.listed and not e.record.draining and e.id not in exclude
                   and (only is None or e.id == only)
                   and (e.probe is not None or e.health.last_probe is None
                        or now - e.health.last_probe >= RECHECK_AFTER)]
        if waiting:
            await DeferredList(waiting, consumeErrors=True)


