"""A follower's mirror source and owner watch on task.Clock."""

from typing import List

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from acetwist.channel.mirror_source import MirrorCore, MirrorSource, OwnerWatch, WatchCore
from acetwist.coord.base import CoordinatorUnavailable
from acetwist.interfaces import Block, Lease
from acetwist.ring import TSRing
from tests.fakes import FakeCoordinator, gop

KEY = "id:" + "1" * 40


class MirrorSourceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.coordinator = FakeCoordinator()
        self.ring = TSRing(self.clock, block_size=64 * 1024, flush_interval=0.05, max_seconds=10, max_bytes=1 << 24)
        self.received: List[int] = []
        self.source = MirrorSource(MirrorCore(KEY, self.coordinator, self.ring, on_bytes=self.received.append))
        self.source.start()

    def test_mirrored_blocks_fill_the_ring_in_order(self) -> None:
        """Blocks from the owner's mirror are appended to the ring and counted."""
        follower = self.coordinator.followers[0]
        follower.on_block(Block(3, gop(0), True, b"", 0, 0.0), 7)
        follower.on_block(Block(4, gop(1), True, b"", 0, 0.0), 7)
        self.assertEqual(len(self.ring), 2)
        self.assertEqual(self.received, [len(gop(0)), len(gop(1))])
        self.assertEqual(self.source.epoch, 7)

    def test_a_new_epoch_starts_a_new_segment(self) -> None:
        """Blocks from a new owner (a higher epoch) make players resume at a keyframe."""
        follower = self.coordinator.followers[0]
        follower.on_block(Block(3, gop(0), True, b"", 0, 0.0), 7)
        segment = self.ring.segment
        follower.on_block(Block(4, gop(1), True, b"", 0, 0.0), 8)
        self.assertEqual(self.ring.segment, segment + 1)

    def test_stop_unsubscribes_and_later_blocks_are_ignored(self) -> None:
        """Stopping stops the follower; a block delivered afterwards changes nothing."""
        follower = self.coordinator.followers[0]
        self.source.stop()
        self.assertTrue(follower.stopped)
        follower.on_block(Block(3, gop(0), True, b"", 0, 0.0), 7)
        self.assertEqual(len(self.ring), 0)

    def test_a_fresh_follower_asks_for_the_join_backlog_a_demoted_owner_does_not(self) -> None:
        """An empty ring follows the mirror from the join backlog back; a ring that already had blocks from the newest keyframe."""
        ring = TSRing(self.clock, block_size=64 * 1024, flush_interval=0.05, max_seconds=10, max_bytes=1 << 24)
        fresh = MirrorSource(MirrorCore(KEY, self.coordinator, ring, on_bytes=self.received.append, join_backlog=5.0))
        fresh.start()
        self.assertEqual(self.coordinator.followers[-1].backlog, 5.0)
        fresh.stop()
        ring.feed(gop(0))
        ring.flush()
        again = MirrorSource(MirrorCore(KEY, self.coordinator, ring, on_bytes=self.received.append, join_backlog=5.0))
        again.start()
        self.assertEqual(self.coordinator.followers[-1].backlog, 0.0)


class OwnerWatchTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.coordinator = FakeCoordinator()
        self.coordinator.other_owner = Lease("other", 3)
        self.wanted = True
        self.takeovers: List[Lease] = []
        self.watch = OwnerWatch(WatchCore(KEY, self.coordinator, self.clock, interval=1.0, patience=3.5,
                                          wanted=lambda: self.wanted, on_takeover=self.takeovers.append))
        self.watch.start()

    def test_a_vanished_owner_is_replaced_after_the_patience(self) -> None:
        """With no owner seen for longer than the patience, a worker with players claims the stream once."""
        self.clock.pump([1.0] * 3)
        self.coordinator.other_owner = None
        self.clock.pump([1.0] * 3)
        self.assertEqual(self.takeovers, [])
        self.clock.pump([1.0] * 2)
        self.assertEqual(len(self.takeovers), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_worker_without_players_does_not_take_over(self) -> None:
        """Nobody watching here: no engine session is worth opening."""
        self.coordinator.other_owner = None
        self.wanted = False
        self.clock.pump([1.0] * 10)
        self.assertEqual((self.takeovers, self.coordinator.claims), ([], 0))

    def test_unanswered_queries_never_count_towards_a_takeover(self) -> None:
        """When the cluster cannot say who owns the stream the wait starts over."""
        self.coordinator.other_owner = None
        self.coordinator.owner = lambda key: fail(CoordinatorUnavailable("away"))  # type: ignore[method-assign]
        self.clock.pump([1.0] * 30)
        self.assertEqual(self.takeovers, [])

    def test_a_takeover_won_after_stop_is_given_back(self) -> None:
        """A claim answered after the watch stopped releases the lease and takes nothing over."""
        pending: "Deferred[Lease | None]" = Deferred()
        self.coordinator.claim = lambda key, aliases=True: pending  # type: ignore[method-assign]
        self.coordinator.other_owner = None
        self.clock.pump([1.0] * 6)
        self.watch.stop()
        pending.callback(Lease(self.coordinator.worker_id, 4))
        self.assertEqual(self.takeovers, [])
        self.assertEqual(self.coordinator.released, [KEY])

    def test_stop_cancels_the_watch(self) -> None:
        """Stopping the watch cancels its timer."""
        self.watch.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
