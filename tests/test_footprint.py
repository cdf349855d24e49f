"""What a single proxy process keeps in memory beyond its rings."""

from __future__ import annotations

from typing import List

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from acetwist.config import Settings
from acetwist.coord.memory import MemoryCoordinator
from acetwist.service import LOCAL_MIRROR_BLOCKS, make_coordinator
from tests.test_coord_contract import block


class LocalMirrorTests(SynchronousTestCase):
    def test_single_process_mirror_is_short_and_still_starts_at_a_keyframe(self) -> None:
        """Without Redis the stream mirror holds only the newest LOCAL_MIRROR_BLOCKS blocks; a follower still starts at its newest keyframe."""
        clock = Clock()
        coordinator = make_coordinator(Settings.defaults(), clock, "solo")
        assert isinstance(coordinator, MemoryCoordinator)
        lease = self.successResultOf(coordinator.claim("s"))
        total = 3 * LOCAL_MIRROR_BLOCKS
        for seq in range(total):
            coordinator.publish("s", lease, block(seq, keyframe=seq % 30 == 0))
        mirror = coordinator.cluster.mirror("s")
        assert mirror is not None
        self.assertEqual([b.seq for _, b, _ in mirror.entries], list(range(total - LOCAL_MIRROR_BLOCKS, total)))
        got: List[int] = []
        follower = coordinator.follow("s", lambda b, e: got.append(b.seq))
        clock.advance(0)
        newest_keyframe = (total - 1) // 30 * 30
        self.assertEqual(got, list(range(newest_keyframe, total)))
        self.successResultOf(follower.stop())
