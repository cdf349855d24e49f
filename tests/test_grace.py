"""The grace machine on task.Clock: occupied <-> lingering -> expired."""

from typing import List

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from acetwist.channel.grace import GraceCore, GraceMachine, IGrace
from acetwist.coord.base import CoordinatorUnavailable


class GraceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.expired: List[float] = []
        self.counts: List["Deferred[int]"] = []
        #: what the next count answers: a number, an exception, or None to leave it pending
        self.answer: "int | Exception | None" = None
        self.grace: IGrace = GraceMachine(GraceCore(self.clock, 10.0, 2.0, self.count, self.on_expired))

    def count(self) -> "Deferred[int]":
        d: "Deferred[int]" = Deferred()
        if isinstance(self.answer, Exception):
            d = fail(self.answer)
        elif self.answer is not None:
            d = succeed(self.answer)
        self.counts.append(d)
        return d

    def on_expired(self) -> None:
        self.expired.append(self.clock.seconds())

    def test_the_grace_expires_after_its_time_when_nobody_watches_anywhere(self) -> None:
        """With the last player gone and a count of zero, the grace expires once, after grace seconds."""
        self.answer = 0
        self.grace.vacated()
        self.assertTrue(self.grace.lingering())
        self.clock.advance(9.9)
        self.assertEqual(self.expired, [])
        self.clock.advance(0.1)
        self.assertEqual(self.expired, [10.0])
        self.assertFalse(self.grace.lingering())
        self.clock.advance(100)
        self.assertEqual(self.expired, [10.0])

    def test_a_returning_player_cancels_the_timer(self) -> None:
        """Leaving the lingering state cancels its timer: nothing is counted or expired later."""
        self.grace.vacated()
        self.grace.occupied()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual((self.counts, self.expired), ([], []))

    def test_players_elsewhere_keep_it_lingering_for_another_grace(self) -> None:
        """A positive count lingers for another full grace period before asking again."""
        self.answer = 3
        self.grace.vacated()
        self.clock.advance(10)
        self.assertTrue(self.grace.lingering())
        self.answer = 0
        self.clock.advance(9.9)
        self.assertEqual(self.expired, [])
        self.clock.advance(0.1)
        self.assertEqual(self.expired, [20.0])

    def test_a_count_that_cannot_be_had_is_not_zero(self) -> None:
        """When the count fails the machine keeps lingering and asks again after the retry interval."""
        self.answer = CoordinatorUnavailable("redis away")
        self.grace.vacated()
        self.clock.advance(10)
        self.assertEqual(self.expired, [])
        self.assertTrue(self.grace.lingering())
        self.clock.advance(2)
        self.assertEqual(len(self.counts), 2)
        self.answer = 0
        self.clock.advance(2)
        self.assertEqual(self.expired, [14.0])

    def test_a_count_answered_after_a_player_returned_is_ignored(self) -> None:
        """A zero count that arrives after a player came back changes nothing."""
        self.grace.vacated()
        self.clock.advance(10)
        self.grace.occupied()
        self.counts[0].callback(0)
        self.assertEqual(self.expired, [])
        self.assertFalse(self.grace.lingering())

    def test_stop_cancels_the_timer(self) -> None:
        """Stopping while lingering cancels the timer; nothing expires afterwards."""
        self.grace.vacated()
        self.grace.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.grace.vacated()
        self.clock.advance(100)
        self.assertEqual(self.expired, [])
