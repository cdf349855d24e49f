# -*- test-case-name: tests.test_sim_tsgen -*-
"""
Cheap, valid, playable MPEG-TS for the simulator.

One GOP is built once per (bitrate, gop) as a byte template: PAT and PMT at
the start of every slice (at most 100 ms apart), a PCR on the first video
packet of every slice, a random-access H.264 frame start (PUSI plus
random_access_indicator plus PCR) at the start of the GOP, audio packets
spread through it and null packets to hit the bitrate. Every PID's packet
count in the GOP is a multiple of 16, so continuity counters wrap exactly and
the template repeats verbatim: producing the stream costs one slice copy and
a handful of PCR and PTS patches per write.

The video is real H.264: the first C{round(25 * gop)} access units of
C{assets/testcard.h264} (an IDR frame, then P frames only; 250 frames of a
640x360 colour-bar test card with a moving square), so every GOP decodes on
its own and the picture restarts at every GOP. The audio is silent AAC-LC
(48 kHz stereo, ADTS). Every PES carries a PTS that advances with the PCR
from one GOP to the next. When the bitrate is too low for the picture
(L{picture_bitrate}), the video access units are bare access unit delimiters:
the stream keeps its structure but shows no picture.
"""

from __future__ import annotations

import bisect
import functools
import math
from importlib import resources
from typing import List, Optional, Tuple

from acetwist import ts

PMT_PID = 0x1000
VIDEO_PID = 0x100
AUDIO_PID = 0x101
FRAMES_PER_SECOND = 25
PSI_INTERVAL = 0.1  # seconds, the most allowed between PATs (and between PCRs)
PCR_HZ = 27_000_000
PCR_MODULUS = (1 << 33) * 300
PACKET_BITS = ts.PACKET_SIZE * 8

#: The test card: H.264 Annex B, constrained baseline, 640x360, 25 fps, one
#: IDR then 249 P frames, an access unit delimiter before every frame.
#: docs/simulator.md gives the ffmpeg command that made it.
TESTCARD = "testcard.h264"
#: One silent AAC-LC frame (ADTS, 48 kHz, stereo, 1024 samples), as ffmpeg's
#: native encoder writes it for digital silence.
SILENT_AAC_FRAME = bytes.fromhex("fff14c8001bffc211004608c1c")
SAMPLE_RATE = 48_000
AAC_FRAME_TICKS = 1024 * PCR_HZ // SAMPLE_RATE  # 576000 ticks of 27 MHz, exactly
#: How far the first PTS of a GOP lies beyond the GOP's first PCR, on top of
#: what the slowest access unit needs to arrive.
PTS_MARGIN = PCR_HZ // 10

_VIDEO_ROOM = ts.PACKET_SIZE - 4 - 8  # the least room in a video packet: a PCR takes 8 bytes
_AUDIO_ROOM = ts.PACKET_SIZE - 4
_PES_HEADER = 14  # start code, stream id, length, flags, header length, PTS
_PTS_OFFSET = 9  # of the PTS within the PES header
_AUDIO_FRAMES_PER_PES = (_AUDIO_ROOM - _PES_HEADER) // len(SILENT_AAC_FRAME)
_AUD = bytes([0, 0, 0, 1, 0x09, 0xF0])
_START = b"\x00\x00\x01"
_JUNK = b"\xde\xad\xbe\xef"  # never contains 0x47


def _up16(n: int) -> int:
    return max(16, -(-n // 16) * 16)


def _pcr_field(value: int) -> bytes:
    """The six PCR bytes of an adaptation field for C{value} in 27 MHz ticks."""
    base, ext = divmod(value % PCR_MODULUS, 300)
    return ((base << 15) | 0x7E00 | ext).to_bytes(6, "big")


def _pts_field(value: int) -> bytes:
    """The five bytes of a PES PTS (PTS_DTS_flags '10') for C{value} in 27 MHz ticks."""
    pts = (value // 300) & ((1 << 33) - 1)
    return bytes([
        0x21 | ((pts >> 29) & 0x0E),
        (pts >> 22) & 0xFF,
        0x01 | ((pts >> 14) & 0xFE),
        (pts >> 7) & 0xFF,
        0x01 | ((pts << 1) & 0xFE),
    ])


def _pes(stream_id: int, body: bytes, bounded: bool) -> bytes:
    """A PES packet with a zero PTS (patched later); unbounded (length 0) unless C{bounded}."""
    length = 8 + len(body) if bounded else 0
    return bytes([0, 0, 1, stream_id]) + length.to_bytes(2, "big") + bytes([0x80, 0x80, 5]) + bytes(5) + body


def split_access_units(stream: bytes) -> Tuple[bytes, ...]:
    """
    The access units of an H.264 Annex B C{stream} that has an access unit
    delimiter before every picture, each rewritten with 4-byte start codes.
    """
    nals: List[bytes] = []
    start = stream.find(_START)
    while start >= 0:
        following = stream.find(_START, start + 3)
        nal = stream[start + 3 : len(stream) if following < 0 else following].rstrip(b"\x00")
        if nal:
            nals.append(nal)
        start = following
    units: List[List[bytes]] = []
    for nal in nals:
        if nal[0] & 0x1F == 9 or not units:
            units.append([])
        units[-1].append(nal)
    return tuple(b"".join(b"\x00\x00\x00\x01" + nal for nal in unit) for unit in units)


@functools.lru_cache(maxsize=1)
def testcard() -> Optional[Tuple[bytes, ...]]:
    """
    The test card's access units (the first is the IDR frame with SPS and
    PPS), or None when the asset is not installed.
    """
    try:
        stream = resources.files(__package__).joinpath("assets", TESTCARD).read_bytes()
    except FileNotFoundError:
        return None
    units = split_access_units(stream)
    types = [{nal[0] & 0x1F for nal in unit.split(b"\x00\x00\x00\x01") if nal} for unit in units]
    if not units or not {5, 7, 8} <= types[0] or any(5 in kinds for kinds in types[1:]):
        raise ValueError(f"{TESTCARD} must be one IDR frame (with SPS and PPS) followed by non-IDR frames")
    return units


def _slices(gop: float) -> int:
    return _up16(math.ceil(gop / PSI_INTERVAL - 1e-9))


def _audio_frames(gop_ticks: int) -> int:
    """Whole AAC frames in a GOP; the rest of the GOP's audio time is a gap of under 21.4 ms."""
    return max(1, gop_ticks // AAC_FRAME_TICKS)


def _audio_packets(gop_ticks: int) -> int:
    return _up16(math.ceil(_audio_frames(gop_ticks) / _AUDIO_FRAMES_PER_PES))


def _video_packets(units: List[bytes], slices: int) -> int:
    return max(slices, _up16(sum(-(-len(unit) // _VIDEO_ROOM) for unit in units)))


def _picture_units(frames: int) -> Optional[List[bytes]]:
    card = testcard()
    if card is None or frames > len(card):
        return None
    return [_pes(0xE0, unit, bounded=False) for unit in card[:frames]]


def minimum_bitrate(gop: float) -> int:
    """The lowest bitrate whose GOP fits PSI, audio and video for a GOP of C{gop} seconds."""
    slices = _slices(gop)
    packets = 3 * slices + _audio_packets(round(gop * PCR_HZ))
    return math.ceil((packets + 0.5) * PACKET_BITS / gop)


def picture_bitrate(gop: float) -> int:
    """
    The bitrate from which a GOP of C{gop} seconds carries the test card
    (rounded up like L{minimum_bitrate}: up to one packet per GOP less may
    still do); below it the stream has no picture.
    """
    slices = _slices(gop)
    units = _picture_units(max(1, round(FRAMES_PER_SECOND * gop)))
    if units is None:
        raise ValueError(f"no test card for a {gop} s GOP (it is missing, or shorter than the GOP)")
    packets = 2 * slices + _audio_packets(round(gop * PCR_HZ)) + _video_packets(units, slices)
    return max(minimum_bitrate(gop), math.ceil((packets + 0.5) * PACKET_BITS / gop))


def _place(sizes: List[int], ideals: List[int], total: int) -> List[int]:
    """
    The first slot of each unit: not before the unit's ideal slot nor the
    previous unit's end, and early enough to leave room for the units after
    it. A unit owns every slot up to the next unit's first.
    """
    starts: List[int] = []
    end, remaining = 0, sum(sizes)
    for size, ideal in zip(sizes, ideals):
        start = max(end, min(ideal, total - remaining))
        starts.append(start)
        end, remaining = start + size, remaining - size
    return starts


def _chunks(unit: bytes, rooms: List[int]) -> List[bytes]:
    """C{unit} cut into one piece per slot of the given rooms: none empty, the first with the PES header."""
    pieces, offset = [], 0
    for index, room in enumerate(rooms):
        take = min(room, len(unit) - offset - (len(rooms) - index - 1))
        pieces.append(unit[offset : offset + take])
        offset += take
    assert offset == len(unit) and len(pieces[0]) >= _PES_HEADER and all(pieces), (len(unit), rooms)
    return pieces


class GopTemplate:
    """
    One GOP of packets, repeatable verbatim; only PCR and PTS fields change.

    @ivar packets: packets per GOP.
    @ivar data: the GOP bytes with every PCR and PTS field set for GOP 0.
    @ivar pcr_slots: packet indices (within the GOP) that carry a PCR.
    @ivar pts_slots: packet indices (within the GOP) that start a PES, so carry a PTS.
    @ivar bitrate: the exact bitrate of the template (packets x 1504 / gop).
    @ivar picture: whether the video is the test card (False: bare delimiters).
    @ivar no_picture: why there is no picture (the bitrate is too low, or no test card), or None.
    @ivar pts_delay: 27 MHz ticks from a GOP's first packet to its first frame's PTS.
    """

    def __init__(self, bitrate: int, gop: float) -> None:
        if gop < 0.05:
            raise ValueError("gop must be at least 0.05 s (the audio needs two AAC frames per GOP)")
        self.gop = gop
        self.slices = _slices(gop)
        self.packets = round(bitrate * gop / PACKET_BITS)
        self.gop_ticks = round(gop * PCR_HZ)
        self.audio_packets = _audio_packets(self.gop_ticks)
        if self.packets < 3 * self.slices + self.audio_packets:
            raise ValueError(f"bitrate {bitrate} is too low for a {gop} s GOP (minimum {minimum_bitrate(gop)})")
        self.bitrate = self.packets * PACKET_BITS / gop
        self.byte_rate = self.bitrate / 8
        self.frames = max(1, round(FRAMES_PER_SECOND * gop))
        self.data, self.pcr_slots, self.counts = self._build()

    # -- building

    def _layout(self, audio: int, video: int) -> List[str]:
        P, S = self.packets, self.slices
        nulls = P - 2 * S - audio - video
        assert video >= S and nulls >= 0, (P, S, audio, video)
        kinds: List[str] = [""] * P
        starts = [(k * P) // S for k in range(S)]
        for start in starts:
            kinds[start], kinds[start + 1], kinds[start + 2] = "pat", "pmt", "pcr"
        free = [i for i, kind in enumerate(kinds) if not kind]
        # spread the rest evenly: each item gets an ideal position in [0, 1)
        wanted: List[Tuple[float, str]] = []
        for count, kind in ((audio, "audio"), (nulls, "null"), (video - S, "video")):
            wanted += [((j + 0.5) / count, kind) for j in range(count)]
        wanted.sort()
        assert len(wanted) == len(free)
        for position, (_, kind) in zip(free, wanted):
            kinds[position] = kind
        return kinds

    def _units(self) -> Tuple[List[Tuple[int, bytes]], List[Tuple[int, bytes]], int]:
        """
        The video and the audio PES packets, each as (27 MHz ticks from the GOP
        start to its presentation, before L{pts_delay}; bytes), and how many
        video packets carry them.
        """
        S, A = self.slices, self.audio_packets
        room = self.packets - 2 * S - A
        frames = _picture_units(self.frames)
        self.no_picture: Optional[str] = None
        if frames is None:
            self.no_picture = f"no test card for a {self.gop:g} s GOP (assets/{TESTCARD} missing, or shorter)"
        elif _video_packets(frames, S) > room:
            self.no_picture = f"bitrate below {picture_bitrate(self.gop)} for a {self.gop:g} s GOP"
        self.picture = self.no_picture is None
        if frames is not None and self.picture:
            count = _video_packets(frames, S)
        else:
            # bare access unit delimiters, at most one per video packet
            count = max(S, min(_up16(self.frames), room // 16 * 16))
            frames = [_pes(0xE0, _AUD, bounded=False)] * min(self.frames, count)
        video = [((f * self.gop_ticks) // len(frames), unit) for f, unit in enumerate(frames)]
        samples = _audio_frames(self.gop_ticks)
        groups = min(A, samples)
        audio = []
        for g in range(groups):
            first, end = (g * samples) // groups, ((g + 1) * samples) // groups
            body = SILENT_AAC_FRAME * (end - first)
            audio.append((first * AAC_FRAME_TICKS, _pes(0xC0, body, bounded=True)))
        return video, audio, count

    def _packetize(self, pid: int, units: List[Tuple[int, bytes]], slots: List[int],
                   room: int) -> Tuple[dict, dict, int]:
        """
        Spread C{units} over the packet indices C{slots}, each unit starting a
        packet no earlier than its time. Return {packet index: packet},
        {packet index: ticks of the PTS of the unit starting there} and the
        most 27 MHz ticks by which a unit's last packet lags its time.
        """
        P = self.packets
        sizes = [-(-len(unit) // room) for _, unit in units]
        ideals = [bisect.bisect_left(slots, -(-ticks * P // self.gop_ticks)) for ticks, _ in units]
        starts = _place(sizes, ideals, len(slots)) + [len(slots)]
        packets, pts, lateness, cc = {}, {}, 0, 0
        for u, (ticks, unit) in enumerate(units):
            own = slots[starts[u] : starts[u + 1]]
            if len(unit) < len(own) + _PES_HEADER:
                # video only: an H.264 filler NAL unit gives every packet a byte
                assert pid == VIDEO_PID
                stuffing = max(0, len(own) + _PES_HEADER - len(unit) - 6)
                unit += b"\x00\x00\x00\x01\x0c" + b"\xff" * stuffing + b"\x80"
            with_pcr = [self._kinds[i] == "pcr" for i in own]
            rooms = [ts.PACKET_SIZE - 4 - (8 if p else 0) for p in with_pcr]
            for k, (index, piece) in enumerate(zip(own, _chunks(unit, rooms))):
                rap = pid == VIDEO_PID and index == slots[0]
                packets[index] = ts.make_packet(pid, piece, cc=cc, pusi=k == 0, random_access=rap,
                                                pcr=0 if with_pcr[k] else None)
                cc = (cc + 1) & 0x0F
            pts[own[0]] = ticks
            lateness = max(lateness, self.pcr_of(own[-1] + 1) - ticks)
        assert cc == 0, (pid, cc)  # the count is a multiple of 16
        return packets, pts, lateness

    def _build(self) -> Tuple[bytes, Tuple[int, ...], dict]:
        video_units, audio_units, video_count = self._units()
        kinds = self._kinds = self._layout(self.audio_packets, video_count)
        video_slots = [i for i, kind in enumerate(kinds) if kind in ("video", "pcr")]
        audio_slots = [i for i, kind in enumerate(kinds) if kind == "audio"]
        video, video_pts, video_late = self._packetize(VIDEO_PID, video_units, video_slots, _VIDEO_ROOM)
        audio, audio_pts, audio_late = self._packetize(AUDIO_PID, audio_units, audio_slots, _AUDIO_ROOM)
        self.pts_delay = -(-(max(video_late, audio_late) + PTS_MARGIN) // 300) * 300
        cc = {ts.PAT_PID: 0, PMT_PID: 0}
        pat = [ts.make_pat(PMT_PID, cc=n) for n in range(16)]
        pmt = [ts.make_pmt(PMT_PID, VIDEO_PID, [(ts.STREAM_TYPE_H264, VIDEO_PID), (ts.STREAM_TYPE_AAC_ADTS, AUDIO_PID)],
                           cc=n) for n in range(16)]
        null = ts.make_null_packet()
        out: List[bytes] = []
        for index, kind in enumerate(kinds):
            if kind == "pat":
                out.append(pat[cc[ts.PAT_PID]])
                cc[ts.PAT_PID] = (cc[ts.PAT_PID] + 1) & 0x0F
            elif kind == "pmt":
                out.append(pmt[cc[PMT_PID]])
                cc[PMT_PID] = (cc[PMT_PID] + 1) & 0x0F
            elif kind == "null":
                out.append(null)
            else:
                out.append(video[index] if kind != "audio" else audio[index])
        assert all(value == 0 for value in cc.values()), cc  # counts are multiples of 16
        counts = {kind: kinds.count(kind) for kind in set(kinds)}
        # every patch: (packet index, byte offset in the packet, "pcr" or "pts", ticks after the GOP start)
        patches = [(slot, 6, "pcr", self.pcr_of(slot)) for slot in video_slots if kinds[slot] == "pcr"]
        for index, ticks in list(video_pts.items()) + list(audio_pts.items()):
            packet = out[index]
            offset = ts.PACKET_SIZE - len(ts.payload(packet)) + _PTS_OFFSET
            patches.append((index, offset, "pts", ticks + self.pts_delay))
        patches.sort()
        self._patches = tuple(patches)
        self._patch_slots = tuple(p[0] for p in patches)
        self.pts_slots = tuple(sorted(list(video_pts) + list(audio_pts)))
        data = bytearray(b"".join(out))
        self._patch(data, 0, 0, len(patches), 0)
        return bytes(data), tuple(p[0] for p in patches if p[2] == "pcr"), counts

    def _patch(self, chunk: bytearray, base_ticks: int, first: int, last: int, index: int) -> None:
        """Write patches C{first} .. C{last - 1} into C{chunk}, which starts at packet C{index} of a GOP."""
        for slot, offset, kind, ticks in self._patches[first:last]:
            at = (slot - index) * ts.PACKET_SIZE + offset
            if kind == "pcr":
                chunk[at : at + 6] = _pcr_field(base_ticks + ticks)
            else:
                chunk[at : at + 5] = _pts_field(base_ticks + ticks)

    # -- reading

    def pcr_of(self, packet: int) -> int:
        """The PCR of stream packet C{packet} (0 is the first packet of GOP 0)."""
        return (packet * self.gop_ticks) // self.packets

    def packets_at(self, media_seconds: float) -> int:
        """How many packets cover the first C{media_seconds} of the stream."""
        return int(media_seconds * self.packets / self.gop)

    def read(self, first: int, count: int) -> bytes:
        """
        Packets C{first} .. C{first + count - 1} of the endless stream, with
        their PCRs and PTSs patched. Packet C{k * packets} starts GOP C{k}.
        """
        parts: List[bytes] = []
        template, P, slots = self.data, self.packets, self._patch_slots
        while count > 0:
            gop, index = divmod(first, P)
            n = min(count, P - index)
            if gop:
                chunk = bytearray(template[index * ts.PACKET_SIZE : (index + n) * ts.PACKET_SIZE])
                self._patch(chunk, gop * self.gop_ticks, bisect.bisect_left(slots, index),
                            bisect.bisect_left(slots, index + n), index)
                parts.append(bytes(chunk))
            else:
                parts.append(template[index * ts.PACKET_SIZE : (index + n) * ts.PACKET_SIZE])
            first += n
            count -= n
        return parts[0] if len(parts) == 1 else b"".join(parts)


@functools.lru_cache(maxsize=32)
def gop_template(bitrate: int, gop: float) -> GopTemplate:
    """The shared template for (bitrate, gop): built once, used by every session."""
    return GopTemplate(bitrate, gop)


def junk(length: int) -> bytes:
    """C{length} bytes that contain no sync byte."""
    return (_JUNK * (length // len(_JUNK) + 1))[:length]
