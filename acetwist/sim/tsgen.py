# -*- test-case-name: tests.test_sim_tsgen -*-
"""
Cheap, valid MPEG-TS for the simulator.

One GOP is built once per (bitrate, gop) as a byte template: PAT and PMT at
the start of every slice (at most 100 ms apart), a PCR on the first video
packet of every slice, a random-access H.264 frame start (PUSI plus
random_access_indicator plus PCR) at the start of the GOP, audio packets
spread through it and a few null packets to hit the bitrate. Every PID's
packet count in the GOP is a multiple of 16, so continuity counters wrap
exactly and the template repeats verbatim: producing the stream costs one
slice copy and a handful of 6-byte PCR patches per write.

The payloads are synthetic (PES headers without timestamps, an access unit
delimiter, filler): the stream is structurally valid TS, not a picture.
"""

from __future__ import annotations

import bisect
import functools
import math
from typing import List, Tuple

from acetwist import ts

PMT_PID = 0x1000
VIDEO_PID = 0x100
AUDIO_PID = 0x101
FRAMES_PER_SECOND = 25
AUDIO_BITRATE = 128_000
PSI_INTERVAL = 0.1  # seconds, the most allowed between PATs (and between PCRs)
PCR_HZ = 27_000_000
PCR_MODULUS = (1 << 33) * 300
PACKET_BITS = ts.PACKET_SIZE * 8

_VIDEO_PES_START = bytes([0, 0, 1, 0xE0, 0, 0, 0x80, 0, 0]) + bytes([0, 0, 0, 1, 0x09, 0xF0]) + bytes([0, 0, 0, 1, 0x0C])
_JUNK = b"\xde\xad\xbe\xef"  # never contains 0x47


def _up16(n: int) -> int:
    return max(16, -(-n // 16) * 16)


def _pcr_field(value: int) -> bytes:
    """The six PCR bytes of an adaptation field for C{value} in 27 MHz ticks."""
    base, ext = divmod(value % PCR_MODULUS, 300)
    return ((base << 15) | 0x7E00 | ext).to_bytes(6, "big")


def minimum_bitrate(gop: float) -> int:
    """The lowest bitrate whose GOP fits PSI, audio and video for a GOP of C{gop} seconds."""
    slices = _up16(math.ceil(gop / PSI_INTERVAL - 1e-9))
    packets = 3 * slices + 16
    return math.ceil((packets + 0.5) * PACKET_BITS / gop)


class GopTemplate:
    """
    One GOP of packets, repeatable verbatim; only PCR fields change.

    @ivar packets: packets per GOP.
    @ivar data: the GOP bytes with every PCR field set for GOP 0.
    @ivar pcr_slots: packet indices (within the GOP) that carry a PCR.
    @ivar bitrate: the exact bitrate of the template (packets x 1504 / gop).
    """

    def __init__(self, bitrate: int, gop: float) -> None:
        if gop <= 0:
            raise ValueError("gop must be positive")
        self.gop = gop
        self.slices = _up16(math.ceil(gop / PSI_INTERVAL - 1e-9))
        self.packets = round(bitrate * gop / PACKET_BITS)
        if self.packets < 3 * self.slices + 16:
            raise ValueError(f"bitrate {bitrate} is too low for a {gop} s GOP (minimum {minimum_bitrate(gop)})")
        self.bitrate = self.packets * PACKET_BITS / gop
        self.byte_rate = self.bitrate / 8
        self.gop_ticks = round(gop * PCR_HZ)
        self.data, self.pcr_slots, self.counts = self._build()
        self.frames = max(1, round(FRAMES_PER_SECOND * gop))

    # -- building

    def _layout(self) -> List[str]:
        P, S = self.packets, self.slices
        audio = _up16(math.ceil(min(AUDIO_BITRATE, self.bitrate / 8) * self.gop / PACKET_BITS))
        video = (P - 2 * S - audio) // 16 * 16
        if video < S:
            audio = 16
            video = (P - 2 * S - audio) // 16 * 16
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

    def _build(self) -> Tuple[bytes, Tuple[int, ...], dict]:
        kinds = self._layout()
        video_total = sum(1 for k in kinds if k in ("video", "pcr"))
        frames = max(1, round(FRAMES_PER_SECOND * self.gop))
        frame_starts = {(f * video_total) // frames for f in range(frames)}
        cc = {ts.PAT_PID: 0, PMT_PID: 0, VIDEO_PID: 0, AUDIO_PID: 0}
        pat = [ts.make_pat(PMT_PID, cc=n) for n in range(16)]
        pmt = [ts.make_pmt(PMT_PID, VIDEO_PID, [(ts.STREAM_TYPE_H264, VIDEO_PID), (ts.STREAM_TYPE_AAC_ADTS, AUDIO_PID)],
                           cc=n) for n in range(16)]
        null = ts.make_null_packet()
        out: List[bytes] = []
        slots: List[int] = []
        video_index = 0

        def next_cc(pid: int) -> int:
            value = cc[pid]
            cc[pid] = (value + 1) & 0x0F
            return value

        for index, kind in enumerate(kinds):
            if kind == "pat":
                out.append(pat[next_cc(ts.PAT_PID)])
            elif kind == "pmt":
                out.append(pmt[next_cc(PMT_PID)])
            elif kind == "null":
                out.append(null)
            elif kind == "audio":
                body = bytes(160)
                pes = bytes([0, 0, 1, 0xC0]) + (3 + len(body)).to_bytes(2, "big") + bytes([0x80, 0, 0]) + body
                out.append(ts.make_packet(AUDIO_PID, pes, cc=next_cc(AUDIO_PID), pusi=True))
            else:
                frame_start = video_index in frame_starts
                with_pcr = kind == "pcr"
                room = 184 - (8 if with_pcr else 0)
                if frame_start:
                    body = _VIDEO_PES_START + b"\xff" * (room - len(_VIDEO_PES_START))
                else:
                    body = b"\xff" * room
                out.append(ts.make_packet(VIDEO_PID, body, cc=next_cc(VIDEO_PID), pusi=frame_start,
                                          random_access=video_index == 0, pcr=0 if with_pcr else None))
                if with_pcr:
                    slots.append(index)
                video_index += 1
        assert all(value == 0 for value in cc.values()), cc  # counts are multiples of 16
        counts = {kind: kinds.count(kind) for kind in set(kinds)}
        data = bytearray(b"".join(out))
        for slot in slots:
            offset = slot * ts.PACKET_SIZE + 6
            data[offset : offset + 6] = _pcr_field(self.pcr_of(slot))
        return bytes(data), tuple(slots), counts

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
        their PCRs patched. Packet C{k * packets} starts GOP C{k}.
        """
        parts: List[bytes] = []
        template, P, slots = self.data, self.packets, self.pcr_slots
        while count > 0:
            gop, index = divmod(first, P)
            n = min(count, P - index)
            chunk = bytearray(template[index * ts.PACKET_SIZE : (index + n) * ts.PACKET_SIZE])
            if gop:
                base = gop * P
                for s in range(bisect.bisect_left(slots, index), bisect.bisect_left(slots, index + n)):
                    slot = slots[s]
                    offset = (slot - index) * ts.PACKET_SIZE + 6
                    chunk[offset : offset + 6] = _pcr_field(self.pcr_of(base + slot))
            parts.append(bytes(chunk))
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
