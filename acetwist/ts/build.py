# -*- test-case-name: tests.test_ts,tests.test_sim_tsgen -*-
"""
Packets and tables made to order: the simulator and the tests build their
streams with these.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

from acetwist.ts.packet import PACKET_SIZE, PAT_PID, SYNC_BYTE
from acetwist.ts.psi import mpeg_crc32


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
