# -*- test-case-name: tests.test_hls_segmenter -*-
"""
The stream's own clock at a keyframe block: the PTS of the PES that its
first packet starts (the random-access point), else that packet's PCR, in
90 kHz ticks. Segment durations come from these, never from arrival times.
"""

from __future__ import annotations

from typing import Optional

from acetwist.ts.packet import PACKET_SIZE, pcr

#: 90 kHz timestamps wrap at 2**33
TIMESTAMP_MODULUS = 1 << 33
TICKS_PER_SECOND = 90_000


def pes_pts(packet: bytes) -> Optional[int]:
    """The PTS of the PES header that C{packet} starts, or None."""
    if len(packet) < PACKET_SIZE or not packet[1] & 0x40 or not packet[3] & 0x10:
        return None  # no payload unit start, or no payload
    start = 4
    if packet[3] & 0x20:
        start = 5 + packet[4]
    header = packet[start : start + 14]
    if len(header) < 14 or header[:3] != b"\x00\x00\x01" or not header[7] & 0x80:
        return None
    p = header[9:14]
    return ((p[0] >> 1) & 0x07) << 30 | p[1] << 22 | (p[2] >> 1) << 15 | p[3] << 7 | p[4] >> 1


def keyframe_time(data: bytes) -> Optional[int]:
    """The stream time of a keyframe block's first packet: its PTS, else its PCR, in 90 kHz ticks."""
    packet = data[:PACKET_SIZE]
    pts = pes_pts(packet)
    if pts is not None:
        return pts
    clock = pcr(packet) if len(packet) == PACKET_SIZE else None
    return clock // 300 if clock is not None else None


def elapsed(start: int, end: int) -> float:
    """Seconds from C{start} to C{end} (90 kHz ticks), across a wrap of the 33-bit clock."""
    return ((end - start) % TIMESTAMP_MODULUS) / TICKS_PER_SECOND
