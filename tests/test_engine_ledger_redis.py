"""
The Redis engine ledger on a real redis-server: the shared contract
(tests.test_engine_ledger), two workers racing for capacity, and the keys
it writes.
"""

from __future__ import annotations

import time
from typing import Any, List

from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.test_coord_contract import RedisHarness
from tests.test_engine_ledger import LedgerContract


class RedisLedgerTests(RedisHarness, LedgerContract, TestCase):
    committed_ttl = 2.0

    def setUp(self) -> None:
        RedisHarness.setUp(self)
        self.coordinators: List[Any] = []
        self.next = 0

    def make(self) -> Any:
        # A ledger on its own coordinator (its own connections), like another worker. The contract calls
        # make() synchronously, so the coordinator starts in the background: its first command waits for it.
        from acetwist.coord.redis import RedisCoordinator

        self.next += 1
        coordinator = RedisCoordinator(self.settings(), f"w{self.next}", reactor)
        self.addCleanup(coordinator.stop)
        coordinator.start()
        return coordinator.engine_ledger(committed_ttl=self.committed_ttl)

    def expire(self, seconds: float) -> "Deferred[None]":
        # Redis expires by its own clock: wait the time out, plus a margin for the round trips.
        return deferLater(reactor, seconds + 0.05, lambda: None)

    @inlineCallbacks
    def test_two_workers_racing_never_pass_capacity(self) -> Any:
        """Ten reservations from two workers at the same moment on an engine of capacity 2: exactly two granted."""
        a, b = self.make(), self.make()
        calls = [ledger.reserve("e", f"{name}{n}", 2, 30.0) for n in range(5) for name, ledger in (("a", a), ("b", b))]
        results = yield DeferredList(calls, fireOnOneErrback=True)
        granted = [ok for _, ok in results if ok]
        self.assertEqual(len(granted), 2)
        self.assertEqual((yield a.loads()), {"e": 2})
        self.assertEqual(self.server.command("ZCARD", "acetwist-test:engine:e:slots"), 2)

    @inlineCallbacks
    def test_keys_live_under_the_prefix_with_ttls(self) -> Any:
        """The ledger writes only P:engines and P:engine:<id>:slots, each with a TTL; no KEYS command is used."""
        ledger = self.make()
        yield ledger.reserve("http://127.0.0.1:6878", "id:ab|w|1", 0, 5.0)
        yield ledger.commit("http://127.0.0.1:6878", "id:ab|w|1")
        yield ledger.loads()
        keys = sorted(self.server.scan("acetwist-test:engine*"))
        self.assertEqual(keys, [b"acetwist-test:engine:http://127.0.0.1:6878:slots", b"acetwist-test:engines"])
        for key in keys:
            self.assertGreater(self.server.command("PTTL", key), 0)
        stats = self.server.command("INFO", "commandstats")
        self.assertNotIn(b"cmdstat_keys:", stats)

    @inlineCallbacks
    def test_everything_expires_after_a_crash(self) -> Any:
        """With nobody refreshing, every slot and the index disappear by themselves."""
        ledger = self.make()
        yield ledger.reserve("e", "s", 0, 0.2)
        yield ledger.commit("e", "s")
        deadline = time.monotonic() + 5.0
        while self.server.scan("acetwist-test:engine*"):
            self.assertLess(time.monotonic(), deadline, "keys still there")
            yield deferLater(reactor, 0.05, lambda: None)

    @inlineCallbacks
    def test_unavailable_redis_fails_reserve_not_release(self) -> Any:
        """With Redis down, reserve and loads fail (the pool answers 503) while commit and release just give up."""
        from acetwist.coord.base import CoordinatorUnavailable

        ledger = self.make()
        yield ledger.loads()
        self.server.stop()
        yield self.failUnlessFailure(ledger.reserve("e", "s", 1, 30.0), CoordinatorUnavailable)
        yield self.failUnlessFailure(ledger.loads(), CoordinatorUnavailable)
        self.assertIsNone((yield ledger.commit("e", "s")))
        self.assertIsNone((yield ledger.release("e", "s")))
