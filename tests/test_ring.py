"""Tests for acetwist.ring: resync, PSI, keyframe blocks, cutting, retention, segments."""

from __future__ import annotations

import struct
from typing import Dict, List, Optional

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from acetwist import ts
from acetwist.interfaces import Block
from acetwist.ring import TSRing

P = ts.PACKET_SIZE
PMT, VIDEO, AUDIO = 0x1000, 0x100, 0x101


class Stream:
    """
    A synthetic live stream with correct continuity counters: every GOP is
    PAT, PMT, a random-access video packet, then numbered video/audio packets.
    """

    def __init__(self, video: int = VIDEO, audio: int = AUDIO, pmt: int = PMT) -> None:
        self.video, self.audio, self.pmt_pid = video, audio, pmt
        self._cc: Dict[int, int] = {}
        self.serial = 0

    def _next_cc(self, pid: int) -> int:
        value = self._cc.get(pid, 0)
        self._cc[pid] = (value + 1) & 0x0F
        return value

    def _payload(self, size: int) -> bytes:
        self.serial += 1
        return struct.pack(">I", self.serial) + bytes([self.serial & 0xFF]) * (size - 4)

    def pat(self) -> bytes:
        return ts.make_pat(self.pmt_pid, cc=self._next_cc(ts.PAT_PID))

    def pmt(self) -> bytes:
        streams = [(ts.STREAM_TYPE_H264, self.video), (ts.STREAM_TYPE_AAC_ADTS, self.audio)]
        return ts.make_pmt(self.pmt_pid, self.video, streams, cc=self._next_cc(self.pmt_pid))

    def rap(self, pid: Optional[int] = None) -> bytes:
        pid = self.video if pid is None else pid
        return ts.make_packet(pid, self._payload(100), cc=self._next_cc(pid), pusi=True, random_access=True)

    def video_packet(self) -> bytes:
        return ts.make_packet(self.video, self._payload(184), cc=self._next_cc(self.video))

    def audio_packet(self) -> bytes:
        return ts.make_packet(self.audio, self._payload(184), cc=self._next_cc(self.audio))

    def filler(self, count: int) -> bytes:
        """C{count} video/audio packets without a random-access point."""
        return b"".join(self.audio_packet() if i % 5 == 4 else self.video_packet() for i in range(count))

    def gop(self, packets: int = 40) -> bytes:
        """PAT, PMT, a random-access video packet, then C{packets - 3} more packets."""
        return self.pat() + self.pmt() + self.rap() + self.filler(packets - 3)


def packets_of(data: bytes) -> List[bytes]:
    return list(ts.split_packets(data))


class Recorder:
    """Collects the blocks a ring announces."""

    def __init__(self) -> None:
        self.blocks: List[Block] = []

    def __call__(self, block: Block) -> None:
        self.blocks.append(block)

    def data(self) -> bytes:
        return b"".join(b.data for b in self.blocks)


def make_ring(clock: Optional[Clock] = None, **kwargs: object) -> tuple[TSRing, Recorder, Clock]:
    clock = clock or Clock()
    recorder = Recorder()
    ring = TSRing(clock, on_block=recorder, **kwargs)  # type: ignore[arg-type]
    return ring, recorder, clock


class ResyncTests(SynchronousTestCase):
    def test_aligned_stream_passes_through_unchanged(self) -> None:
        """An aligned stream comes out byte for byte, in whole packets, with no resync or skipped byte."""
        stream = Stream()
        data = stream.gop(500) + stream.gop(500)
        ring, recorder, _ = make_ring()
        ring.feed(data)
        ring.flush()
        self.assertEqual(recorder.data(), data)
        self.assertTrue(all(ts.is_aligned(b.data) for b in recorder.blocks))
        self.assertEqual((ring.resyncs, ring.skipped_bytes, ring.bytes_in), (0, 0, len(data)))

    def test_leading_junk_is_skipped_and_counted(self) -> None:
        """Junk before the first sync (including stray 0x47 bytes) is dropped and counted, and output starts aligned."""
        stream = Stream()
        junk = b"\x47\x00\x47junk" * 30
        data = stream.gop(100)
        ring, recorder, _ = make_ring()
        ring.feed(junk + data)
        ring.flush()
        self.assertEqual(recorder.data(), data)
        self.assertEqual(ring.skipped_bytes, len(junk))
        self.assertEqual(ring.resyncs, 0)

    def test_junk_between_packets_is_a_counted_resync(self) -> None:
        """Junk spliced between two packets costs a resync and its bytes, and every packet around it survives."""
        stream = Stream()
        before, after = stream.gop(50), stream.filler(50)
        junk = bytes(range(1, 77))
        ring, recorder, _ = make_ring()
        ring.feed(before + junk + after)
        ring.flush()
        self.assertEqual(recorder.data(), before + after)
        self.assertEqual(ring.resyncs, 1)
        self.assertEqual(ring.skipped_bytes, len(junk))

    def test_truncated_packet_costs_one_packet_and_a_resync(self) -> None:
        """A packet cut short upstream costs one packet's worth of bytes and a resync, and the output stays aligned."""
        stream = Stream()
        before, broken, after = stream.gop(20), stream.video_packet()[:100], stream.filler(20)
        ring, recorder, _ = make_ring()
        ring.feed(before + broken + after)
        ring.flush()
        out = recorder.data()
        self.assertTrue(ts.is_aligned(out))
        # the short packet swallows the head of the next one; the boundary after them is junk
        self.assertEqual(out, before + broken + after[: P - 100] + after[P:])
        self.assertEqual((ring.resyncs, ring.skipped_bytes), (1, 100))

    def test_misaligned_pieces_split_mid_packet_reassemble(self) -> None:
        """Bytes fed in odd-sized pieces that split packets anywhere come out as the same aligned packets."""
        stream = Stream()
        data = stream.gop(300) + stream.gop(300)
        ring, recorder, _ = make_ring()
        sizes = [1, 7, 187, 188, 189, 5000, 3, 376, 377, 64]
        offset, i = 0, 0
        while offset < len(data):
            ring.feed(data[offset : offset + sizes[i % len(sizes)]])
            offset += sizes[i % len(sizes)]
            i += 1
        ring.flush()
        self.assertEqual(recorder.data(), data)
        self.assertEqual(ring.resyncs, 0)

    def test_byte_at_a_time_with_junk_finds_sync(self) -> None:
        """Fed one byte at a time after junk, the ring still confirms sync and keeps every packet."""
        stream = Stream()
        junk = b"\x00\x47" * 100
        data = stream.gop(10)
        ring, recorder, _ = make_ring()
        for i in range(len(junk + data)):
            ring.feed((junk + data)[i : i + 1])
        ring.flush()
        self.assertEqual(recorder.data(), data)
        self.assertEqual(ring.skipped_bytes, len(junk))

    def test_checker_accepts_output_of_a_noisy_feed(self) -> None:
        """After junk and a resync, the ring's output is aligned from byte 0 for an independent checker."""
        stream = Stream()
        data = b"garbage" + stream.gop(60) + b"\xff" * 33 + stream.filler(60)
        ring, recorder, _ = make_ring()
        ring.feed(data)
        ring.flush()
        checker = ts.TSChecker()
        checker.feed(recorder.data())
        self.assertTrue(checker.aligned_at_start)
        self.assertEqual((checker.resyncs, checker.trailing_bytes), (0, 0))

    def test_bytearray_input_is_copied(self) -> None:
        """A caller reusing its buffer after feed does not change what the ring holds."""
        stream = Stream()
        data = stream.gop(10)
        piece = bytearray(data)
        ring, recorder, _ = make_ring()
        ring.feed(piece)  # type: ignore[arg-type]
        piece[:] = b"\x00" * len(piece)
        ring.flush()
        self.assertEqual(recorder.data(), data)


class PSIAndKeyframeTests(SynchronousTestCase):
    def test_learns_pmt_and_video_pids(self) -> None:
        """The PMT PID comes from the PAT and the video PID from the PMT."""
        ring, _, _ = make_ring()
        ring.feed(Stream(video=0x222, pmt=0x333).gop(10))
        self.assertEqual((ring.pmt_pid, ring.video_pid), (0x333, 0x222))

    def test_keyframe_block_begins_with_the_random_access_packet(self) -> None:
        """A random-access packet mid-block cuts the pending block, so the next block begins with it."""
        stream = Stream()
        gop1, gop2 = stream.gop(50), stream.gop(50)
        ring, recorder, _ = make_ring()
        ring.feed(gop1 + gop2)
        ring.flush()
        starts = [ts.random_access(b.data) for b in recorder.blocks]
        self.assertEqual(starts, [b.keyframe for b in recorder.blocks])
        keyframes = [b for b in recorder.blocks if b.keyframe]
        self.assertEqual(len(keyframes), 2)
        self.assertEqual(keyframes[0].data, gop1[2 * P :] + gop2[: 2 * P])
        self.assertEqual(keyframes[1].data, gop2[2 * P :])
        self.assertEqual(ring.keyframes, 2)

    def test_keyframe_psi_is_the_exact_pat_and_pmt_seen_before_it(self) -> None:
        """A keyframe block's psi is the raw PAT and PMT packets seen just before it, continuity counters included."""
        stream = Stream()
        data = stream.gop(30) + stream.gop(30)
        pkts = packets_of(data)
        ring, recorder, _ = make_ring()
        ring.feed(data)
        ring.flush()
        keyframes = [b for b in recorder.blocks if b.keyframe]
        self.assertEqual(keyframes[0].psi, pkts[0] + pkts[1])
        self.assertEqual(keyframes[1].psi, pkts[30] + pkts[31])
        self.assertTrue(all(b.psi == b"" for b in recorder.blocks if not b.keyframe))

    def test_psi_plus_keyframe_block_decodes_cleanly(self) -> None:
        """A joiner given psi + data of a keyframe block and everything after sees PAT, PMT, a RAP and no CC error."""
        stream = Stream()
        data = b"".join(stream.gop(80) for _ in range(4))
        ring, recorder, _ = make_ring(block_size=10 * P)
        ring.feed(data)
        ring.flush()
        start = [b for b in recorder.blocks if b.keyframe][2]
        checker = ts.TSChecker()
        checker.feed(start.psi + b"".join(b.data for b in recorder.blocks[start.seq :]))
        self.assertEqual((checker.pat_seen_at, checker.pmt_seen_at, checker.first_video_packet), (0, 1, 2))
        self.assertTrue(checker.first_video_random_access)
        self.assertEqual(checker.cc_errors, 0)

    def test_random_access_on_another_pid_is_not_a_keyframe_once_video_is_known(self) -> None:
        """With the video PID known, a random-access flag on the audio PID does not cut a keyframe block."""
        stream = Stream()
        data = stream.gop(20) + stream.rap(AUDIO) + stream.filler(20)
        ring, recorder, _ = make_ring()
        ring.feed(data)
        ring.flush()
        self.assertEqual([b.keyframe for b in recorder.blocks], [False, True])

    def test_random_access_on_any_pid_counts_before_the_pmt(self) -> None:
        """Before any PMT has named the video PID, a random-access packet on any PID starts a keyframe block."""
        stream = Stream()
        data = stream.filler(5) + stream.rap(AUDIO) + stream.filler(5)
        ring, recorder, _ = make_ring()
        ring.feed(data)
        ring.flush()
        self.assertEqual([b.keyframe for b in recorder.blocks], [False, True])
        self.assertEqual(recorder.blocks[1].psi, b"")

    def test_pids_learnt_mid_piece_apply_to_the_rest_of_it(self) -> None:
        """A PAT and PMT that arrive in the same piece as the first keyframe already decide what a keyframe is."""
        stream = Stream()
        data = stream.pat() + stream.pmt() + stream.filler(3) + stream.rap(AUDIO) + stream.rap() + stream.filler(3)
        ring, recorder, _ = make_ring()
        ring.feed(data)
        ring.flush()
        keyframes = [b for b in recorder.blocks if b.keyframe]
        self.assertEqual(len(keyframes), 1)
        self.assertEqual(ts.packet_pid(keyframes[0].data), VIDEO)

    def test_keyframe_at_the_start_of_a_piece_after_a_split_packet(self) -> None:
        """A random-access packet split across two pieces still starts its own block with psi."""
        stream = Stream()
        head = stream.gop(10)
        rap = stream.pat() + stream.pmt() + stream.rap()
        tail = stream.filler(10)
        cut = len(head) + 2 * P + 50
        data = head + rap + tail
        ring, recorder, _ = make_ring()
        ring.feed(data[:cut])
        ring.feed(data[cut:])
        ring.flush()
        last = recorder.blocks[-1]
        self.assertTrue(last.keyframe)
        self.assertEqual(last.data, rap[2 * P :] + tail)
        self.assertEqual(last.psi, rap[: 2 * P])

    def test_pmt_pid_change_is_followed(self) -> None:
        """A new PAT naming another PMT PID is followed, and that PMT's video PID is learnt."""
        ring, _, _ = make_ring()
        ring.feed(Stream().gop(10))
        ring.feed(Stream(video=0x300, pmt=0x400).gop(10))
        self.assertEqual((ring.pmt_pid, ring.video_pid), (0x400, 0x300))


class CuttingTests(SynchronousTestCase):
    def test_cut_by_size(self) -> None:
        """Without keyframes, blocks are cut at exactly block_size bytes and the remainder waits."""
        stream = Stream()
        data = stream.filler(25)
        ring, recorder, _ = make_ring(block_size=10 * P)
        ring.feed(data)
        self.assertEqual([len(b.data) for b in recorder.blocks], [10 * P, 10 * P])
        ring.flush()
        self.assertEqual([len(b.data) for b in recorder.blocks], [10 * P, 10 * P, 5 * P])
        self.assertEqual(recorder.data(), data)

    def test_block_size_is_rounded_down_to_whole_packets(self) -> None:
        """A block size that is not a multiple of 188 is rounded down to whole packets."""
        ring, recorder, _ = make_ring(block_size=10 * P + 100)
        ring.feed(Stream().filler(20))
        self.assertEqual([len(b.data) for b in recorder.blocks], [10 * P, 10 * P])

    def test_cut_by_flush_timer(self) -> None:
        """A partial block is cut flush_interval after its first packet even if nothing more arrives."""
        stream = Stream()
        ring, recorder, clock = make_ring(flush_interval=0.05)
        ring.feed(stream.filler(3))
        clock.advance(0.03)
        ring.feed(stream.filler(2))
        self.assertEqual(recorder.blocks, [])
        clock.advance(0.02)
        self.assertEqual([len(b.data) for b in recorder.blocks], [5 * P])
        self.assertEqual(recorder.blocks[0].created, 0.05)

    def test_flush_timer_restarts_with_the_next_block(self) -> None:
        """After a cut the timer is re-armed by the next block's first packet, not by the old one."""
        stream = Stream()
        ring, recorder, clock = make_ring(block_size=4 * P, flush_interval=0.05)
        ring.feed(stream.filler(4))
        self.assertEqual(len(recorder.blocks), 1)
        clock.advance(0.04)
        ring.feed(stream.filler(1))
        clock.advance(0.04)
        self.assertEqual(len(recorder.blocks), 1)
        clock.advance(0.01)
        self.assertEqual(len(recorder.blocks), 2)
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_partial_packet_is_not_flushed(self) -> None:
        """The flush timer cuts only whole packets; a carried partial packet waits for its rest."""
        stream = Stream()
        data = stream.filler(3)
        ring, recorder, clock = make_ring()
        ring.feed(data[: 2 * P + 10])
        clock.advance(1)
        self.assertEqual(recorder.data(), data[: 2 * P])
        ring.feed(data[2 * P + 10 :])
        ring.flush()
        self.assertEqual(recorder.data(), data)

    def test_blocks_get_consecutive_seqs_and_creation_times(self) -> None:
        """Each block gets the next seq, the current segment and the clock time of its cut."""
        ring, recorder, clock = make_ring(block_size=2 * P)
        clock.advance(7)
        ring.feed(Stream().filler(6))
        self.assertEqual([(b.seq, b.segment, b.created) for b in recorder.blocks], [(0, 0, 7.0), (1, 0, 7.0), (2, 0, 7.0)])
        self.assertEqual((ring.first_seq, ring.next_seq, len(ring), ring.blocks_cut), (0, 3, 3, 3))

    def test_on_block_sees_the_block_already_in_the_ring(self) -> None:
        """When on_block runs, the block is readable from the ring and retention has been applied."""
        seen = []
        clock = Clock()
        ring = TSRing(clock, block_size=2 * P, max_bytes=4 * P)

        def on_block(block: Block) -> None:
            seen.append((ring.get(block.seq) is block, ring.first_seq, ring.total_bytes))

        ring.on_block = on_block
        ring.feed(Stream().filler(6))
        self.assertEqual(seen, [(True, 0, 2 * P), (True, 0, 4 * P), (True, 1, 4 * P)])

    def test_a_failing_on_block_does_not_break_ingest(self) -> None:
        """An exception in on_block is logged and the ring keeps cutting blocks."""
        clock = Clock()

        def boom(block: Block) -> None:
            raise RuntimeError("boom")

        ring = TSRing(clock, block_size=2 * P, on_block=boom)
        ring.feed(Stream().filler(6))
        self.assertEqual(len(ring), 3)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3)

    def test_close_cancels_the_timer_and_ignores_feeds(self) -> None:
        """After close no timer is pending, fed bytes are ignored, and every kept block is released."""
        ring, recorder, clock = make_ring(block_size=2 * P)
        ring.feed(Stream().filler(3))
        ring.close()
        self.assertEqual(clock.getDelayedCalls(), [])
        ring.feed(Stream().filler(10))
        clock.advance(1)
        self.assertEqual(len(recorder.blocks), 1)
        self.assertIsNone(ring.get(0))
        self.assertEqual((len(ring), ring.total_bytes, ring.latest_keyframe()), (0, 0, None))


class RetentionTests(SynchronousTestCase):
    def test_trim_by_bytes_is_strict(self) -> None:
        """Past max_bytes the oldest blocks go, even the only keyframe block."""
        stream = Stream()
        ring, _, _ = make_ring(block_size=10 * P, max_bytes=25 * P)
        ring.feed(stream.pat() + stream.pmt() + stream.rap() + stream.filler(49))
        self.assertEqual((ring.first_seq, ring.next_seq, ring.total_bytes), (4, 6, 20 * P))
        self.assertIsNone(ring.latest_keyframe())
        self.assertIsNone(ring.get(3))

    def test_trim_by_age_keeps_the_latest_keyframe_and_after(self) -> None:
        """Blocks older than max_seconds go, except the newest keyframe block and everything after it."""
        stream = Stream()
        ring, _, clock = make_ring(block_size=10 * P, max_seconds=5)
        ring.feed(stream.gop(20))  # seq 0: PAT+PMT, 1: keyframe, 2
        ring.flush()
        clock.advance(3)
        ring.feed(stream.gop(20))  # seq 3: PAT+PMT, 4: keyframe, 5
        ring.flush()
        clock.advance(3)
        ring.feed(stream.filler(10))  # seq 6: the first gop is 6 s old now
        self.assertEqual(ring.first_seq, 3)
        clock.advance(30)
        ring.feed(stream.filler(10))  # everything is old, but keyframe 4 stays
        self.assertEqual(ring.first_seq, 4)
        self.assertEqual(ring.latest_keyframe(), ring.get(4))
        self.assertEqual(len(ring), 4)

    def test_trim_by_age_without_keyframes_drops_everything_old(self) -> None:
        """With no keyframe block at all, age trimming drops every block older than max_seconds."""
        ring, _, clock = make_ring(block_size=10 * P, max_seconds=5)
        ring.feed(Stream().filler(30))
        clock.advance(6)
        ring.feed(Stream().filler(10))
        self.assertEqual((ring.first_seq, len(ring)), (3, 1))

    def test_keyframe_index_and_lag(self) -> None:
        """next_keyframe finds the first keyframe at or after a seq, and bytes_from measures the rest of the ring."""
        stream = Stream()
        ring, _, _ = make_ring(block_size=10 * P)
        for _ in range(3):
            ring.feed(stream.gop(20))
            ring.flush()
        # each gop: [PAT, PMT] + [keyframe .. 10] + [8 packets]
        self.assertEqual([ring.get(s).keyframe for s in range(ring.next_seq)], [False, True, False] * 3)  # type: ignore[union-attr]
        self.assertEqual(ring.next_keyframe(0).seq, 1)  # type: ignore[union-attr]
        self.assertEqual(ring.next_keyframe(2).seq, 4)  # type: ignore[union-attr]
        self.assertEqual(ring.next_keyframe(7).seq, 7)  # type: ignore[union-attr]
        self.assertIsNone(ring.next_keyframe(8))
        self.assertEqual(ring.latest_keyframe().seq, 7)  # type: ignore[union-attr]
        self.assertEqual(ring.bytes_from(0), ring.total_bytes)
        self.assertEqual(ring.bytes_from(7), 18 * P)
        self.assertEqual(ring.bytes_from(9), 0)
        self.assertEqual(ring.total_bytes, 60 * P)

    def test_bytes_from_an_evicted_seq_is_everything_kept(self) -> None:
        """A seq older than the ring's oldest block lags by every kept byte."""
        ring, _, _ = make_ring(block_size=2 * P, max_bytes=4 * P)
        ring.feed(Stream().filler(10))
        self.assertEqual(ring.first_seq, 3)
        self.assertEqual(ring.bytes_from(0), 4 * P)
        self.assertIsNone(ring.next_keyframe(0))


class SegmentTests(SynchronousTestCase):
    def test_discontinuity_starts_a_new_segment_and_drops_the_partial_packet(self) -> None:
        """After a discontinuity the partial packet is gone, whole pending packets end the old segment, and new blocks are in the next segment."""
        old, new = Stream(), Stream()
        ring, recorder, _ = make_ring()
        first = old.gop(10)
        ring.feed(first + old.video_packet()[:90])
        ring.discontinuity()
        fresh = new.gop(10)
        ring.feed(fresh)
        ring.flush()
        self.assertEqual(b"".join(b.data for b in recorder.blocks if b.segment == 0), first)
        self.assertEqual(b"".join(b.data for b in recorder.blocks if b.segment == 1), fresh)
        self.assertEqual(ring.resyncs, 0)
        self.assertEqual(ring.skipped_bytes, 0)

    def test_new_segment_keyframe_carries_only_the_new_upstreams_psi(self) -> None:
        """The first keyframe block after a discontinuity carries the new upstream's PAT/PMT, never the old ones."""
        old, new = Stream(), Stream()
        ring, recorder, _ = make_ring()
        ring.feed(old.gop(10))
        ring.discontinuity()
        ring.feed(new.filler(3) + new.rap() + new.filler(3))  # a keyframe before any PAT
        psi = new.pat() + new.pmt()
        ring.feed(psi + new.rap() + new.filler(3))
        ring.flush()
        keyframes = [b for b in recorder.blocks if b.keyframe and b.segment == 1]
        self.assertEqual([k.psi for k in keyframes], [b"", psi])

    def test_discontinuity_after_junk_resyncs_freshly(self) -> None:
        """Junk left unsynced before a discontinuity is not glued to the new upstream's bytes."""
        ring, recorder, _ = make_ring()
        ring.feed(b"\x47" + b"\x00" * 200)
        ring.discontinuity()
        data = Stream().gop(10)
        ring.feed(data)
        ring.flush()
        self.assertEqual(recorder.data(), data)

    def test_append_block_assigns_seq_segment_and_time(self) -> None:
        """An appended mirror block gets the ring's seq, segment and clock, and is indexed as a keyframe."""
        stream = Stream()
        ring, recorder, clock = make_ring()
        clock.advance(4)
        psi = stream.pat() + stream.pmt()
        data = stream.rap() + stream.filler(9)
        first = ring.append_block(data, True, psi)
        ring.discontinuity()
        second = ring.append_block(stream.filler(2), False, b"")
        self.assertEqual(first, Block(seq=0, data=data, keyframe=True, psi=psi, segment=0, created=4.0))
        self.assertEqual((second.seq, second.segment, second.keyframe), (1, 1, False))
        self.assertEqual(recorder.blocks, [first, second])
        self.assertEqual(ring.latest_keyframe(), first)
        self.assertEqual((ring.blocks_cut, ring.keyframes, ring.total_bytes), (2, 1, 12 * P))

    def test_append_block_refuses_partial_packets(self) -> None:
        """A mirror block that is not whole packets is refused."""
        ring, _, _ = make_ring()
        self.assertRaises(ValueError, ring.append_block, b"\x47" * 100, False, b"")
        self.assertRaises(ValueError, ring.append_block, b"", False, b"")


class KeyframeFallbackTests(SynchronousTestCase):
    def gop_without_rai(self, stream: Stream) -> bytes:
        """A GOP whose first video packet starts a payload but has no random-access flag."""
        start = ts.make_packet(stream.video, stream._payload(100), cc=stream._next_cc(stream.video), pusi=True)
        return stream.pat() + stream.pmt() + start + stream.filler(37)

    def test_payload_start_stands_in_when_the_muxer_never_flags_random_access(self) -> None:
        """Without any random-access flag, a video payload start becomes a keyframe once the fallback delay has passed."""
        ring, recorder, clock = make_ring(keyframe_fallback=3.0)
        stream = Stream()
        for second in range(6):
            ring.feed(self.gop_without_rai(stream))
            clock.advance(1.0)
        keyframes = [b for b in recorder.blocks if b.keyframe]
        self.assertEqual(len(keyframes), 1)
        self.assertTrue(ts.payload_unit_start(keyframes[0].data))
        self.assertEqual(ts.packet_pid(keyframes[0].data), VIDEO)
        self.assertTrue(keyframes[0].psi)

    def test_real_random_access_flags_disable_the_fallback(self) -> None:
        """Once a random-access flag is seen, payload starts never count as keyframes, however long the GOP."""
        ring, recorder, clock = make_ring(keyframe_fallback=3.0)
        stream = Stream()
        ring.feed(stream.gop())
        for _ in range(8):
            clock.advance(1.0)
            ring.feed(self.gop_without_rai(stream))
        self.assertEqual(len([b for b in recorder.blocks if b.keyframe]), 1)
        self.assertTrue(ring.random_access_seen)
