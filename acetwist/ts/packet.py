# -*- test-case-name: tests.test_ts -*-
"""
One 188-byte transport packet: finding packet sync in a byte stream, and
reading a packet's header and adaptation field.
"""

from __future__ import annotations

from typing import Iterator, Optional

PACKET_SIZE = 188
SYNC_BYTE = 0x47
SYNC = b"\x47"
NULL_PID = 0x1FFF
PAT_PID = 0x0000
SYNC_CONFIRMATIONS = 3


# --------------------------------------------------------------------------
# sync


def find_sync(data: bytes, start: int = 0, confirmations: int = SYNC_CONFIRMATIONS) -> int:
    """
    Return the first offset >= C{start} where C{confirmations} sync bytes
    stand 188 bytes apart, or -1 when C{data} holds no such run.

    A candidate near the end of C{data} that cannot be confirmed for lack of
    bytes is not accepted: the caller keeps the tail and searches again when
    more data arrives.
    """
    span = PACKET_SIZE * (confirmations - 1)
    last = len(data) - span - 1
    i = data.find(SYNC, start)
    while 0 <= i <= last:
        if all(data[i + PACKET_SIZE * k] == SYNC_BYTE for k in range(1, confirmations)):
            return i
        i = data.find(SYNC, i + 1)
    return -1


def is_aligned(data: bytes) -> bool:
    """True when C{data} is a whole number of packets, each starting with 0x47."""
    if len(data) % PACKET_SIZE:
        return False
    count = len(data) // PACKET_SIZE
    return data[::PACKET_SIZE] == SYNC * count


def split_packets(data: bytes) -> Iterator[bytes]:
    """Yield the 188-byte packets of aligned C{data} (a trailing fragment is dropped)."""
    for offset in range(0, len(data) - PACKET_SIZE + 1, PACKET_SIZE):
        yield data[offset : offset + PACKET_SIZE]


# --------------------------------------------------------------------------
# packet fields (each takes one 188-byte packet, or a buffer and an offset)


def packet_pid(packet: bytes, offset: int = 0) -> int:
    return ((packet[offset + 1] & 0x1F) << 8) | packet[offset + 2]


def payload_unit_start(packet: bytes, offset: int = 0) -> bool:
    return bool(packet[offset + 1] & 0x40)


def continuity_counter(packet: bytes, offset: int = 0) -> int:
    return packet[offset + 3] & 0x0F


def has_adaptation_field(packet: bytes, offset: int = 0) -> bool:
    return bool(packet[offset + 3] & 0x20)


def has_payload(packet: bytes, offset: int = 0) -> bool:
    return bool(packet[offset + 3] & 0x10)


def _adaptation_flags(packet: bytes, offset: int) -> int:
    if not packet[offset + 3] & 0x20 or packet[offset + 4] == 0:
        return 0
    return packet[offset + 5]


def random_access(packet: bytes, offset: int = 0) -> bool:
    """The adaptation field's C{random_access_indicator}."""
    return bool(_adaptation_flags(packet, offset) & 0x40)


def discontinuity(packet: bytes, offset: int = 0) -> bool:
    """The adaptation field's C{discontinuity_indicator}."""
    return bool(_adaptation_flags(packet, offset) & 0x80)


def pcr(packet: bytes, offset: int = 0) -> Optional[int]:
    """The packet's PCR in 27 MHz ticks, or None when it carries none."""
    if not _adaptation_flags(packet, offset) & 0x10 or packet[offset + 4] < 7:
        return None
    b = packet[offset + 6 : offset + 12]
    base = (b[0] << 25) | (b[1] << 17) | (b[2] << 9) | (b[3] << 1) | (b[4] >> 7)
    ext = ((b[4] & 0x01) << 8) | b[5]
    return base * 300 + ext


def payload(packet: bytes) -> bytes:
    """The packet's payload (after any adaptation field)."""
    start = 4
    if packet[3] & 0x20:
        start = 5 + packet[4]
    if not packet[3] & 0x10 or start >= PACKET_SIZE:
        return b""
    return packet[start:PACKET_SIZE]
