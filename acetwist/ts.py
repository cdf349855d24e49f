# -*- test-case-name: tests.test_ts -*-
"""
Pure MPEG-TS helpers: sync search, packet fields, PSI tables, packet builders,
and an incremental checker used by the simulator, the proxy, the tests and the
benchmarks.

Only what a live proxy needs is here: 188-byte transport packets, PAT/PMT
recognition, adaptation fields (PCR, random access, discontinuity) and
continuity counters. Nothing in this module touches the reactor.
"""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple

PACKET_SIZE = 188
SYNC_BYTE = 0x47
SYNC = b"\x47"
NULL_PID = 0x1FFF
PAT_PID = 0x0000
SYNC_CONFIRMATIONS = 3

#: PMT stream types that carry video (MPEG-1/2, MPEG-4 part 2, H.264, HEVC,
#: AVS/AVS2, VC-1).
VIDEO_STREAM_TYPES = frozenset({0x01, 0x02, 0x10, 0x1B, 0x24, 0x42, 0xD2, 0xEA})

STREAM_TYPE_H264 = 0x1B
STREAM_TYPE_AAC_ADTS = 0x0F


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


# --------------------------------------------------------------------------
# PSI: PAT and PMT


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


# --------------------------------------------------------------------------
# builders (the simulator and the tests make their streams with these)

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


def make_packet(
    pid: int,
    payload: bytes = b"",
    *,
    cc: int = 0,
    pusi: bool = False,
    random_access: bool = False,
    pcr: Optional[int] = None,
    discontinuity: bool = False,
) -> bytes:
    """
    Build one 188-byte packet. An adaptation field is added when a flag or a
    PCR asks for one, or to stuff a short payload to full size.
    """
    flags = (0x80 if discontinuity else 0) | (0x40 if random_access else 0)
    if pcr is not None:
        flags |= 0x10
    field = b""
    if flags or pcr is not None:
        field = bytes([flags])
        if pcr is not None:
            base, ext = divmod(pcr, 300)
            base &= (1 << 33) - 1
            field += bytes(
                [
                    (base >> 25) & 0xFF,
                    (base >> 17) & 0xFF,
                    (base >> 9) & 0xFF,
                    (base >> 1) & 0xFF,
                    ((base & 1) << 7) | 0x7E | ((ext >> 8) & 1),
                    ext & 0xFF,
                ]
            )
    room = PACKET_SIZE - 4
    if field or len(payload) < room:
        # the adaptation field's own length byte, then af_length bytes
        af_length = room - 1 - len(payload)
        if af_length < len(field):
            raise ValueError("payload does not fit in one packet")
        if af_length == 0:
            adaptation = b"\x00"
        else:
            body = field or b"\x00"
            adaptation = bytes([af_length]) + body + b"\xff" * (af_length - len(body))
    else:
        adaptation = b""
    if len(payload) + len(adaptation) > room:
        raise ValueError("payload does not fit in one packet")
    control = (0x20 if adaptation else 0) | (0x10 if payload else 0)
    header = bytes(
        [
            SYNC_BYTE,
            (0x40 if pusi else 0) | ((pid >> 8) & 0x1F),
            pid & 0xFF,
            control | (cc & 0x0F),
        ]
    )
    packet = header + adaptation + payload
    assert len(packet) == PACKET_SIZE, len(packet)
    return packet


def _psi_packet(pid: int, table_id: int, id_field: int, body: bytes, cc: int) -> bytes:
    length = 5 + len(body) + 4
    head = bytes(
        [
            table_id,
            0xB0 | ((length >> 8) & 0x0F),
            length & 0xFF,
            (id_field >> 8) & 0xFF,
            id_field & 0xFF,
            0xC1,  # version 0, current
            0x00,
            0x00,
        ]
    )
    section = head + body
    section += mpeg_crc32(section).to_bytes(4, "big")
    data = b"\x00" + section  # pointer field
    data += b"\xff" * (PACKET_SIZE - 4 - len(data))
    return bytes([SYNC_BYTE, 0x40 | ((pid >> 8) & 0x1F), pid & 0xFF, 0x10 | (cc & 0x0F)]) + data


def make_pat(pmt_pid: int, *, program: int = 1, cc: int = 0, stream_id: int = 1) -> bytes:
    body = bytes([(program >> 8) & 0xFF, program & 0xFF, 0xE0 | ((pmt_pid >> 8) & 0x1F), pmt_pid & 0xFF])
    return _psi_packet(PAT_PID, 0x00, stream_id, body, cc)


def make_pmt(
    pmt_pid: int,
    pcr_pid: int,
    streams: List[Tuple[int, int]],
    *,
    program: int = 1,
    cc: int = 0,
) -> bytes:
    body = bytes([0xE0 | ((pcr_pid >> 8) & 0x1F), pcr_pid & 0xFF, 0xF0, 0x00])
    for stream_type, elementary in streams:
        body += bytes([stream_type, 0xE0 | ((elementary >> 8) & 0x1F), elementary & 0xFF, 0xF0, 0x00])
    return _psi_packet(pmt_pid, 0x02, program, body, cc)


def make_null_packet() -> bytes:
    return bytes([SYNC_BYTE, 0x1F, 0xFF, 0x10]) + b"\xff" * (PACKET_SIZE - 4)


# --------------------------------------------------------------------------
# the incremental checker


class TSChecker:
    """
    Feed it a byte stream in pieces; it tells whether the stream was aligned
    from its first byte, how often it lost sync, the continuity errors per PID,
    and where the random-access points fell.

    Continuity follows ISO/IEC 13818-1: the counter advances on packets with a
    payload, one duplicate is allowed, a set discontinuity indicator resets the
    expectation, and null packets are not counted.
    """

    def __init__(self) -> None:
        self.bytes_fed = 0
        self.packets = 0
        self.aligned_at_start: Optional[bool] = None
        self.resyncs = 0
        self.skipped_bytes = 0
        self.cc_errors = 0
        self.cc_errors_by_pid: Dict[int, int] = {}
        self.pat_seen_at: Optional[int] = None
        self.pmt_seen_at: Optional[int] = None
        self.pmt_pid: Optional[int] = None
        self.video_pid: Optional[int] = None
        self.pids: Dict[int, int] = {}
        self.first_video_packet: Optional[int] = None
        self.first_video_random_access: Optional[bool] = None
        self.psi_before_first_video = False
        #: (packet index, PCR of the nearest PCR-bearing packet or None)
        self.random_access_points: List[Tuple[int, Optional[int]]] = []
        self._tail = b""
        self._synced = False
        self._last_cc: Dict[int, int] = {}
        self._duplicate_seen: Dict[int, bool] = {}
        self._last_pcr: Optional[int] = None

    def feed(self, data: bytes) -> None:
        self.bytes_fed += len(data)
        buf = self._tail + data if self._tail else bytes(data)
        offset = 0
        while True:
            if not self._synced:
                found = find_sync(buf, offset)
                if found < 0:
                    # keep enough to confirm a sync that straddles the next piece
                    keep = PACKET_SIZE * SYNC_CONFIRMATIONS
                    if len(buf) - offset > keep:
                        self.skipped_bytes += len(buf) - offset - keep
                        offset = len(buf) - keep
                    break
                if self.aligned_at_start is None:
                    self.aligned_at_start = found == 0
                self.skipped_bytes += found - offset
                offset = found
                self._synced = True
            if len(buf) - offset < PACKET_SIZE:
                break
            if buf[offset] != SYNC_BYTE:
                self._synced = False
                self.resyncs += 1
                continue
            self._packet(buf, offset)
            offset += PACKET_SIZE
        self._tail = buf[offset:]

    def _packet(self, buf: bytes, offset: int) -> None:
        index = self.packets
        self.packets += 1
        pid = packet_pid(buf, offset)
        self.pids[pid] = self.pids.get(pid, 0) + 1
        self._check_continuity(buf, offset, pid)
        value = pcr(buf, offset)
        if value is not None:
            self._last_pcr = value
        if pid == PAT_PID:
            table = parse_pat(buf[offset : offset + PACKET_SIZE])
            if table:
                if self.pat_seen_at is None:
                    self.pat_seen_at = index
                self.pmt_pid = next(iter(table.values()))
        elif pid == self.pmt_pid:
            parsed = parse_pmt(buf[offset : offset + PACKET_SIZE])
            if parsed is not None:
                if self.pmt_seen_at is None:
                    self.pmt_seen_at = index
                self.video_pid = video_pid_of(parsed[1])
        elif self.video_pid is not None and pid == self.video_pid:
            rap = random_access(buf, offset)
            if self.first_video_packet is None:
                self.first_video_packet = index
                self.first_video_random_access = rap
                self.psi_before_first_video = self.pat_seen_at is not None and self.pmt_seen_at is not None
            if rap:
                self.random_access_points.append((index, value))

    def _check_continuity(self, buf: bytes, offset: int, pid: int) -> None:
        if pid == NULL_PID:
            return
        cc = continuity_counter(buf, offset)
        if not has_payload(buf, offset):
            return
        previous = self._last_cc.get(pid)
        self._last_cc[pid] = cc
        if previous is None or discontinuity(buf, offset):
            self._duplicate_seen[pid] = False
            return
        if cc == (previous + 1) & 0x0F:
            self._duplicate_seen[pid] = False
            return
        if cc == previous and not self._duplicate_seen.get(pid):
            self._duplicate_seen[pid] = True
            return
        self.cc_errors += 1
        self.cc_errors_by_pid[pid] = self.cc_errors_by_pid.get(pid, 0) + 1

    @property
    def trailing_bytes(self) -> int:
        """Bytes held back after the last whole packet."""
        return len(self._tail)

    def random_access_intervals(self) -> List[float]:
        """Seconds between consecutive random-access points, from their PCRs."""
        times = [p / 27_000_000 for _, p in self.random_access_points if p is not None]
        return [b - a for a, b in zip(times, times[1:])]

    def summary(self) -> Dict[str, object]:
        return {
            "bytes": self.bytes_fed,
            "packets": self.packets,
            "aligned_at_start": self.aligned_at_start,
            "resyncs": self.resyncs,
            "skipped_bytes": self.skipped_bytes,
            "cc_errors": self.cc_errors,
            "random_access_points": len(self.random_access_points),
            "first_video_random_access": self.first_video_random_access,
            "psi_before_first_video": self.psi_before_first_video,
        }
