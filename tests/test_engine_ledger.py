"""
The engine load ledger's contract (ILoadLedger), run against the memory
ledger here on a task.Clock and against the Redis ledger in
tests.test_engine_ledger_redis on a real redis-server.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from acetwist.coord.memory import MemoryCluster, MemoryCoordinator
from acetwist.engines.api import ILoadLedger
from acetwist.engines.ledger import MemoryLedger, SlotTable


class LedgerContract:
    """
    Behaviour every ledger has. A harness gives C{make()} (a ledger; two made
    in one test share the cluster, like two workers), C{expire(seconds)}
    (let that much time pass; C{Deferred}) and C{committed_ttl}.
    """

    committed_ttl: float
    make: Callable[[], Any]
    expire: Callable[[float], "Deferred[None]"]

    def test_provides_the_interface(self) -> None:
        """The ledger provides ILoadLedger."""
        verifyObject(ILoadLedger, self.make())

    @inlineCallbacks
    def test_reserves_only_under_capacity(self) -> Any:
        """Slots are granted up to the capacity, then refused; capacity 0 has no limit."""
        ledger = self.make()
        got = []
        for n in range(3):
            got.append((yield ledger.reserve("e1", f"s{n}", 2, 30.0)))
        self.assertEqual(got, [True, True, False])
        for n in range(5):
            self.assertTrue((yield ledger.reserve("e2", f"s{n}", 0, 30.0)))
        self.assertEqual((yield ledger.loads()), {"e1": 2, "e2": 5})

    @inlineCallbacks
    def test_same_slot_twice_is_one_slot(self) -> Any:
        """Reserving a slot already held refreshes it and does not count it twice (even at capacity)."""
        ledger = self.make()
        self.assertTrue((yield ledger.reserve("e", "s", 1, 30.0)))
        self.assertTrue((yield ledger.reserve("e", "s", 1, 30.0)))
        self.assertEqual((yield ledger.loads()), {"e": 1})

    @inlineCallbacks
    def test_release_frees_the_slot(self) -> Any:
        """A released slot no longer counts and its place can be taken; releasing twice is harmless."""
        ledger = self.make()
        yield ledger.reserve("e", "a", 1, 30.0)
        self.assertFalse((yield ledger.reserve("e", "b", 1, 30.0)))
        yield ledger.release("e", "a")
        yield ledger.release("e", "a")
        yield ledger.release("other", "x")
        self.assertTrue((yield ledger.reserve("e", "b", 1, 30.0)))
        self.assertEqual((yield ledger.loads()), {"e": 1})

    @inlineCallbacks
    def test_workers_share_the_count(self) -> Any:
        """Two ledgers on one cluster see each other's slots and together never pass the capacity."""
        a, b = self.make(), self.make()
        self.assertTrue((yield a.reserve("e", "a1", 2, 30.0)))
        self.assertTrue((yield b.reserve("e", "b1", 2, 30.0)))
        self.assertFalse((yield a.reserve("e", "a2", 2, 30.0)))
        self.assertFalse((yield b.reserve("e", "b2", 2, 30.0)))
        self.assertEqual((yield b.loads()), {"e": 2})
        yield a.commit("e", "a1")
        yield b.release("e", "b1")
        self.assertEqual((yield a.loads()), {"e": 1})

    @inlineCallbacks
    def test_an_expired_reservation_frees_its_slot(self) -> Any:
        """A reservation neither committed nor released frees its slot after its ttl (a crashed worker's)."""
        crashed, alive = self.make(), self.make()
        self.assertTrue((yield crashed.reserve("e", "lost", 1, 0.3)))
        self.assertFalse((yield alive.reserve("e", "mine", 1, 30.0)))
        yield self.expire(0.3)
        self.assertTrue((yield alive.reserve("e", "mine", 1, 30.0)))
        self.assertEqual((yield alive.loads()), {"e": 1})

    @inlineCallbacks
    def test_commit_outlives_the_reservation_ttl_and_refreshes(self) -> Any:
        """A committed slot lives committed_ttl from its last commit, not the reservation's ttl; a new commit extends it."""
        ledger = self.make()
        yield ledger.reserve("e", "s", 1, 0.1)
        yield ledger.commit("e", "s")
        yield self.expire(self.committed_ttl * 0.6)
        self.assertEqual((yield ledger.loads()), {"e": 1})
        yield ledger.commit("e", "s")
        yield self.expire(self.committed_ttl * 0.6)
        self.assertEqual((yield ledger.loads()), {"e": 1})
        yield self.expire(self.committed_ttl * 0.5)
        self.assertEqual((yield ledger.loads()), {})

    @inlineCallbacks
    def test_commit_writes_back_a_lost_slot(self) -> Any:
        """Committing a slot that had expired (or was lost) counts it again: the session is running."""
        ledger = self.make()
        yield ledger.reserve("e", "s", 1, 0.1)
        yield self.expire(0.1)
        self.assertEqual((yield ledger.loads()), {})
        yield ledger.commit("e", "s")
        self.assertEqual((yield ledger.loads()), {"e": 1})


class MemoryLedgerTests(LedgerContract, TestCase):
    committed_ttl = 3.0

    def setUp(self) -> None:
        self.clock = Clock()
        self.table = SlotTable(self.clock)

    def make(self) -> MemoryLedger:
        return MemoryLedger(self.clock, self.table, committed_ttl=self.committed_ttl)

    def expire(self, seconds: float) -> "Deferred[None]":
        self.clock.advance(seconds)
        return succeed(None)

    @inlineCallbacks
    def test_coordinators_of_one_cluster_share_a_ledger(self) -> Any:
        """MemoryCoordinators on one MemoryCluster give ledgers that count together, like workers on one Redis."""
        cluster = MemoryCluster(self.clock)
        a = MemoryCoordinator("a", self.clock, cluster).engine_ledger()
        b = MemoryCoordinator("b", self.clock, cluster).engine_ledger()
        yield a.reserve("e", "1", 1, 30.0)
        self.assertFalse((yield b.reserve("e", "2", 1, 30.0)))
        self.assertEqual((yield MemoryCoordinator("c", self.clock).engine_ledger().loads()), {})
