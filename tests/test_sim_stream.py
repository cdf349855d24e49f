"""Tests for the simulator's TS sender: burst, pacing, backpressure and stream faults, on a task.Clock."""

from typing import Any, List, Optional

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from acetwist import ts
from acetwist.sim.config import SimConfig
from acetwist.sim.contents import DEFAULT_CONTENTS
from acetwist.sim.engine import Engine
from acetwist.sim.stream import CHUNK_PACKETS, StreamSender

A = DEFAULT_CONTENTS[0]
CHUNK = CHUNK_PACKETS * ts.PACKET_SIZE


class FakeSink:
    """Records writes; with C{high_water}, pauses the producer like a full transport."""

    def __init__(self, high_water: Optional[int] = None) -> None:
        self.data = bytearray()
        self.writes: List[int] = []
        self.producer: Any = None
        self.headers_sent = False
        self.finished: Optional[bool] = None
        self.aborted = False
        self.high_water = high_water
        self.buffered = 0

    def register_producer(self, producer: Any) -> None:
        self.producer = producer

    def write(self, data: bytes) -> None:
        if not data:
            self.headers_sent = True
            return
        self.data += data
        self.writes.append(len(data))
        self.buffered += len(data)
        if self.high_water is not None and self.buffered > self.high_water:
            self.producer.pauseProducing()

    def drain(self) -> None:
        self.buffered = 0
        self.producer.resumeProducing()

    def finish(self, close: bool) -> None:
        self.finished = close

    def abort(self) -> None:
        self.aborted = True

    def checker(self) -> ts.TSChecker:
        checker = ts.TSChecker()
        checker.feed(bytes(self.data))
        return checker


class SenderTestCase(SynchronousTestCase):
    config = dict(prebuffer=0, burst=2, bitrate=4_000_000, gop=1, tick=0.04)

    def setUp(self) -> None:
        self.clock = Clock()
        self.engine = Engine(self.clock, SimConfig.from_values(self.config))
        self.template = self.engine.template
        self.session = self.engine.start_session(A)

    def sender(self, sink: FakeSink, **kw: Any) -> StreamSender:
        sender = StreamSender(self.engine, self.session, sink, **kw)
        sender.start()
        return sender

    def seconds_of(self, sink: FakeSink) -> float:
        return len(sink.data) / ts.PACKET_SIZE * self.template.gop / self.template.packets

    def run_for(self, seconds: float) -> None:
        for _ in range(round(seconds / 0.04)):
            self.clock.advance(0.04)


class BurstAndPacingTests(SenderTestCase):
    def test_burst_then_real_time(self) -> None:
        """The first burst seconds go out at once; then data follows the clock at the bitrate."""
        sink = FakeSink()
        self.sender(sink)
        self.assertTrue(sink.headers_sent)
        self.assertAlmostEqual(self.seconds_of(sink), 2.0, delta=0.01)
        self.run_for(3)
        self.assertAlmostEqual(self.seconds_of(sink), 5.0, delta=0.05)
        self.assertEqual(self.engine.counters.snapshot()["bytes_sent"], len(sink.data))

    def test_writes_are_whole_packets_and_at_most_64k(self) -> None:
        """Every write is a whole number of packets, at most 64 KiB, and real-time writes are several KiB."""
        sink = FakeSink()
        self.sender(sink)
        burst_writes = len(sink.writes)
        self.run_for(2)
        for size in sink.writes:
            self.assertEqual(size % ts.PACKET_SIZE, 0)
            self.assertLessEqual(size, CHUNK)
        paced = sink.writes[burst_writes:]
        self.assertGreater(min(paced), 4096)

    def test_stream_is_valid_ts_across_ticks(self) -> None:
        """The paced stream is aligned from byte 0, CC-clean, starts with PSI and a keyframe, and has a RAP each GOP."""
        sink = FakeSink()
        self.sender(sink)
        self.run_for(4)
        checker = sink.checker()
        self.assertTrue(checker.aligned_at_start)
        self.assertEqual(checker.cc_errors, 0)
        self.assertTrue(checker.psi_before_first_video)
        self.assertTrue(checker.first_video_random_access)
        self.assertGreaterEqual(len(checker.random_access_points), 6)
        for interval in checker.random_access_intervals():
            self.assertAlmostEqual(interval, 1.0, places=6)

    def test_late_reader_starts_at_a_gop_about_burst_behind_live(self) -> None:
        """A reader joining a 10 s old session starts on a keyframe and gets between burst and burst+gop seconds at once."""
        self.clock.advance(10.3)
        sink = FakeSink()
        self.sender(sink)
        self.assertGreaterEqual(self.seconds_of(sink), 2.0)
        self.assertLessEqual(self.seconds_of(sink), 3.0)
        first = bytes(sink.data[: 3 * ts.PACKET_SIZE])
        self.assertEqual(ts.packet_pid(first), ts.PAT_PID)
        self.assertTrue(sink.checker().first_video_random_access)


class BackpressureTests(SenderTestCase):
    def test_a_full_transport_pauses_the_sender(self) -> None:
        """When the transport pauses it, the sender writes nothing more, even as time passes, until resumed."""
        sink = FakeSink(high_water=64 * 1024)
        sender = self.sender(sink)
        self.assertTrue(sender.paused)
        self.assertLessEqual(len(sink.data), 2 * CHUNK)
        held = len(sink.data)
        self.run_for(1)
        self.assertEqual(len(sink.data), held)
        self.assertEqual(self.clock.getDelayedCalls(), [d for d in self.clock.getDelayedCalls() if d.active()])
        for _ in range(200):
            if not sender.paused:
                break
            sink.drain()
        self.assertGreater(len(sink.data), held)
        self.assertEqual(sink.checker().cc_errors, 0)

    def test_burst_drains_at_reader_speed(self) -> None:
        """A slow reader gets the whole burst, chunk by chunk, never more than one chunk beyond its buffer."""
        sink = FakeSink(high_water=64 * 1024)
        self.sender(sink)
        while sink.producer.paused:
            self.assertLessEqual(sink.buffered, 64 * 1024 + CHUNK)
            sink.drain()
        self.assertAlmostEqual(self.seconds_of(sink), 2.0, delta=0.01)

    def test_lost_reader_stops_everything(self) -> None:
        """When the reader goes away the sender stops and leaves no timer behind."""
        sink = FakeSink()
        sender = self.sender(sink)
        sender.stopProducing()
        self.assertEqual(self.successResultOf(sender.done), "lost")
        self.assertEqual(self.clock.getDelayedCalls(), [c for c in self.clock.getDelayedCalls()
                                                        if c.func.__qualname__.startswith("Session")])
        before = len(sink.data)
        self.run_for(1)
        self.assertEqual(len(sink.data), before)


class SessionEndTests(SenderTestCase):
    def test_stop_ends_the_body_cleanly(self) -> None:
        """A stopped session's reader gets a clean end of body and a closed connection."""
        sink = FakeSink()
        sender = self.sender(sink)
        self.session.add_hold(_SenderHold(sender))
        self.engine.stop(self.session)
        self.assertEqual(sink.finished, True)
        self.assertFalse(sink.aborted)
        self.assertEqual(self.successResultOf(sender.done), "stopped")

    def test_superseded_reader_is_reset(self) -> None:
        """A superseded session's reader is cut with a reset."""
        sink = FakeSink()
        sender = self.sender(sink)
        self.session.add_hold(_SenderHold(sender))
        self.engine.start_session(A)
        self.assertTrue(sink.aborted)
        self.assertEqual(self.successResultOf(sender.done), "superseded")

    def test_segment_sender_sends_its_range_and_finishes(self) -> None:
        """A segment sender sends exactly its packets, as fast as allowed, then ends the body."""
        sink = FakeSink()
        first = self.template.packets * 2
        self.sender(sink, progressive=False, first=first, end=first + self.template.packets)
        self.assertEqual(len(sink.data), self.template.packets * ts.PACKET_SIZE)
        self.assertEqual(bytes(sink.data), self.template.read(first, self.template.packets))
        self.assertEqual(sink.finished, False)
        self.assertEqual(self.engine.counters.snapshot()["hls_bytes_sent"], len(sink.data))


class _SenderHold:
    content = A
    session = None

    def __init__(self, sender: StreamSender) -> None:
        self.sender = sender

    def abort(self) -> None:
        self.sender.sink.abort()

    def session_ended(self, reason: str) -> None:
        self.sender.session_ended(reason)


class StreamFaultTests(SenderTestCase):
    def test_cut_after_bytes_is_exact(self) -> None:
        """cut after_bytes=N resets the connection after exactly N more bytes."""
        self.engine.set_fault("cut", content=A, after_bytes=100_000)
        sink = FakeSink()
        sender = self.sender(sink)
        self.assertEqual(len(sink.data), 100_000)
        self.assertTrue(sink.aborted)
        self.assertEqual(self.successResultOf(sender.done), "cut")
        self.assertEqual(self.engine.counters.snapshot()["faults_triggered"], {"cut": 1})

    def test_cut_set_mid_stream_counts_from_then(self) -> None:
        """A cut set while streaming counts its bytes from the moment it is seen."""
        sink = FakeSink()
        self.sender(sink)
        already = len(sink.data)
        self.engine.set_fault("cut", after_bytes=50_000)
        self.run_for(1)
        self.assertEqual(len(sink.data), already + 50_000)
        self.assertTrue(sink.aborted)

    def test_cut_after_ms_with_clean_close(self) -> None:
        """cut after_ms with how=close ends the body cleanly after that long."""
        self.engine.set_fault("cut", content=A, after_ms=500, how="close")
        sink = FakeSink()
        self.sender(sink)
        self.run_for(0.44)
        self.assertIsNone(sink.finished)
        self.run_for(0.12)
        self.assertEqual(sink.finished, True)
        self.assertFalse(sink.aborted)

    def test_gap_pauses_then_resumes_without_continuity_errors(self) -> None:
        """A gap stops the bytes for its length, then the stream resumes with continuity intact."""
        sink = FakeSink()
        self.sender(sink)
        self.run_for(1)
        self.engine.set_fault("gap", ms=1000)
        self.clock.advance(0.04)
        during = len(sink.data)
        self.run_for(0.9)
        self.assertEqual(len(sink.data), during)
        self.run_for(1.2)
        self.assertGreater(len(sink.data), during)
        self.assertEqual(sink.checker().cc_errors, 0)
        self.assertEqual(self.engine.counters.snapshot()["faults_triggered"], {"gap": 1})

    def test_gap_happens_once_per_session(self) -> None:
        """Each session starves once per gap fault, even though the fault stays set."""
        self.engine.set_fault("gap", ms=200, after_ms=500)
        sink = FakeSink()
        self.sender(sink)
        self.run_for(3)
        self.assertEqual(self.engine.counters.snapshot()["faults_triggered"], {"gap": 1})
        self.assertAlmostEqual(self.seconds_of(sink), 2 + 3 - 0.2, delta=0.1)

    def test_silence_sends_headers_only_while_set(self) -> None:
        """With silence the headers go out but no byte follows until the fault is cleared."""
        self.engine.set_fault("silence", content=A)
        sink = FakeSink()
        self.sender(sink)
        self.run_for(1)
        self.assertTrue(sink.headers_sent)
        self.assertEqual(len(sink.data), 0)
        self.engine.clear_faults("silence")
        self.run_for(0.1)
        self.assertGreater(len(sink.data), 0)
        self.assertTrue(sink.checker().aligned_at_start)

    def test_stall_holds_the_stream(self) -> None:
        """An engine stall freezes open streams; they continue when it clears."""
        sink = FakeSink()
        self.sender(sink)
        self.engine.set_fault("stall")
        held = len(sink.data)
        self.run_for(1)
        self.assertEqual(len(sink.data), held)
        self.engine.clear_faults("stall")
        self.run_for(0.1)
        self.assertGreater(len(sink.data), held)

    def test_no_peers_starves_a_playing_session(self) -> None:
        """no_peers set on a playing session stops its data and freezes livepos."""
        sink = FakeSink()
        self.sender(sink)
        self.engine.set_fault("no_peers", content=A)
        held = len(sink.data)
        self.run_for(1)
        self.assertEqual(len(sink.data), held)
        self.assertEqual(self.session.stat(self.clock.seconds())["peers"], 0)

    def test_misaligned_junk_comes_before_the_first_packet(self) -> None:
        """misaligned junk puts N bytes without a sync byte before the first packet."""
        self.engine.set_fault("misaligned", content=A, bytes=100)
        sink = FakeSink()
        self.sender(sink)
        self.assertNotEqual(sink.data[0], 0x47)
        self.assertEqual(sink.data[100], 0x47)
        checker = sink.checker()
        self.assertFalse(checker.aligned_at_start)
        self.assertEqual(checker.skipped_bytes, 100)
        self.assertEqual(checker.cc_errors, 0)

    def test_misaligned_mid_packet_starts_inside_a_packet(self) -> None:
        """misaligned mid_packet drops the first N bytes, so the body starts inside a packet."""
        self.engine.set_fault("misaligned", mode="mid_packet", bytes=50)
        sink = FakeSink()
        self.sender(sink)
        self.assertNotEqual(sink.data[0], 0x47)
        self.assertEqual(sink.data[188 - 50], 0x47)
        self.assertFalse(sink.checker().aligned_at_start)
