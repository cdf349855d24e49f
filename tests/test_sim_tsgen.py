"""Tests for acetwist.sim.tsgen: the repeatable GOP template and its cost."""

import time
from unittest import mock

from twisted.trial.unittest import SynchronousTestCase

from acetwist import ts
from acetwist.sim import tsgen
from acetwist.sim.tsgen import GopTemplate, gop_template


def packets_of(data: bytes):
    return [data[i : i + ts.PACKET_SIZE] for i in range(0, len(data), ts.PACKET_SIZE)]


class TemplateTests(SynchronousTestCase):
    def check(self, bitrate: int, gop: float, gops: int = 4) -> ts.TSChecker:
        template = GopTemplate(bitrate, gop)
        checker = ts.TSChecker()
        checker.feed(template.read(0, template.packets * gops))
        self.assertTrue(checker.aligned_at_start)
        self.assertEqual(checker.cc_errors, 0, checker.cc_errors_by_pid)
        self.assertEqual(checker.resyncs, 0)
        self.assertTrue(checker.psi_before_first_video)
        self.assertTrue(checker.first_video_random_access)
        self.assertEqual(len(checker.random_access_points), gops)
        for interval in checker.random_access_intervals():
            self.assertAlmostEqual(interval, gop, places=6)
        return checker

    def test_valid_stream_at_several_bitrates_and_gops(self) -> None:
        """The stream is aligned, CC-clean and has one random-access point per GOP at 1, 4, 20 Mbit/s and GOPs of 0.5-2 s."""
        for bitrate, gop in [(1_000_000, 0.5), (4_000_000, 1.0), (20_000_000, 1.0), (8_000_000, 2.0)]:
            self.check(bitrate, gop)

    def test_every_pid_count_is_a_multiple_of_16(self) -> None:
        """Each PID's packet count per GOP is a multiple of 16, so the template repeats verbatim."""
        template = GopTemplate(4_000_000, 1.0)
        counts = {}
        for packet in packets_of(template.data):
            pid = ts.packet_pid(packet)
            counts[pid] = counts.get(pid, 0) + 1
        for pid, count in counts.items():
            if pid != ts.NULL_PID:
                self.assertEqual(count % 16, 0, (hex(pid), count))
        self.assertEqual(set(counts) - {ts.NULL_PID}, {ts.PAT_PID, tsgen.PMT_PID, tsgen.VIDEO_PID, tsgen.AUDIO_PID})

    def test_pat_pmt_and_pcr_at_most_100ms_apart(self) -> None:
        """PAT, PMT and PCR each recur at most every 100 ms of stream time."""
        template = GopTemplate(4_000_000, 2.0)
        seconds_per_packet = template.gop / template.packets
        last = {"pat": None, "pmt": None, "pcr": None}
        gaps = {"pat": 0.0, "pmt": 0.0, "pcr": 0.0}
        for index, packet in enumerate(packets_of(template.read(0, template.packets * 2))):
            now = index * seconds_per_packet
            pid = ts.packet_pid(packet)
            kinds = []
            if pid == ts.PAT_PID:
                kinds.append("pat")
            if pid == tsgen.PMT_PID:
                kinds.append("pmt")
            if ts.pcr(packet) is not None:
                kinds.append("pcr")
            for kind in kinds:
                if last[kind] is not None:
                    gaps[kind] = max(gaps[kind], now - last[kind])
                last[kind] = now
        for kind, gap in gaps.items():
            self.assertLessEqual(gap, 0.1 + 1e-9, kind)

    def test_pcr_follows_the_bitrate(self) -> None:
        """Each PCR equals its packet's position times the packet duration at the template's bitrate."""
        template = GopTemplate(4_000_000, 1.0)
        start = template.packets * 7 + 5
        for offset, packet in enumerate(packets_of(template.read(start, template.packets))):
            value = ts.pcr(packet)
            if value is not None:
                seconds = (start + offset) * ts.PACKET_SIZE * 8 / template.bitrate
                self.assertLess(abs(value / 27_000_000 - seconds), 2 / 27_000_000)
        self.assertLess(abs(template.bitrate - 4_000_000), 4_000_000 * 0.001)

    def test_reads_across_gop_boundaries_match_one_read(self) -> None:
        """Reading in odd-sized pieces gives the same bytes as one long read."""
        template = GopTemplate(1_000_000, 0.5)
        whole = template.read(100, template.packets * 8)
        pieces, position = [], 100
        for size in [1, 7, 348, 500, 1000, 2, template.packets]:
            pieces.append(template.read(position, size))
            position += size
        joined = b"".join(pieces)
        self.assertEqual(joined, whole[: len(joined)])

    def test_stream_starts_with_pat_pmt_and_a_keyframe(self) -> None:
        """Every GOP begins with PAT, PMT, then a video packet with PUSI, random access and PCR."""
        template = GopTemplate(4_000_000, 1.0)
        first = packets_of(template.read(template.packets * 3, 3))
        self.assertEqual(ts.packet_pid(first[0]), ts.PAT_PID)
        self.assertEqual(ts.packet_pid(first[1]), tsgen.PMT_PID)
        self.assertEqual(ts.packet_pid(first[2]), tsgen.VIDEO_PID)
        self.assertTrue(ts.payload_unit_start(first[2]))
        self.assertTrue(ts.random_access(first[2]))
        self.assertEqual(ts.pcr(first[2]), template.pcr_of(template.packets * 3 + 2))

    def test_too_low_bitrate_is_refused(self) -> None:
        """A bitrate that cannot hold PSI, audio and video is a ValueError naming the minimum."""
        error = self.assertRaises(ValueError, GopTemplate, 50_000, 1.0)
        self.assertIn("minimum", str(error))

    def test_templates_are_shared(self) -> None:
        """The same (bitrate, gop) gives the same template object."""
        self.assertIs(gop_template(4_000_000, 1.0), gop_template(4_000_000, 1.0))

    def test_junk_has_no_sync_byte(self) -> None:
        """Junk bytes never contain 0x47."""
        self.assertNotIn(b"\x47", tsgen.junk(1000))
        self.assertEqual(len(tsgen.junk(13)), 13)


def pes_units(template: GopTemplate, data: bytes, first: int = 0):
    """
    {pid: [(packet index, PCR of that packet, PES bytes)]} for the video and
    audio PIDs of C{data}, which starts at stream packet C{first}.
    """
    units = {tsgen.VIDEO_PID: [], tsgen.AUDIO_PID: []}
    for offset, packet in enumerate(packets_of(data)):
        pid = ts.packet_pid(packet)
        if pid not in units:
            continue
        if ts.payload_unit_start(packet):
            units[pid].append([first + offset, template.pcr_of(first + offset), b""])
        if units[pid]:
            units[pid][-1][2] += ts.payload(packet)
    return {pid: [tuple(unit) for unit in found] for pid, found in units.items()}


def pts_of(pes: bytes) -> int:
    """The PTS (90 kHz) of a PES packet whose PTS_DTS_flags are '10'."""
    assert pes[:3] == b"\x00\x00\x01" and pes[7] == 0x80 and pes[8] == 5, pes[:9].hex()
    b = pes[9:14]
    assert b[0] & 0xF1 == 0x21 and b[2] & 1 and b[4] & 1, b.hex()
    return ((b[0] >> 1) & 0x07) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1


def nal_types(access_unit: bytes):
    return [nal[0] & 0x1F for nal in access_unit.split(b"\x00\x00\x00\x01") if nal]


def without_filler(access_unit: bytes) -> bytes:
    nals = [nal for nal in access_unit.split(b"\x00\x00\x00\x01") if nal and nal[0] & 0x1F != 12]
    return b"".join(b"\x00\x00\x00\x01" + nal for nal in nals)


class PictureTests(SynchronousTestCase):
    """The payloads: the H.264 test card and silent AAC, with PTSs that advance with the PCR."""

    def test_the_test_card_is_one_idr_then_p_frames(self) -> None:
        """The asset holds 250 access units (10 s at 25 fps): an IDR with SPS and PPS, then non-IDR slices."""
        card = tsgen.testcard()
        self.assertEqual(len(card), 250)
        self.assertEqual(nal_types(card[0])[0], 9)
        self.assertTrue({7, 8, 5} <= set(nal_types(card[0])))
        for unit in card[1:]:
            self.assertEqual(nal_types(unit), [9, 1])

    def test_pts_advance_across_repetitions(self) -> None:
        """Every video and audio PES has a PTS; they rise by exactly one GOP per repetition and lie ahead of the PCR."""
        for bitrate, gop in [(4_000_000, 1.0), (1_000_000, 0.5), (8_000_000, 2.0), (4_000_000, 0.3)]:
            template = GopTemplate(bitrate, gop)
            self.assertTrue(template.picture)
            gops, first = 4, template.packets * 5
            units = pes_units(template, template.read(first, template.packets * gops), first)
            gop_pts = template.gop_ticks / 300
            for pid, stream_id in ((tsgen.VIDEO_PID, 0xE0), (tsgen.AUDIO_PID, 0xC0)):
                found = units[pid]
                self.assertEqual(len(found) % gops, 0)
                per_gop = len(found) // gops
                stamps = []
                for index, pcr, pes in found:
                    self.assertEqual(pes[3], stream_id)
                    pts = pts_of(pes)
                    stamps.append(pts)
                    # presented after it has arrived, and not absurdly later
                    self.assertGreater(pts * 300, pcr)
                    self.assertLess(pts * 300 - pcr, 27_000_000)
                self.assertEqual(stamps, sorted(set(stamps)))
                for a, b in zip(stamps, stamps[per_gop:]):
                    self.assertLessEqual(abs(b - a - gop_pts), 1, (pid, gop))
            video = [pts_of(pes) for _, _, pes in units[tsgen.VIDEO_PID]]
            for a, b in zip(video, video[1:]):
                self.assertLessEqual(abs(b - a - gop_pts / template.frames), 1)
            # the first frame of a GOP is shown pts_delay after the GOP's first packet
            self.assertEqual(video[0], (5 * template.gop_ticks + template.pts_delay) // 300)

    def test_each_gop_carries_the_test_card(self) -> None:
        """A GOP's video PES packets are the test card's first frames (plus filler NAL units), the first an IDR at the random-access point."""
        template = GopTemplate(4_000_000, 1.0)
        first = template.packets * 2
        data = template.read(first, template.packets)
        video = pes_units(template, data, first)[tsgen.VIDEO_PID]
        self.assertEqual(video[0][0], first + 2)
        self.assertTrue(ts.random_access(packets_of(data)[2]))
        self.assertEqual([without_filler(pes[14:]) for _, _, pes in video], list(tsgen.testcard()[:25]))
        for _, _, pes in video:
            self.assertEqual(pes[4:6], b"\x00\x00")  # unbounded, as video PES in TS may be

    def test_audio_is_whole_silent_aac_frames(self) -> None:
        """Audio PES packets hold whole ADTS frames: as many per GOP as fit in it at 48 kHz."""
        for gop, frames in [(1.0, 46), (0.5, 23), (2.0, 93), (0.2, 9)]:
            template = GopTemplate(4_000_000, gop)
            audio = pes_units(template, template.data)[tsgen.AUDIO_PID]
            total = 0
            for _, _, pes in audio:
                self.assertEqual(int.from_bytes(pes[4:6], "big"), len(pes) - 6)
                body = pes[14:]
                count, rest = divmod(len(body), len(tsgen.SILENT_AAC_FRAME))
                self.assertEqual((rest, body), (0, tsgen.SILENT_AAC_FRAME * count))
                total += count
            self.assertEqual(total, frames)

    def test_below_the_picture_bitrate_the_stream_keeps_its_structure(self) -> None:
        """Below picture_bitrate the video is bare delimiters, still a valid stream with PTSs; at it, the test card."""
        for gop in (0.5, 1.0, 2.0):
            low = tsgen.picture_bitrate(gop)
            self.assertTrue(GopTemplate(low, gop).picture)
            # two packets per GOP fewer
            self.assertFalse(GopTemplate(low - round(2 * tsgen.PACKET_BITS / gop), gop).picture)
        template = GopTemplate(100_000, 1.0)
        self.assertFalse(template.picture)
        self.assertIn("bitrate below", template.no_picture)
        TemplateTests.check(self, 100_000, 1.0)
        for _, _, pes in pes_units(template, template.data)[tsgen.VIDEO_PID]:
            pts_of(pes)

    def test_without_the_asset_there_is_no_picture(self) -> None:
        """A missing test card is not fatal: the stream is built without a picture and says why."""
        tsgen.testcard.cache_clear()
        self.addCleanup(tsgen.testcard.cache_clear)
        with mock.patch.object(tsgen, "TESTCARD", "missing.h264"):
            template = GopTemplate(4_000_000, 1.0)
        self.assertFalse(template.picture)
        self.assertIn("missing", template.no_picture)

    def test_patched_fields_match_a_fresh_build(self) -> None:
        """A later GOP equals GOP 0 except in its PCR and PTS fields."""
        template = GopTemplate(2_000_000, 1.0)
        zero, later = template.data, template.read(template.packets * 1000, template.packets)
        changed = {i // ts.PACKET_SIZE for i in range(len(zero)) if zero[i] != later[i]}
        self.assertLessEqual(changed, set(template.pcr_slots) | set(template.pts_slots))


class CostTests(SynchronousTestCase):
    def test_ten_seconds_at_20_mbit_cost_under_two_percent_of_a_core(self) -> None:
        """Generating 10 s of 20 Mbit/s TS in 64 KiB writes takes under 0.2 s of CPU (it measures ~2 ms)."""
        template = gop_template(20_000_000, 1.0)
        total = template.packets_at(10.0)
        started = time.process_time()
        position, produced = 0, 0
        while position < total:
            produced += len(template.read(position, 348))
            position += 348
        spent = time.process_time() - started
        self.assertGreaterEqual(produced, 25_000_000)
        self.assertLess(spent, 0.2, f"{spent:.4f} s CPU for 10 s of 20 Mbit/s")
