"""Tests for acetwist.hls.viewer: an HLS viewer as a channel's player, on a task clock."""

from __future__ import annotations

from typing import List, Tuple

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from acetwist.errors import EngineError, ErrorKind
from acetwist.hls.viewer import HlsViewer
from acetwist.interfaces import ISink


class HlsViewerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.closed: List[Tuple[HlsViewer, str]] = []
        self.viewer = HlsViewer(self.clock, 11.0, lambda viewer, reason: self.closed.append((viewer, reason)))
        self.viewer.start()

    def test_it_is_a_sink(self) -> None:
        """A viewer provides ISink, so a channel's roster takes it like a TS player."""
        self.assertTrue(verifyObject(ISink, self.viewer))

    def test_it_leaves_after_the_idle_time_without_a_request(self) -> None:
        """Each request restarts the idle clock; without one for the idle time the viewer leaves once."""
        self.clock.advance(10)
        self.viewer.touch()
        self.clock.advance(10)
        self.assertEqual(self.closed, [])
        self.clock.advance(1)
        self.assertEqual(self.closed, [(self.viewer, "idle")])
        self.clock.advance(60)
        self.assertEqual(len(self.closed), 1)

    def test_a_waiting_request_is_answered_after_the_block_that_makes_it_ready(self) -> None:
        """wait() fires on the wake() after its condition becomes true, not before."""
        ready = [False]
        d = self.viewer.wait(lambda: ready[0], 30, "segment")
        self.viewer.wake()
        self.assertNoResult(d)
        ready[0] = True
        self.viewer.wake()
        self.assertIsNone(self.successResultOf(d))

    def test_a_viewer_does_not_idle_out_while_a_request_waits(self) -> None:
        """A request waiting longer than the idle time keeps the viewer; the idle clock restarts after it."""
        d = self.viewer.wait(lambda: False, 30, "HLS segment")
        self.clock.advance(20)
        self.assertEqual(self.closed, [])
        self.clock.advance(10)
        error = self.failureResultOf(d, EngineError).value
        self.assertEqual((error.status, error.kind), (504, ErrorKind.TIMEOUT))
        self.clock.advance(11)
        self.assertEqual(self.closed, [(self.viewer, "idle")])

    def test_a_channel_failure_reaches_every_waiting_request_and_later_ones(self) -> None:
        """fail(error) errbacks the waiting requests with the error; a later wait raises it too."""
        first = self.viewer.wait(lambda: False, 30, "segment")
        second = self.viewer.wait(lambda: False, 30, "segment")
        self.viewer.fail(EngineError(502, "engine: failed to load content", kind=ErrorKind.REFUSED))
        for d in (first, second):
            self.assertEqual(self.failureResultOf(d, EngineError).value.status, 502)
        self.assertRaises(EngineError, self.viewer.wait, lambda: True, 30, "segment")
        self.assertEqual(self.closed, [(self.viewer, "failed")])

    def test_a_stopped_channel_answers_waiting_requests_503(self) -> None:
        """finish() (the channel stopped) gives waiting requests a 503 and counts served bytes."""
        self.viewer.served(1000)
        d = self.viewer.wait(lambda: False, 30, "segment")
        self.viewer.finish()
        self.assertEqual(self.failureResultOf(d, EngineError).value.status, 503)
        self.assertEqual(self.viewer.bytes_sent, 1000)
        self.assertTrue(self.viewer.started)

    def test_a_request_that_goes_away_stops_waiting(self) -> None:
        """Cancelling a waiting request forgets it and lets the idle clock run again."""
        d = self.viewer.wait(lambda: False, 30, "segment")
        d.cancel()
        self.failureResultOf(d)
        self.clock.advance(11)
        self.assertEqual(self.closed, [(self.viewer, "idle")])
