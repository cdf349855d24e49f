"""
What only the in-memory coordinator has to show: exact epochs, delivery
timing on the injected clock, and bounded memory.
"""

from __future__ import annotations

from typing import Any, List, Tuple

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from acetwist.coord.memory import MemoryCluster, MemoryCoordinator
from acetwist.coord.settings import CoordSettings
from acetwist.interfaces import Block
from tests.test_coord_contract import TIMINGS, block, record


class MemoryCoordinatorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.coordinator = MemoryCoordinator(worker_id="solo", clock=self.clock, settings=CoordSettings(**TIMINGS))
        self.coordinator.start()
        self.addCleanup(self.coordinator.stop)

    def test_single_process_claims_always_succeed_when_unowned(self) -> None:
        """Alone, a worker wins every claim of an unowned stream, with epochs 1, 2, 3."""
        c = self.coordinator
        epochs = []
        for _ in range(3):
            lease = self.successResultOf(c.claim("s"))
            epochs.append(lease.epoch)
            self.successResultOf(c.release("s", lease))
        self.assertEqual(epochs, [1, 2, 3])
        self.assertEqual(self.successResultOf(c.claim("other")).epoch, 1)

    def test_default_settings_and_private_cluster(self) -> None:
        """Without a shared cluster, coordinators do not see each other; the default lease is 5 s."""
        a = MemoryCoordinator(worker_id="a", clock=self.clock)
        b = MemoryCoordinator(worker_id="b", clock=self.clock)
        self.assertEqual(a.settings.lease_ms, 5000)
        self.assertIsNotNone(self.successResultOf(a.claim("s")))
        self.assertIsNotNone(self.successResultOf(b.claim("s")))

    def test_backlog_arrives_from_the_clock_and_live_blocks_at_once(self) -> None:
        """The backlog is delivered on the next clock turn (never inside follow()), later blocks as they are published."""
        c = self.coordinator
        lease = self.successResultOf(c.claim("s"))
        c.publish("s", lease, block(0, True))
        got: List[Tuple[Block, int]] = []
        follower = c.follow("s", lambda b, e: got.append((b, e)))
        self.assertEqual(got, [])
        self.clock.advance(0)
        self.assertEqual([b.seq for b, _ in got], [0])
        c.publish("s", lease, block(1))
        self.assertEqual([b.seq for b, _ in got], [0, 1])
        self.successResultOf(follower.stop())
        c.publish("s", lease, block(2))
        self.assertEqual(len(got), 2)
        self.assertEqual(c.stats()["followers"], 0)

    def test_a_failing_consumer_does_not_break_publishing(self) -> None:
        """An exception in one follower's callback is logged; the publisher and other followers carry on."""
        c = self.coordinator
        lease = self.successResultOf(c.claim("s"))
        good: List[int] = []

        def bad(b: Block, e: int) -> None:
            raise RuntimeError("boom")

        c.follow("s", bad)
        c.follow("s", lambda b, e: good.append(b.seq))
        self.clock.advance(0)
        c.publish("s", lease, block(0, True))
        c.publish("s", lease, block(1))
        self.assertEqual(good, [0, 1])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_memory_stays_bounded(self) -> None:
        """The mirror keeps at most mirror_maxlen blocks, and expired state is forgotten, not accumulated."""
        c = self.coordinator
        cluster = c.cluster
        lease = self.successResultOf(c.claim("s"))
        for seq in range(500):
            c.publish("s", lease, block(seq, seq % 10 == 0, size=188))
        self.assertEqual(len(cluster.mirrors["s"].entries), TIMINGS["mirror_maxlen"])
        for n in range(100):
            c.client_joined(record(f"c{n}", "solo", stream_key=f"s{n}"))
            c.update_stream(f"s{n}", {"state": "live"})
        other = MemoryCoordinator("ghost", self.clock, cluster, CoordSettings(**TIMINGS))
        other.start()
        other._crash()
        self.clock.pump([0.1] * 50)
        self.assertEqual((cluster.leases, cluster.metadata, cluster.clients, cluster.mirrors),
                         ({}, {}, {}, {}))
        self.assertEqual(list(cluster.workers), ["solo"])
        self.assertEqual(list(cluster.streams), [])

    def test_stats(self) -> None:
        """stats() counts published and fenced blocks."""
        c = self.coordinator
        lease = self.successResultOf(c.claim("s"))
        c.publish("s", lease, block(0, True))
        c.publish("s", type(lease)("solo", lease.epoch + 1), block(1))
        stats: Any = c.stats()
        self.assertEqual((stats["published"], stats["publish_fenced"], stats["in_flight"]), (1, 1, 0))

    def test_shared_cluster_for_multi_worker_tests(self) -> None:
        """Coordinators sharing a MemoryCluster on one clock behave like workers sharing Redis."""
        cluster = MemoryCluster(self.clock)
        a = MemoryCoordinator("a", self.clock, cluster)
        b = MemoryCoordinator("b", self.clock, cluster)
        lease = self.successResultOf(a.claim("s"))
        self.assertIsNone(self.successResultOf(b.claim("s")))
        self.assertEqual(self.successResultOf(b.owner("s")), lease)
        self.clock.advance(5.0)
        self.assertEqual(self.successResultOf(b.claim("s")).epoch, 2)
