"""Tests for acetwist.ts: packet fields, PSI, builders and the incremental checker."""

from twisted.trial.unittest import SynchronousTestCase

from acetwist import ts

VIDEO, AUDIO, PMT = 0x100, 0x101, 0x1000


def stream(gops: int = 2, packets_per_gop: int = 30, start_cc: int = 0) -> bytes:
    """A small valid stream: each GOP is PAT, PMT, a random-access video packet, then video/audio."""
    out = []
    cc = {0: start_cc, PMT: start_cc, VIDEO: start_cc, AUDIO: start_cc}

    def nxt(pid: int) -> int:
        value = cc[pid]
        cc[pid] = (value + 1) & 0x0F
        return value

    for gop in range(gops):
        out.append(ts.make_pat(PMT, cc=nxt(0)))
        out.append(ts.make_pmt(PMT, VIDEO, [(ts.STREAM_TYPE_H264, VIDEO), (ts.STREAM_TYPE_AAC_ADTS, AUDIO)], cc=nxt(PMT)))
        out.append(
            ts.make_packet(VIDEO, b"\x00" * 100, cc=nxt(VIDEO), pusi=True, random_access=True, pcr=gop * 27_000_000)
        )
        for i in range(packets_per_gop):
            pid = AUDIO if i % 4 == 0 else VIDEO
            out.append(ts.make_packet(pid, b"\x11" * 184, cc=nxt(pid)))
    return b"".join(out)


class PacketFieldTests(SynchronousTestCase):
    def test_builder_round_trips_every_field(self) -> None:
        """A built packet reads back its PID, PUSI, counter, random-access flag and PCR."""
        packet = ts.make_packet(VIDEO, b"abc", cc=9, pusi=True, random_access=True, pcr=123_456_789)
        self.assertEqual(len(packet), ts.PACKET_SIZE)
        self.assertEqual(ts.packet_pid(packet), VIDEO)
        self.assertTrue(ts.payload_unit_start(packet))
        self.assertEqual(ts.continuity_counter(packet), 9)
        self.assertTrue(ts.random_access(packet))
        self.assertFalse(ts.discontinuity(packet))
        self.assertEqual(ts.pcr(packet), 123_456_789)
        self.assertTrue(ts.payload(packet).endswith(b"abc"))

    def test_full_payload_packet_has_no_adaptation_field(self) -> None:
        """A 184-byte payload fills the packet with no adaptation field and no random access."""
        packet = ts.make_packet(AUDIO, b"z" * 184)
        self.assertFalse(ts.has_adaptation_field(packet))
        self.assertFalse(ts.random_access(packet))
        self.assertIsNone(ts.pcr(packet))
        self.assertEqual(ts.payload(packet), b"z" * 184)

    def test_oversized_payload_is_refused(self) -> None:
        """A payload that cannot fit beside the requested adaptation field raises ValueError."""
        self.assertRaises(ValueError, ts.make_packet, VIDEO, b"x" * 184, random_access=True)

    def test_pat_and_pmt_parse_with_valid_crc(self) -> None:
        """PAT maps the program to its PMT PID; PMT lists the PCR PID and the elementary streams."""
        self.assertEqual(ts.parse_pat(ts.make_pat(PMT)), {1: PMT})
        pcr_pid, streams = ts.parse_pmt(ts.make_pmt(PMT, VIDEO, [(0x1B, VIDEO), (0x0F, AUDIO)]))
        self.assertEqual(pcr_pid, VIDEO)
        self.assertEqual(streams, [(0x1B, VIDEO), (0x0F, AUDIO)])
        self.assertEqual(ts.video_pid_of(streams), VIDEO)

    def test_corrupt_pat_is_rejected(self) -> None:
        """A PAT whose section bytes were altered fails its CRC and parses as None."""
        pat = bytearray(ts.make_pat(PMT))
        pat[15] ^= 0xFF
        self.assertIsNone(ts.parse_pat(bytes(pat)))
        self.assertIsNone(ts.parse_pat(ts.make_packet(VIDEO, b"x")))


class SyncTests(SynchronousTestCase):
    def test_find_sync_at_zero_for_aligned_data(self) -> None:
        """Aligned data syncs at offset 0."""
        self.assertEqual(ts.find_sync(stream(1)), 0)

    def test_find_sync_skips_junk_that_contains_0x47(self) -> None:
        """Junk with stray 0x47 bytes before the stream does not fool the three-packet confirmation."""
        junk = b"\x47\x00\x47" + b"\x01" * 50 + b"\x47" * 3
        self.assertEqual(ts.find_sync(junk + stream(1)), len(junk))

    def test_find_sync_refuses_an_unconfirmable_tail(self) -> None:
        """Fewer than three packets' worth of data cannot be confirmed."""
        self.assertEqual(ts.find_sync(stream(1)[: ts.PACKET_SIZE * 2]), -1)

    def test_is_aligned(self) -> None:
        """Only whole packets each starting with 0x47 count as aligned."""
        data = stream(1)
        self.assertTrue(ts.is_aligned(data))
        self.assertFalse(ts.is_aligned(data[1:]))
        self.assertFalse(ts.is_aligned(data[:-1]))


class CheckerTests(SynchronousTestCase):
    def feed_in_pieces(self, data: bytes, size: int = 1000) -> ts.TSChecker:
        checker = ts.TSChecker()
        for i in range(0, len(data), size):
            checker.feed(data[i : i + size])
        return checker

    def test_clean_stream_fed_in_odd_pieces(self) -> None:
        """A valid stream fed in pieces that split packets is aligned, error-free and starts clean."""
        data = stream(3)
        checker = self.feed_in_pieces(data, 1001)
        self.assertTrue(checker.aligned_at_start)
        self.assertEqual(checker.cc_errors, 0)
        self.assertEqual(checker.resyncs, 0)
        self.assertEqual(checker.packets, len(data) // ts.PACKET_SIZE)
        self.assertTrue(checker.first_video_random_access)
        self.assertTrue(checker.psi_before_first_video)
        self.assertEqual(len(checker.random_access_points), 3)
        self.assertEqual(checker.random_access_intervals(), [1.0, 1.0])

    def test_misaligned_start_is_reported_and_resynchronised(self) -> None:
        """A stream that starts mid-packet is not aligned at start, yet every whole packet after sync is read."""
        data = stream(2)
        checker = self.feed_in_pieces(data[50:])
        self.assertFalse(checker.aligned_at_start)
        self.assertEqual(checker.packets, len(data) // ts.PACKET_SIZE - 1)
        self.assertEqual(checker.skipped_bytes, ts.PACKET_SIZE - 50)

    def test_junk_between_packets_counts_a_resync(self) -> None:
        """Junk inside the stream breaks sync once; the checker resyncs and keeps counting packets."""
        data = stream(2)
        cut = ts.PACKET_SIZE * 10
        checker = self.feed_in_pieces(data[:cut] + b"\x00" * 77 + data[cut:])
        self.assertTrue(checker.aligned_at_start)
        self.assertEqual(checker.resyncs, 1)
        self.assertEqual(checker.skipped_bytes, 77)
        self.assertEqual(checker.cc_errors, 0)

    def test_dropped_packet_is_a_continuity_error(self) -> None:
        """Removing one video packet yields exactly one continuity error on that PID."""
        packets = list(ts.split_packets(stream(1)))
        del packets[10]
        checker = self.feed_in_pieces(b"".join(packets))
        self.assertEqual(checker.cc_errors, 1)
        self.assertEqual(set(checker.cc_errors_by_pid), {VIDEO})

    def test_one_duplicate_is_allowed_two_are_not(self) -> None:
        """A single repeated packet is legal; a second repeat is a continuity error."""
        packets = list(ts.split_packets(stream(1)))
        once = packets[:10] + [packets[9]] + packets[10:]
        self.assertEqual(self.feed_in_pieces(b"".join(once)).cc_errors, 0)
        twice = packets[:10] + [packets[9], packets[9]] + packets[10:]
        self.assertEqual(self.feed_in_pieces(b"".join(twice)).cc_errors, 1)

    def test_discontinuity_indicator_excuses_a_jump(self) -> None:
        """A counter jump on a packet flagged discontinuous is not an error."""
        first = ts.make_packet(AUDIO, b"a" * 184, cc=3)
        jump = ts.make_packet(AUDIO, b"a" * 100, cc=9, discontinuity=True)
        checker = self.feed_in_pieces(first + jump)
        self.assertEqual(checker.cc_errors, 0)

    def test_null_packets_are_not_counted(self) -> None:
        """Null packets with any counter never cause continuity errors."""
        checker = self.feed_in_pieces(ts.make_null_packet() * 5)
        self.assertEqual(checker.cc_errors, 0)
        self.assertEqual(checker.packets, 5)

    def test_stream_starting_without_keyframe_is_flagged(self) -> None:
        """When the first video packet is not a random-access point, the checker says so."""
        data = stream(2)
        packets = list(ts.split_packets(data))
        # drop PAT/PMT/RAP of the first GOP but keep a PAT/PMT first
        trimmed = packets[:2] + packets[4:]
        checker = self.feed_in_pieces(b"".join(trimmed))
        self.assertFalse(checker.first_video_random_access)
