"""Freed memory goes back to the OS after channels end, rate-limited."""

from typing import List

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from acetwist.memory import MemoryReleaser, glibc_malloc_trim


class MemoryReleaserTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.calls: List[float] = []
        self.releaser = MemoryReleaser(self.clock, 10.0, lambda: self.calls.append(self.clock.seconds()) or 0)

    def test_the_first_end_trims_on_the_next_turn(self) -> None:
        """A channel that ended makes the releaser trim once, without waiting for the interval."""
        self.releaser.channel_ended()
        self.clock.advance(0)
        self.assertEqual(self.calls, [0.0])

    def test_ends_in_a_burst_trim_once_per_interval(self) -> None:
        """Many channels ending close together cause one trim now and one after the interval, not one each."""
        for _ in range(5):
            self.releaser.channel_ended()
        self.clock.advance(0)
        for _ in range(5):
            self.clock.advance(1)
            self.releaser.channel_ended()
        self.clock.advance(5)
        self.clock.advance(100)
        self.assertEqual(self.calls, [0.0, 10.0])

    def test_without_glibc_nothing_is_scheduled(self) -> None:
        """With no trim function (not glibc) channel ends schedule nothing."""
        releaser = MemoryReleaser(self.clock, 10.0, None)
        releaser.channel_ended()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_glibc_trim_can_be_called_here(self) -> None:
        """On this Linux machine glibc's malloc_trim is found and answers 0 or 1."""
        trim = glibc_malloc_trim()
        if trim is None:
            self.skipTest("not glibc")  # pragma: no cover - the CI machine is Debian
        self.assertIn(trim(), (0, 1))

    def test_stop_leaves_nothing_pending(self) -> None:
        """Stopping cancels a scheduled trim, and channel ends after it schedule nothing."""
        self.releaser.channel_ended()
        self.releaser.stop()
        self.releaser.channel_ended()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual(self.calls, [])
