# -*- test-case-name: tests.test_ts -*-
"""
MPEG-TS for a live proxy: 188-byte transport packets, PAT/PMT recognition,
adaptation fields (PCR, random access, discontinuity) and continuity
counters. Nothing in this package touches the reactor.

- L{acetwist.ts.packet}: sync search and the fields of one packet.
- L{acetwist.ts.psi}: the PAT and PMT, and the CRC that closes them.
- L{acetwist.ts.build}: packets and tables made to order (the simulator and
  the tests make their streams with these).
- L{acetwist.ts.checker}: L{TSChecker}, which follows a stream fed in pieces
  and counts what is wrong with it (tests and benchmarks).
- L{acetwist.ts.keyframes}: L{KeyframeScanner}, the ring's column-wise search
  for random-access points and tables in runs of aligned packets.

Everything but the scanner is re-exported here, so C{from acetwist import ts}
then C{ts.make_packet(...)} works.
"""

from acetwist.ts.build import make_null_packet, make_packet, make_pat, make_pmt
from acetwist.ts.checker import TSChecker
from acetwist.ts.packet import (
    NULL_PID,
    PACKET_SIZE,
    PAT_PID,
    SYNC,
    SYNC_BYTE,
    SYNC_CONFIRMATIONS,
    continuity_counter,
    discontinuity,
    find_sync,
    has_adaptation_field,
    has_payload,
    is_aligned,
    packet_pid,
    payload,
    payload_unit_start,
    pcr,
    random_access,
    split_packets,
)
from acetwist.ts.psi import (
    STREAM_TYPE_AAC_ADTS,
    STREAM_TYPE_H264,
    VIDEO_STREAM_TYPES,
    mpeg_crc32,
    parse_pat,
    parse_pmt,
    video_pid_of,
)

__all__ = [
    "NULL_PID",
    "PACKET_SIZE",
    "PAT_PID",
    "STREAM_TYPE_AAC_ADTS",
    "STREAM_TYPE_H264",
    "SYNC",
    "SYNC_BYTE",
    "SYNC_CONFIRMATIONS",
    "TSChecker",
    "VIDEO_STREAM_TYPES",
    "continuity_counter",
    "discontinuity",
    "find_sync",
    "has_adaptation_field",
    "has_payload",
    "is_aligned",
    "make_null_packet",
    "make_packet",
    "make_pat",
    "make_pmt",
    "mpeg_crc32",
    "packet_pid",
    "parse_pat",
    "parse_pmt",
    "payload",
    "payload_unit_start",
    "pcr",
    "random_access",
    "split_packets",
    "video_pid_of",
]
