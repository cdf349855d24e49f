"""Tests for acetwist.sim.tsgen: the repeatable GOP template and its cost."""

import time

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
