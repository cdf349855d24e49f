"""Tests for acetwist.hls: stream timing, the segmenter (owner and follower) and the media playlist."""

from __future__ import annotations

import re
from typing import List

import attr
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from acetwist import ts
from acetwist.hls.playlist import media_playlist
from acetwist.hls.segmenter import Segment, Segmenter
from acetwist.hls.timing import TIMESTAMP_MODULUS, elapsed, keyframe_time, pes_pts
from acetwist.interfaces import Block, SegmentMark
from acetwist.ring import TSRing
from acetwist.sim.tsgen import VIDEO_PID, gop_template

BITRATE = 2_000_000


class Channel:
    """A simulated stream, GOP by GOP, through a real TS ring on a task clock, into a leading segmenter."""

    def __init__(self, gop: float = 1.0, target: float = 2.0, keep: int = 10) -> None:
        self.clock = Clock()
        self.template = gop_template(BITRATE, gop)
        self.blocks: List[Block] = []
        self.marked: List[Block] = []
        self.ring = TSRing(self.clock, block_size=64 * 1024, max_seconds=60, on_block=self._cut)
        self.segmenter = Segmenter(target, keep)
        self.next_packet = 0

    def _cut(self, block: Block) -> None:
        self.blocks.append(block)
        mark = self.segmenter.lead(block)
        self.marked.append(attr.evolve(block, mark=mark) if mark is not None else block)

    def gops(self, count: int) -> None:
        """Feed C{count} GOPs, paced by the clock, and cut what is pending."""
        for _ in range(count):
            self.ring.feed(self.template.read(self.next_packet, self.template.packets))
            self.next_packet += self.template.packets
            self.clock.advance(self.template.gop)
        self.ring.flush()


def follower_of(blocks: List[Block], target: float = 2.0) -> Segmenter:
    """A follower's segmenter fed the owner's marked blocks through its own ring, as the mirror does."""
    clock = Clock()
    segmenter = Segmenter(target, 10)
    ring = TSRing(clock, max_seconds=60, on_block=segmenter.follow)
    for block in blocks:
        ring.append_block(block.data, block.keyframe, block.psi, block.mark)
    return segmenter


def joined(segment: Segment) -> bytes:
    return b"".join(segment.parts)


class TimingTests(SynchronousTestCase):
    def test_a_keyframe_block_is_timed_by_the_pts_of_its_first_packet(self) -> None:
        """The first packet of the simulator's GOP starts a video PES whose PTS is the keyframe's time."""
        template = gop_template(BITRATE, 1.0)
        second = template.read(template.packets, template.packets)
        first_video = next(p for p in ts.split_packets(second) if ts.random_access(p))
        self.assertEqual(pes_pts(first_video), keyframe_time(first_video))
        self.assertIsNotNone(keyframe_time(first_video))

    def test_without_a_pes_header_the_pcr_times_the_block(self) -> None:
        """A keyframe packet without a PES start falls back to its PCR, in 90 kHz ticks."""
        packet = ts.make_packet(VIDEO_PID, random_access=True, pcr=27_000_000 * 3)
        self.assertEqual(keyframe_time(packet), 90_000 * 3)

    def test_elapsed_time_crosses_the_wrap_of_the_33_bit_clock(self) -> None:
        """Two seconds that straddle 2**33 ticks are still two seconds."""
        self.assertEqual(elapsed(TIMESTAMP_MODULUS - 90_000, 90_000), 2.0)


class LeadingTests(SynchronousTestCase):
    def test_segments_are_whole_gops_that_start_with_pat_pmt_and_a_keyframe(self) -> None:
        """Each segment is the PAT and PMT, then a random-access video packet, then whole GOPs."""
        channel = Channel(gop=1.0, target=2.0)
        channel.gops(9)
        segments = list(channel.segmenter.segments.values())
        self.assertEqual(len(segments), 4)
        for segment in segments:
            data = joined(segment)
            packets = list(ts.split_packets(data))
            self.assertEqual(ts.packet_pid(packets[0]), ts.PAT_PID)
            self.assertEqual(ts.packet_pid(packets[1]), 0x1000)
            self.assertTrue(ts.random_access(packets[2]))
            self.assertEqual(ts.packet_pid(packets[2]), VIDEO_PID)
            keyframes = sum(1 for p in packets if ts.random_access(p))
            self.assertEqual(keyframes, 2)  # two 1 s GOPs in a 2 s segment
            self.assertEqual(segment.duration, 2.0)

    def test_a_segment_ends_at_the_first_keyframe_at_or_after_the_target(self) -> None:
        """With 0.8 s GOPs and a 2 s target a segment is three GOPs, 2.4 s, and the target duration is 3."""
        channel = Channel(gop=0.8, target=2.0)
        channel.gops(12)
        durations = [s.duration for s in channel.segmenter.segments.values()]
        self.assertEqual(durations, [2.4, 2.4, 2.4])
        self.assertEqual(channel.segmenter.target_duration, 3)

    def test_every_extinf_is_at_most_the_target_duration(self) -> None:
        """The playlist's #EXTINF values never exceed its #EXT-X-TARGETDURATION."""
        channel = Channel(gop=0.8, target=2.0)
        channel.gops(12)
        playlist = media_playlist(channel.segmenter.window(6), channel.segmenter.target_duration,
                                  lambda s: f"{s.sequence}.ts").decode()
        target = int(re.search(r"#EXT-X-TARGETDURATION:(\d+)", playlist).group(1))  # type: ignore[union-attr]
        extinfs = [float(v) for v in re.findall(r"#EXTINF:([0-9.]+),", playlist)]
        self.assertTrue(extinfs)
        self.assertTrue(all(value <= target for value in extinfs), (extinfs, target))

    def test_the_window_slides_and_the_media_sequence_grows(self) -> None:
        """Only the newest segments are kept and listed; the media sequence is the first listed one's number."""
        channel = Channel(gop=1.0, target=2.0, keep=3)
        channel.gops(13)
        self.assertEqual(list(channel.segmenter.segments), [3, 4, 5])
        playlist = media_playlist(channel.segmenter.window(2), 2, lambda s: f"{s.sequence}.ts").decode()
        self.assertIn("#EXT-X-MEDIA-SEQUENCE:4\n", playlist)
        self.assertEqual(re.findall(r"^(\d+)\.ts$", playlist, re.M), ["4", "5"])
        self.assertTrue(playlist.startswith("#EXTM3U\n#EXT-X-VERSION:3\n"))
        self.assertNotIn("#EXT-X-ENDLIST", playlist)

    def test_a_splice_drops_the_open_segment_and_marks_the_next_discontinuous(self) -> None:
        """After the ring's discontinuity the segment being cut is dropped, its number reused, and the next is marked."""
        channel = Channel(gop=1.0, target=2.0)
        channel.gops(5)  # segments 0 and 1, and 2 being cut
        self.assertEqual(channel.segmenter.cutting, 2)
        channel.ring.discontinuity()
        channel.gops(5)
        segments = channel.segmenter.segments
        self.assertEqual(channel.segmenter.dropped, 1)
        self.assertEqual([s.discontinuous for s in segments.values()], [False, False, True, False])
        self.assertEqual([s.discontinuity for s in segments.values()], [0, 0, 1, 1])
        playlist = media_playlist(list(segments.values()), 2, lambda s: f"{s.sequence}.ts").decode()
        self.assertEqual(playlist.count("#EXT-X-DISCONTINUITY\n"), 1)
        self.assertIn("#EXT-X-DISCONTINUITY\n#EXTINF:2.000,\n2.ts\n", playlist)
        later = media_playlist(list(segments.values())[2:], 2, lambda s: f"{s.sequence}.ts").decode()
        self.assertIn("#EXT-X-DISCONTINUITY-SEQUENCE:1\n", later)
        self.assertNotIn("#EXT-X-DISCONTINUITY\n", later)

    def test_one_copy_per_segment_the_rings_own_bytes(self) -> None:
        """A segment's parts are the ring blocks' bytes objects themselves, not copies."""
        channel = Channel(gop=1.0, target=2.0)
        channel.gops(3)
        segment = channel.segmenter.get(0)
        assert segment is not None
        blocks = [b for b in channel.blocks if any(b.data is part for part in segment.parts)]
        self.assertEqual(sum(len(b.data) for b in blocks) + len(segment.parts[0]), segment.size)
        self.assertIs(segment.parts[0], blocks[0].psi)

    def test_without_viewers_segments_last_no_longer_than_the_rings_blocks(self) -> None:
        """Unless told to retain them, segments whose first block the ring let go are dropped (at the next cut); retained, the window stays."""
        channel = Channel(gop=1.0, target=2.0, keep=8)
        channel.ring.max_seconds = 5
        ring = channel.ring
        channel.segmenter.oldest_block = lambda: ring.first_seq
        channel.gops(20)
        kept = list(channel.segmenter.segments.values())
        self.assertLess(len(kept), 8)
        # let go when the next segment is finished: at most the oldest one waits for that
        self.assertLessEqual(sum(1 for segment in kept if segment.first_block < ring.first_seq), 1)
        channel.segmenter.retain = True
        channel.gops(20)
        self.assertEqual(len(channel.segmenter.segments), 8)

    def test_a_keyframe_without_tables_does_not_begin_a_segment(self) -> None:
        """Until the PAT and PMT are known no segment starts (it could not begin with them)."""
        segmenter = Segmenter(2.0, 3)
        mark = segmenter.lead(Block(0, ts.make_packet(VIDEO_PID, random_access=True), True, b"", 0, 0.0))
        self.assertIsNone(mark)
        self.assertIsNone(segmenter.cutting)


class FollowingTests(SynchronousTestCase):
    def test_a_follower_cuts_the_same_segments_with_the_same_numbers_and_bytes(self) -> None:
        """Fed the owner's marked blocks, a follower's segments equal the owner's byte for byte."""
        channel = Channel(gop=1.0, target=2.0)
        channel.gops(11)
        follower = follower_of(channel.marked)
        self.assertEqual(list(follower.segments), list(channel.segmenter.segments))
        for sequence, segment in channel.segmenter.segments.items():
            theirs = follower.get(sequence)
            assert theirs is not None
            self.assertEqual(joined(theirs), joined(segment))
            self.assertEqual((theirs.duration, theirs.discontinuity), (segment.duration, segment.discontinuity))

    def test_a_follower_that_joins_late_starts_at_the_next_mark(self) -> None:
        """A follower that missed the start has the owner's later segments, with the owner's numbers."""
        channel = Channel(gop=1.0, target=2.0)
        channel.gops(11)
        first_mark = next(i for i, b in enumerate(channel.marked) if b.mark is not None and b.mark.sequence == 1)
        follower = follower_of(channel.marked[first_mark - 1 :])
        self.assertEqual(list(follower.segments), [1, 2, 3, 4])
        self.assertEqual(joined(follower.segments[2]), joined(channel.segmenter.segments[2]))

    def test_a_follower_copies_the_owners_discontinuities(self) -> None:
        """A splice at the owner reaches the follower as a mark with a higher discontinuity sequence."""
        channel = Channel(gop=1.0, target=2.0)
        channel.gops(5)
        channel.ring.discontinuity()
        channel.gops(5)
        follower = follower_of(channel.marked)
        self.assertEqual([s.discontinuous for s in follower.segments.values()],
                         [s.discontinuous for s in channel.segmenter.segments.values()])

    def test_a_follower_that_takes_over_continues_the_numbering_after_a_discontinuity(self) -> None:
        """Once it leads (after the splice of a new upstream) a former follower numbers on, discontinuous."""
        channel = Channel(gop=1.0, target=2.0)
        channel.gops(5)
        clock = Clock()
        segmenter = Segmenter(2.0, 10)
        ring = TSRing(clock, max_seconds=60, on_block=segmenter.follow)
        for block in channel.marked:
            ring.append_block(block.data, block.keyframe, block.psi, block.mark)
        self.assertEqual(list(segmenter.segments), [0, 1])
        ring.on_block = segmenter.lead
        ring.discontinuity()
        template = channel.template
        for k in range(5):
            ring.feed(template.read(k * template.packets, template.packets))
            clock.advance(1.0)
        ring.flush()
        self.assertEqual(list(segmenter.segments), [0, 1, 2, 3])
        self.assertTrue(segmenter.segments[2].discontinuous)
        self.assertEqual(segmenter.segments[2].discontinuity, 1)

    def test_a_mark_survives_the_mirror_encoding(self) -> None:
        """A segment mark written for Redis reads back equal; garbage reads back as no mark."""
        mark = SegmentMark(1_795_000_000, 3, 2.0)
        self.assertEqual(SegmentMark.decode(mark.encode()), mark)
        self.assertIsNone(SegmentMark.decode(b""))
        self.assertIsNone(SegmentMark.decode(b"1 x 2.0"))


