"""
Two real acetwist workers sharing a real Redis spread channels over two
engines without exceeding their capacity (issue 10, "How it is checked",
item 6): the load ledger in Redis counts every worker's reservations, so
requests arriving at the same moment on different workers cannot overfill
an engine.
"""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.internet import reactor
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from acetwist.sim.contents import numbered_contents
from acetwist.sim.testing import RunningEngine, start_simulator
from acetwist.testing import Player, ProcessWorker, wait_for
from tests.redis_server import RedisServer

CAPACITY = 2


class TwoWorkersTwoEnginesTests(TestCase):
    timeout = 90

    @inlineCallbacks
    def setUp(self) -> Any:
        self.redis = RedisServer.for_test(self)
        self.redis.age_data_set("acetwist")
        self.sim = yield start_simulator(reactor, engines=2, prebuffer=0.3, burst=1.0, bitrate=2_000_000,
                                         contents=4)
        self.addCleanup(self.sim.stop)
        self.players: List[Player] = []
        self.addCleanup(self._hang_up_all)
        engines = [option for url in self.sim.urls for option in ("--engine", url)]
        self.workers = [self.worker(f"w{i + 1}", *engines) for i in range(2)]
        yield DeferredList([w.start() for w in self.workers], fireOnOneErrback=True, consumeErrors=True)

    def worker(self, name: str, *extra: str) -> ProcessWorker:
        worker = ProcessWorker(reactor, name, "--redis", self.redis.url,
                               "--engine-max-streams", str(CAPACITY), "--lease", "1", "--grace", "1.5",
                               "--heartbeat", "0.5", "--first-byte-timeout", "10",
                               "--client-stall-timeout", "10",
                               *extra)
        self.addCleanup(worker.stop)
        return worker

    def _hang_up_all(self) -> Any:
        for player in self.players:
            player.hang_up()
        return DeferredList([p.done for p in self.players])

    def counters(self, engine: RunningEngine) -> Dict[str, Any]:
        return engine.engine.counters.snapshot()

    @inlineCallbacks
    def test_four_channels_at_once_on_two_workers_fill_two_engines_of_capacity_two_evenly(self) -> Any:
        """Four channels requested at the same moment, three on one worker and one on the other, make exactly two sessions on each engine of capacity 2, none superseded."""
        busy, quiet = self.workers
        contents = numbered_contents(4)
        placement = [busy, busy, busy, quiet]
        players = [Player(reactor, f"{worker.url}/ace/getstream?id={content.content_id}", limit=10**9)
                   for worker, content in zip(placement, contents)]
        self.players.extend(players)
        for player in players:  # in one reactor turn: the four requests are in flight together
            player.start()
        yield wait_for(reactor, lambda: all(p.received > 200_000 or p.done.called for p in players),
                       timeout=30)
        for player in players:
            self.assertFalse(player.done.called, f"{player.status}: {player.body!r} ({player.end_reason})")
            self.assertTrue(player.checker.aligned_at_start)
            self.assertEqual(player.checker.resyncs, 0)
            self.assertEqual(player.checker.cc_errors, 0, player.checker.cc_errors_by_pid)
        per_engine = [self.counters(e) for e in self.sim.engines]
        self.assertEqual([c["sessions_opened"] for c in per_engine], [CAPACITY, CAPACITY])
        self.assertEqual([c["sessions_live"] for c in per_engine], [CAPACITY, CAPACITY])
        self.assertEqual([c["sessions_superseded"] for c in per_engine], [0, 0])
        self.assertEqual([sum(c["json_calls"].values()) for c in per_engine], [CAPACITY, CAPACITY])
        # every content has its one session on one engine
        infohashes = sorted(ih for e in self.sim.engines for ih in e.engine.sessions)
        self.assertEqual(infohashes, sorted(c.infohash for c in contents))

        # the workers' /status say where each channel runs
        statuses = yield DeferredList([w.status() for w in self.workers], fireOnOneErrback=True,
                                      consumeErrors=True)
        engines_of = {}
        for _, status in statuses:
            for channel in status["channels"]:
                engines_of[channel["key"]] = channel["engine"]
        self.assertEqual(len(engines_of), 4)
        self.assertEqual(sorted(engines_of.values()), sorted(self.sim.urls * CAPACITY))
        # and, from the shared metadata, each worker's cluster view shows every channel's engine
        for worker in self.workers:
            view = yield self.cluster_view_with_engines(worker, len(engines_of))
            self.assertEqual({key: stream["metadata"]["engine"] for key, stream in view["streams"].items()},
                             engines_of)

    @inlineCallbacks
    def cluster_view_with_engines(self, worker: ProcessWorker, streams: int, timeout: float = 10) -> Any:
        """C{worker}'s cluster view once it lists C{streams} streams, each with its engine in its metadata."""
        deadline = reactor.seconds() + timeout
        while True:
            status = yield worker.status()
            view = status["cluster"]
            listed = view.get("streams", {})
            if len(listed) == streams and all((s.get("metadata") or {}).get("engine") for s in listed.values()):
                return view
            if reactor.seconds() > deadline:
                raise AssertionError(f"{worker.name}'s cluster view has no engine for every stream: {listed}")
            yield deferLater(reactor, 0.2, lambda: None)  # then ask again
