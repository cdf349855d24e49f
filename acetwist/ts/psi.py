# -*- test-case-name: tests.test_ts -*-
"""
Program-specific information: the PAT (program number to PMT PID) and the
PMT (the program's elementary streams), read from a single packet, and the
CRC-32/MPEG-2 that closes every section.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from acetwist.ts.packet import PAT_PID, packet_pid, payload, payload_unit_start

#: PMT stream types that carry video (MPEG-1/2, MPEG-4 part 2, H.264, HEVC,
#: AVS/AVS2, VC-1).
VIDEO_STREAM_TYPES = frozenset({0x01, 0x02, 0x10, 0x1B, 0x24, 0x42, 0xD2, 0xEA})

STREAM_TYPE_H264 = 0x1B
STREAM_TYPE_AAC_ADTS = 0x0F


def _section(packet: bytes) -> Optional[bytes]:
    """The PSI section starting in this packet (PUSI set), or None."""
    if not payload_unit_start(packet):
        return None
    body = payload(packet)
    if not body:
        return None
    start = 1 + body[0]
    if start + 3 > len(body):
        return None
    length = ((body[start + 1] & 0x0F) << 8) | body[start + 2]
    section = body[start : start + 3 + length]
    if len(section) < 3 + length or length < 9:
        return None
    return section


def _valid_crc(section: bytes) -> bool:
    return mpeg_crc32(section[:-4]) == int.from_bytes(section[-4:], "big")


def parse_pat(packet: bytes) -> Optional[Dict[int, int]]:
    """
    Map program number to PMT PID for a PAT packet whose section fits in it
    and whose CRC is right; None otherwise.
    """
    if packet_pid(packet) != PAT_PID:
        return None
    section = _section(packet)
    if section is None or section[0] != 0x00 or not _valid_crc(section):
        return None
    programs: Dict[int, int] = {}
    entries = section[8:-4]
    for i in range(0, len(entries) - 3, 4):
        number = (entries[i] << 8) | entries[i + 1]
        target = ((entries[i + 2] & 0x1F) << 8) | entries[i + 3]
        if number != 0:
            programs[number] = target
    return programs


def parse_pmt(packet: bytes) -> Optional[Tuple[int, List[Tuple[int, int]]]]:
    """
    Return C{(pcr_pid, [(stream_type, elementary_pid), ...])} for a PMT
    section that fits in this packet and has a right CRC; None otherwise.
    """
    section = _section(packet)
    if section is None or section[0] != 0x02 or not _valid_crc(section):
        return None
    pcr_pid = ((section[8] & 0x1F) << 8) | section[9]
    info_length = ((section[10] & 0x0F) << 8) | section[11]
    i = 12 + info_length
    streams: List[Tuple[int, int]] = []
    end = len(section) - 4
    while i + 5 <= end:
        stream_type = section[i]
        elementary = ((section[i + 1] & 0x1F) << 8) | section[i + 2]
        es_info = ((section[i + 3] & 0x0F) << 8) | section[i + 4]
        streams.append((stream_type, elementary))
        i += 5 + es_info
    return pcr_pid, streams


def video_pid_of(streams: List[Tuple[int, int]]) -> Optional[int]:
    for stream_type, elementary in streams:
        if stream_type in VIDEO_STREAM_TYPES:
            return elementary
    return None


_CRC_TABLE: List[int] = []
for _n in range(256):
    _c = _n << 24
    for _ in range(8):
        _c = ((_c << 1) ^ 0x04C11DB7) if _c & 0x80000000 else (_c << 1)
    _CRC_TABLE.append(_c & 0xFFFFFFFF)


def mpeg_crc32(data: bytes) -> int:
    """The CRC-32/MPEG-2 that closes every PSI section."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[(crc >> 24) ^ byte]
    return crc
