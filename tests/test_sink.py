"""
Tests for acetwist.sink: a ClientSink on a real twisted.web Request over an
HTTPChannel and an in-memory transport, fed by a real TSRing on a fake clock.
"""

from __future__ import annotations

from typing import Any, List, Optional, Tuple

from twisted.internet.defer import CancelledError
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http
from zope.interface.verify import verifyObject

from acetwist import ts
from acetwist.ring import TSRing
from acetwist.sink import ClientSink
from tests.test_ring import AUDIO, VIDEO, Stream

P = ts.PACKET_SIZE
BLOCK = 10 * P


class PlayerTransport(StringTransport):
    """A StringTransport that records an abort and can fill up (pause its producer) inside a write."""

    def __init__(self) -> None:
        super().__init__()
        self.aborted = False
        self.pause_after: Optional[int] = None  # pause the producer once this many bytes were written

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()

    def writeSequence(self, data: Any) -> None:
        super().writeSequence(data)
        if self.pause_after is not None and len(self.value()) >= self.pause_after and self.producer is not None:
            self.pause_after = None
            self.producer.pauseProducing()  # what FileDescriptor._maybePauseProducer does


class Player:
    """One player connection: a real Request on an HTTPChannel over a PlayerTransport."""

    def __init__(self, clock: Clock) -> None:
        captured: List[http.Request] = []

        class CapturingRequest(http.Request):
            def process(self) -> None:
                captured.append(self)

        self.transport = PlayerTransport()
        self.channel = http.HTTPChannel()
        self.channel.requestFactory = CapturingRequest  # type: ignore[assignment]
        self.channel.callLater = clock.callLater  # type: ignore[method-assign]
        self.channel.makeConnection(self.transport)
        self.channel.dataReceived(b"GET /ace/getstream?id=x HTTP/1.1\r\nHost: proxy\r\n\r\n")
        self.request = captured[0]

    def response(self) -> Tuple[bytes, List[bytes], bool]:
        """The response head, the body's chunks, and whether the terminating chunk was seen."""
        raw = self.transport.value()
        head, _, rest = raw.partition(b"\r\n\r\n")
        chunks: List[bytes] = []
        while rest:
            line, _, rest = rest.partition(b"\r\n")
            size = int(line, 16)
            if size == 0:
                return head, chunks, True
            chunks.append(rest[:size])
            assert rest[size : size + 2] == b"\r\n"
            rest = rest[size + 2 :]
        return head, chunks, False

    def body(self) -> bytes:
        return b"".join(self.response()[1])

    def writes(self) -> List[int]:
        return [len(c) for c in self.response()[1]]

    def pause(self) -> None:
        """The player's socket is full (Twisted's transport pauses the channel)."""
        self.channel.pauseProducing()

    def resume(self) -> None:
        self.channel.resumeProducing()

    def disconnect(self) -> None:
        """The player goes away, in the order Twisted reports it: stopProducing, then connectionLost."""
        self.channel.stopProducing()
        self.channel.connectionLost(Failure(ConnectionDone()))


def check(testcase: SynchronousTestCase, body: bytes, cc_errors: int = 0) -> ts.TSChecker:
    """Assert C{body} is a clean start: aligned from byte 0, PAT, PMT, then a random-access video packet."""
    checker = ts.TSChecker()
    checker.feed(body)
    testcase.assertTrue(checker.aligned_at_start)
    testcase.assertEqual(checker.trailing_bytes, 0)
    testcase.assertEqual((checker.pat_seen_at, checker.pmt_seen_at, checker.first_video_packet), (0, 1, 2))
    testcase.assertTrue(checker.first_video_random_access)
    testcase.assertEqual(checker.cc_errors, cc_errors)
    return checker


class SinkTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.ring = TSRing(self.clock, block_size=BLOCK, flush_interval=0.05, on_block=self._on_block)
        self.stream = Stream()
        self.sinks: List[ClientSink] = []
        self.closes: List[Tuple[ClientSink, str]] = []
        self.fed = b""

    def _on_block(self, block: Any) -> None:
        for sink in list(self.sinks):
            sink.wake()

    def feed(self, data: bytes) -> None:
        """Upstream bytes arrive; whole blocks reach the sinks at once, the rest after a flush."""
        self.fed += data
        self.ring.feed(data)
        self.ring.flush()

    def add(self, player: Optional[Player] = None, start: bool = True, **kwargs: Any) -> Tuple[ClientSink, Player]:
        player = player or Player(self.clock)
        kwargs.setdefault("on_close", lambda sink, reason: self.closes.append((sink, reason)))
        sink = ClientSink(player.request, self.ring, self.clock, **kwargs)
        self.sinks.append(sink)
        if start:
            sink.start()
        return sink, player

    def since_latest_keyframe(self) -> bytes:
        """What a joiner should get: psi, then every block from the newest keyframe block."""
        keyframe = self.ring.latest_keyframe()
        assert keyframe is not None
        return keyframe.psi + b"".join(self.ring.get(s).data for s in range(keyframe.seq, self.ring.next_seq))  # type: ignore[union-attr]


class JoinTests(SinkTestCase):
    def test_provides_push_producer(self) -> None:
        """A sink is a verified IPushProducer, registered as a streaming producer on its request."""
        sink, player = self.add()
        verifyObject(IPushProducer, sink)
        self.assertIs(player.request.producer, sink)
        self.assertTrue(player.request.streamingProducer)

    def test_joins_at_latest_keyframe_with_psi_first(self) -> None:
        """A joiner gets PAT, PMT, the newest keyframe block and everything after it, aligned and continuous."""
        for _ in range(3):
            self.feed(self.stream.gop(35))
        sink, player = self.add()
        expected = self.since_latest_keyframe()
        self.assertEqual(player.body(), expected)
        check(self, player.body())
        self.assertTrue(sink.started)
        self.assertEqual((sink.bytes_sent, sink.first_byte_at, sink.lag_bytes), (len(expected), 0.0, 0))

    def test_joiner_then_receives_live_blocks(self) -> None:
        """After the backlog the sink sends each new block as the channel wakes it, keeping continuity."""
        self.feed(self.stream.gop(35))
        sink, player = self.add()
        for _ in range(5):
            self.feed(self.stream.filler(17))
            self.feed(self.stream.gop(30))
        self.assertEqual(player.body(), self.fed)
        check(self, player.body())

    def test_waits_for_the_first_keyframe(self) -> None:
        """With no keyframe in the ring yet, nothing is written (not even headers) until one arrives."""
        self.feed(self.stream.filler(25))
        sink, player = self.add()
        self.feed(self.stream.filler(25))
        self.assertEqual(player.transport.value(), b"")
        self.assertFalse(sink.started)
        gop = self.stream.gop(30)
        self.feed(gop)
        self.assertEqual(player.body(), gop)
        check(self, player.body())

    def test_header_only_after_data(self) -> None:
        """The response head is sent with the first TS bytes, as a chunked 200."""
        self.feed(self.stream.gop(30))
        _, player = self.add()
        head, chunks, terminated = player.response()
        self.assertTrue(head.startswith(b"HTTP/1.1 200 OK"))
        self.assertIn(b"Transfer-Encoding: chunked", head)
        self.assertFalse(terminated)


class BatchingTests(SinkTestCase):
    def test_writes_are_batched_up_to_write_batch(self) -> None:
        """The backlog goes out in writes of whole consecutive blocks, none larger than write_batch."""
        self.feed(self.stream.gop(100) + self.stream.filler(80))  # PAT+PMT, then 17 blocks of 10 packets and one of 8
        _, player = self.add(write_batch=3 * BLOCK + 5)
        self.assertEqual(player.body(), self.since_latest_keyframe())
        # psi + two blocks (a third would pass the limit), five writes of three blocks, the last block
        self.assertEqual(player.writes(), [2 * P + 2 * BLOCK] + [3 * BLOCK] * 5 + [8 * P])

    def test_a_block_bigger_than_the_batch_goes_alone(self) -> None:
        """A block larger than write_batch is still written, whole and alone."""
        self.feed(self.stream.gop(35))
        _, player = self.add(write_batch=P)
        self.assertEqual(player.body(), self.since_latest_keyframe())
        self.assertEqual(player.writes()[0], 2 * P + BLOCK)

    def test_a_pause_inside_write_stops_the_batch_loop(self) -> None:
        """When the transport fills during a write (pausing the sink synchronously), no further batch is written."""
        self.feed(self.stream.gop(100))
        player = Player(self.clock)
        player.transport.pause_after = 1
        sink, _ = self.add(player, write_batch=BLOCK)
        self.assertTrue(sink.paused)
        self.assertEqual(len(player.writes()), 1)
        player.resume()
        self.assertEqual(player.body(), self.since_latest_keyframe())


class BackpressureTests(SinkTestCase):
    def test_pause_queues_nothing_and_resume_drains(self) -> None:
        """While paused the sink writes nothing and only its cursor lags; resume sends everything in order."""
        self.feed(self.stream.gop(30))
        sink, player = self.add()
        sent = len(player.body())
        player.pause()
        self.assertTrue(sink.paused)
        for _ in range(4):
            self.feed(self.stream.gop(30))
        self.assertEqual(len(player.body()), sent)
        self.assertEqual(sink.lag_bytes, 4 * 30 * P)
        self.assertEqual(sink.bytes_sent, sent)
        player.resume()
        self.assertFalse(sink.paused)
        self.assertEqual(sink.lag_bytes, 0)
        check(self, player.body())
        self.assertEqual(player.body(), self.fed)

    def test_stalled_sink_is_aborted_while_others_receive_everything(self) -> None:
        """A sink paused for stall_timeout is aborted and closed as stalled, while another sink receives every block."""
        self.feed(self.stream.gop(30))
        stuck, stuck_player = self.add(stall_timeout=20)
        healthy, healthy_player = self.add(stall_timeout=20)
        stuck_player.pause()
        for _ in range(19):
            self.clock.advance(1)
            self.feed(self.stream.gop(30))
        self.assertFalse(stuck.closed)
        self.clock.advance(1)
        self.assertTrue(stuck_player.transport.aborted)
        self.assertEqual(self.closes, [(stuck, "stalled")])
        self.assertIsNone(stuck_player.request.producer)
        self.assertEqual(healthy_player.body(), self.fed)
        check(self, healthy_player.body())
        self.assertFalse(healthy.closed)

    def test_resume_cancels_the_stall_timer(self) -> None:
        """A sink that resumes before stall_timeout is not aborted, and a later pause starts a fresh timer."""
        self.feed(self.stream.gop(30))
        sink, player = self.add(stall_timeout=20)
        player.pause()
        self.clock.advance(15)
        player.resume()
        self.clock.advance(15)
        player.pause()
        self.clock.advance(15)
        self.assertFalse(sink.closed)
        self.clock.advance(5)
        self.assertEqual(sink.close_reason, "stalled")

    def test_an_upstream_gap_is_not_a_stall(self) -> None:
        """An unpaused sink that receives no new blocks for a long time stays connected."""
        self.feed(self.stream.gop(30))
        sink, player = self.add(stall_timeout=20)
        self.clock.advance(300)
        self.assertFalse(sink.closed)
        self.assertFalse(player.transport.aborted)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_slow_reader_past_max_lag_skips_to_newest_keyframe(self) -> None:
        """A paused sink that falls more than max_lag_bytes behind resumes at the newest keyframe, with psi, and counts one skip."""
        self.feed(self.stream.gop(30))
        sink, player = self.add(max_lag_bytes=50 * P)
        before = player.body()
        player.pause()
        for _ in range(2):
            self.feed(self.stream.gop(30))
        self.assertEqual(sink.skips, 1)
        self.assertLessEqual(sink.lag_bytes, 50 * P)
        player.resume()
        after = player.body()[len(before) :]
        self.assertEqual(after, self.since_latest_keyframe())
        check(self, after)
        self.assertEqual(sink.skips, 1)
        self.assertEqual(len(self.ring), self.ring.next_seq)  # the ring kept everything: the sink never made it hold more

    def test_evicted_cursor_skips_to_newest_keyframe(self) -> None:
        """A paused sink whose next block was evicted from the ring resumes at the newest keyframe (a counted skip)."""
        ring = TSRing(self.clock, block_size=BLOCK, max_bytes=40 * P, on_block=self._on_block)
        self.ring = ring
        self.feed(self.stream.gop(30))
        sink, player = self.add()
        before = player.body()
        player.pause()
        self.feed(self.stream.filler(30))
        self.feed(self.stream.gop(30))
        self.assertGreater(ring.first_seq, 4)
        player.resume()
        after = player.body()[len(before) :]
        self.assertEqual(after, self.since_latest_keyframe())
        self.assertEqual(sink.skips, 1)

    def test_no_newer_keyframe_means_no_skip(self) -> None:
        """A sink behind by more than max_lag_bytes with no newer keyframe to jump to keeps sending in order."""
        self.feed(self.stream.gop(100))
        sink, player = self.add(max_lag_bytes=2 * P, write_batch=BLOCK)
        self.assertEqual(player.body(), self.since_latest_keyframe())
        self.assertEqual(sink.skips, 0)

    def test_ten_sinks_one_paused_the_others_receive_every_block(self) -> None:
        """With ten players and one paused for good, the other nine receive every block, continuous and unskipped."""
        self.feed(self.stream.gop(30))
        pairs = [self.add(stall_timeout=1000, max_lag_bytes=20 * P) for _ in range(10)]
        pairs[3][1].pause()
        for _ in range(30):
            self.feed(self.stream.filler(7))
            self.feed(self.stream.gop(33))
            self.clock.advance(0.5)
        expected = self.fed
        for i, (sink, player) in enumerate(pairs):
            if i == 3:
                self.assertEqual(sink.bytes_sent, 30 * P)
                self.assertGreater(sink.skips, 0)
                continue
            self.assertEqual(player.body(), expected)
            check(self, player.body())
            self.assertEqual((sink.skips, sink.bytes_sent), (0, len(expected)))


class SegmentTests(SinkTestCase):
    def test_segment_crossing_restarts_at_a_keyframe(self) -> None:
        """When the upstream is replaced, the sink drops the new segment's blocks until its first keyframe, then sends psi + data."""
        self.feed(self.stream.gop(30))
        sink, player = self.add()
        self.ring.feed(self.stream.video_packet()[:50])  # the old upstream was cut mid-packet
        self.ring.discontinuity()
        new = Stream()
        self.feed(new.filler(5))
        self.feed(new.filler(25))
        self.assertEqual(player.body(), self.fed[: 30 * P])
        sent = len(player.body())
        gop = new.gop(30)
        self.feed(gop)
        self.assertEqual(player.body()[sent:], gop)
        check(self, player.body()[sent:])
        self.assertEqual(sink.skips, 0)

    def test_joiner_in_a_new_segment_starts_at_its_keyframe(self) -> None:
        """A sink that joins after a discontinuity starts at the new segment's keyframe, not the old one's."""
        self.feed(self.stream.gop(30))
        self.ring.discontinuity()
        new = Stream()
        gop = new.gop(30)
        self.feed(new.filler(5) + gop)
        _, player = self.add()
        self.assertEqual(player.body(), gop)


class EndingTests(SinkTestCase):
    def test_finish_unregisters_and_fires_done(self) -> None:
        """finish() unregisters the producer, fires done with None, calls on_close once, and leaves finishing to the route."""
        self.feed(self.stream.gop(30))
        sink, player = self.add()
        sink.finish()
        self.assertIsNone(self.successResultOf(sink.done))
        self.assertIsNone(player.request.producer)
        self.assertFalse(player.request.finished)
        self.assertEqual(self.closes, [(sink, "finished")])
        player.request.finish()  # what Klein does when done fires: no "producer not unregistered" error
        self.assertTrue(player.response()[2])

    def test_fail_before_first_byte_errbacks_done(self) -> None:
        """fail() before any byte errbacks done with the error, writes nothing and unregisters."""
        sink, player = self.add()
        sink.fail(ValueError("engine said no"))
        self.failureResultOf(sink.done, ValueError)
        self.assertEqual(player.transport.value(), b"")
        self.assertIsNone(player.request.producer)
        self.assertFalse(player.transport.aborted)
        self.assertEqual(self.closes, [(sink, "failed")])

    def test_fail_after_first_byte_aborts_the_connection(self) -> None:
        """fail() after the first byte aborts the connection instead of errbacking done into the TS body."""
        self.feed(self.stream.gop(30))
        sink, player = self.add()
        written = player.transport.value()
        sink.fail(ValueError("engine gone"))
        self.assertTrue(player.transport.aborted)
        self.assertNoResult(sink.done)
        self.assertEqual(player.transport.value(), written)
        self.assertEqual(self.closes, [(sink, "failed")])
        player.disconnect()
        sink.done.cancel()  # Klein, on the lost connection
        self.failureResultOf(sink.done, CancelledError)
        self.assertEqual(len(self.closes), 1)

    def test_disconnect_teardown_is_idempotent(self) -> None:
        """stopProducing, the notifyFinish errback and Klein's cancel all arrive; on_close runs once and nothing raises."""
        self.feed(self.stream.gop(30))
        sink, player = self.add()
        player.disconnect()
        self.assertIsNone(player.request.channel)
        sink.done.cancel()
        self.failureResultOf(sink.done, CancelledError)
        self.assertEqual(self.closes, [(sink, "gone")])
        sink.stopProducing()
        sink.finish()
        sink.fail(ValueError("late"))
        sink.abort("late")
        sink.wake()
        sink.pauseProducing()
        self.assertEqual(self.closes, [(sink, "gone")])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_connection_lost_without_stop_producing_closes(self) -> None:
        """Losing the connection closes the sink through notifyFinish even if stopProducing never came."""
        self.feed(self.stream.gop(30))
        sink, player = self.add()
        player.channel.connectionLost(Failure(ConnectionDone()))
        self.assertTrue(sink.closed)
        self.assertEqual(self.closes, [(sink, "gone")])

    def test_cancel_of_done_closes_the_sink(self) -> None:
        """Cancelling done (the route going away first) closes the sink and unregisters it."""
        self.feed(self.stream.gop(30))
        sink, player = self.add()
        sink.done.cancel()
        self.failureResultOf(sink.done, CancelledError)
        self.assertEqual(self.closes, [(sink, "cancelled")])
        self.assertIsNone(player.request.producer)
        sent = sink.bytes_sent
        self.feed(self.stream.gop(30))
        self.assertEqual(sink.bytes_sent, sent)

    def test_lost_connection_while_paused_leaves_no_stall_timer(self) -> None:
        """A paused sink whose connection is lost closes once as gone, and its stall timer never fires."""
        self.feed(self.stream.gop(30))
        sink, player = self.add(stall_timeout=5)
        player.pause()
        player.channel.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(5)
        self.assertEqual(self.closes, [(sink, "gone")])

    def test_start_after_the_player_left_closes(self) -> None:
        """A sink started on a request whose connection is already gone closes at once instead of registering."""
        player = Player(self.clock)
        player.channel.connectionLost(Failure(ConnectionDone()))
        sink, _ = self.add(player)
        self.assertEqual(self.closes, [(sink, "gone")])


class RebindTests(SinkTestCase):
    def test_rebind_moves_a_waiting_sink_to_another_ring(self) -> None:
        """A sink handed over to another channel's ring starts there at its newest keyframe and reports its close there."""
        sink, player = self.add()
        other_closes: List[str] = []
        other = TSRing(self.clock, block_size=BLOCK, on_block=lambda block: sink.wake())
        other_stream = Stream()
        gop = other_stream.gop(30)
        other.feed(gop)
        other.flush()
        sink.rebind(other, lambda s, reason: other_closes.append(reason))
        sink.start()  # the other channel's add_client
        self.assertEqual(player.body(), gop)
        more = other_stream.filler(15)
        other.feed(more)
        other.flush()
        self.assertEqual(player.body(), gop + more)
        player.disconnect()
        self.assertEqual((other_closes, self.closes), (["gone"], []))


def serials(body: bytes) -> List[int]:
    """The serial numbers of a test Stream's video and audio packets in C{body}, in order (PAT/PMT left out)."""
    out = []
    for packet in ts.split_packets(body):
        if ts.packet_pid(packet) in (VIDEO, AUDIO):
            out.append(int.from_bytes(ts.payload(packet)[:4], "big"))
    return out


class BacklogTests(SinkTestCase):
    """--join-backlog: a new player starts that far back and catches up at link speed."""

    def feed_gops(self, count: int, stream: Optional[Stream] = None) -> None:
        """One GOP a second: keyframe blocks cut at clock times 0, 1, 2... from now on."""
        for _ in range(count):
            self.feed((stream or self.stream).gop(30))
            self.clock.advance(1)

    def since(self, keyframe: Any) -> bytes:
        """What a player positioned at C{keyframe} gets: its psi, then every block from it."""
        return keyframe.psi + b"".join(self.ring.get(s).data for s in range(keyframe.seq, self.ring.next_seq))  # type: ignore[union-attr]

    def keyframes(self) -> List[Any]:
        return [b for b in (self.ring.get(s) for s in range(self.ring.first_seq, self.ring.next_seq)) if b and b.keyframe]

    def assertNoRepeat(self, body: bytes) -> None:
        numbers = serials(body)
        self.assertEqual(numbers, sorted(set(numbers)), "a packet was sent twice or out of order")

    def test_joiner_starts_at_the_newest_keyframe_at_least_the_backlog_old(self) -> None:
        """With GOPs cut at 0..7 s and a 3 s backlog at 8 s, a joiner gets the keyframe cut at 5 s, with psi, and everything after it."""
        self.feed_gops(8)
        sink, player = self.add(join_backlog=3)
        start = next(k for k in self.keyframes() if k.created == 5.0)
        self.assertEqual(player.body(), self.since(start))
        check(self, player.body())
        self.assertEqual(sink.lag_bytes, 0)

    def test_a_backlog_between_keyframes_goes_back_to_the_one_before(self) -> None:
        """A 2.5 s backlog at 8 s starts at the keyframe cut at 5 s (the newest at least 2.5 s old), not at 6 s."""
        self.feed_gops(8)
        _, player = self.add(join_backlog=2.5)
        start = next(k for k in self.keyframes() if k.created == 5.0)
        self.assertEqual(player.body(), self.since(start))

    def test_short_ring_starts_at_its_oldest_keyframe(self) -> None:
        """A backlog longer than the ring holds starts at the oldest keyframe the ring still holds."""
        self.ring = TSRing(self.clock, block_size=BLOCK, max_seconds=4, on_block=self._on_block)
        self.feed_gops(10)
        _, player = self.add(join_backlog=8)
        oldest = self.keyframes()[0]
        self.assertGreater(oldest.created, self.clock.seconds() - 8)
        self.assertEqual(player.body(), self.since(oldest))
        check(self, player.body())

    def test_no_keyframe_yet_waits_for_the_first(self) -> None:
        """With no keyframe in the ring, a joiner with a backlog waits for the first keyframe like any other."""
        self.feed(self.stream.filler(25))
        self.clock.advance(3)
        sink, player = self.add(join_backlog=5)
        self.assertEqual(player.transport.value(), b"")
        gop = self.stream.gop(30)
        self.feed(gop)
        self.assertEqual(player.body(), gop)
        check(self, player.body())

    def test_backlog_does_not_reach_back_across_a_discontinuity(self) -> None:
        """After the upstream was replaced, the backlog starts no earlier than the new segment's first keyframe."""
        self.feed_gops(5)
        self.ring.discontinuity()
        new = Stream()
        self.feed(new.filler(5))
        self.feed_gops(3, new)
        _, player = self.add(join_backlog=5)
        first_new = next(k for k in self.keyframes() if k.segment == 1)
        self.assertEqual(first_new.created, 5.0)
        self.assertEqual(player.body(), self.since(first_new))
        check(self, player.body())

    def test_new_segment_without_a_keyframe_keeps_the_old_segments_backlog(self) -> None:
        """When the new segment has no keyframe yet, the backlog comes from the old one, and the player then waits for the new keyframe."""
        self.feed_gops(5)
        old_start = next(k for k in self.keyframes() if k.created == 2.0)
        old_part = self.since(old_start)
        self.ring.discontinuity()
        new = Stream()
        self.feed(new.filler(15))
        _, player = self.add(join_backlog=3)
        self.assertEqual(player.body(), old_part)
        gop = new.gop(30)
        self.feed(gop)
        self.assertEqual(player.body(), old_part + gop)

    def test_backlog_past_max_lag_is_not_lag(self) -> None:
        """A backlog far larger than max_lag_bytes, delivered to a player whose socket keeps filling, causes no skip."""
        self.feed_gops(8)
        player = Player(self.clock)
        player.transport.pause_after = 1
        sink, _ = self.add(player, join_backlog=5, max_lag_bytes=20 * P, write_batch=BLOCK)
        self.assertTrue(sink.paused)
        self.assertGreater(sink.lag_bytes, 5 * 20 * P)
        self.feed(self.stream.filler(10))  # live data arrives while it is paused
        for _ in range(50):
            if not sink.paused:
                break
            player.transport.pause_after = len(player.transport.value()) + 1
            player.resume()
        self.assertEqual(sink.skips, 0)
        start = next(k for k in self.keyframes() if k.created == 3.0)
        self.assertEqual(player.body(), self.since(start))
        check(self, player.body())

    def test_falling_behind_after_catching_up_is_lag_again(self) -> None:
        """Once the backlog is delivered, falling max_lag_bytes behind skips to the newest keyframe, and nothing is sent twice."""
        self.feed_gops(8)
        sink, player = self.add(join_backlog=5, max_lag_bytes=40 * P)
        self.assertEqual(sink.lag_bytes, 0)
        player.pause()
        self.feed_gops(2)
        self.assertEqual(sink.skips, 1)
        player.resume()
        self.assertEqual(player.body()[-len(self.since_latest_keyframe()):], self.since_latest_keyframe())
        self.assertNoRepeat(player.body())

    def test_falling_behind_while_catching_up_skips_past_max_lag_on_top_of_the_backlog(self) -> None:
        """A player stuck during its backlog skips once live data beyond the backlog exceeds max_lag_bytes, to the newest keyframe, never backwards."""
        self.feed_gops(8)
        player = Player(self.clock)
        player.transport.pause_after = 1
        sink, _ = self.add(player, join_backlog=5, max_lag_bytes=40 * P, write_batch=BLOCK)
        self.feed(self.stream.filler(30))  # 30 packets past the backlog: within the bound
        self.assertEqual(sink.skips, 0)
        self.feed_gops(1)  # 60 packets past it
        self.assertEqual(sink.skips, 1)
        player.resume()
        self.assertEqual(player.body()[-len(self.since_latest_keyframe()):], self.since_latest_keyframe())
        self.assertNoRepeat(player.body())

    def test_rebind_of_a_player_with_data_starts_at_the_newest_keyframe(self) -> None:
        """A player that has data, handed to another channel's ring, continues at its newest keyframe, not at its backlog."""
        self.feed_gops(8)
        sink, player = self.add(join_backlog=5)
        sent = len(player.body())
        other_stream = Stream()
        other = TSRing(self.clock, block_size=BLOCK, on_block=lambda block: sink.wake())
        self.ring = other
        self.feed_gops(8, other_stream)
        sink.rebind(other, lambda s, reason: None)
        sink.start()  # the other channel's add_client
        self.assertEqual(player.body()[sent:], self.since_latest_keyframe())
        self.assertEqual(sink.skips, 0)

    def test_rebind_of_a_waiting_player_gives_it_the_backlog_there(self) -> None:
        """A player that has no data yet, handed to another channel's ring, gets that ring's backlog."""
        sink, player = self.add(join_backlog=3)
        other = TSRing(self.clock, block_size=BLOCK, on_block=lambda block: sink.wake())
        self.ring = other
        self.feed_gops(8)
        sink.rebind(other, lambda s, reason: None)
        sink.start()
        start = next(k for k in self.keyframes() if k.created == 5.0)
        self.assertEqual(player.body(), self.since(start))
        self.assertNoRepeat(player.body())

    def test_zero_backlog_starts_at_the_newest_keyframe(self) -> None:
        """join_backlog 0 is the behaviour without a backlog: the newest keyframe."""
        self.feed_gops(8)
        _, player = self.add(join_backlog=0)
        self.assertEqual(player.body(), self.since_latest_keyframe())
