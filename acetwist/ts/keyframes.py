# -*- test-case-name: tests.test_ring -*-
"""
L{KeyframeScanner}: where, in runs of aligned packets, the ring's keyframe
blocks begin, and which PAT and PMT to send in front of them.

It looks at packet headers column-wise: for a run of aligned packets it
slices one header byte of every packet at once (C{buf[i::188]}), maps the
columns through translation tables and combines them as big integers, so
Python only ever loops over the few packets that matter (PAT, PMT,
random-access points), never over every packet or byte.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Tuple

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from acetwist.ts.packet import PACKET_SIZE, PAT_PID
from acetwist.ts.psi import parse_pat, parse_pmt, video_pid_of


def _table(predicate: Callable[[int], bool]) -> bytes:
    """A C{bytes.translate} table mapping each byte to 1 where C{predicate} holds, else 0."""
    return bytes(1 if predicate(value) else 0 for value in range(256))


#: byte 3: adaptation_field_control says an adaptation field is present
_HAS_AF = _table(lambda b: bool(b & 0x20))
#: byte 4: adaptation_field_length is not zero (so byte 5 holds the flags)
_NONZERO = _table(lambda b: b != 0)
#: byte 5: random_access_indicator
_RAI = _table(lambda b: bool(b & 0x40))
#: byte 1: payload_unit_start_indicator
_PUSI = _table(lambda b: bool(b & 0x40))

_pid_tables: Dict[int, Tuple[bytes, bytes]] = {}


def _pid_tables_for(pid: int) -> Tuple[bytes, bytes]:
    """Translate tables matching C{pid}'s high five bits (byte 1) and low byte (byte 2)."""
    tables = _pid_tables.get(pid)
    if tables is None:
        high, low = pid >> 8, pid & 0xFF
        tables = (_table(lambda b: (b & 0x1F) == high), _table(lambda b: b == low))
        _pid_tables[pid] = tables
    return tables


def _mask(column: bytes, table: bytes) -> int:
    """One bit-ish byte per packet, as a big integer (a 0x01 byte where the table says so)."""
    return int.from_bytes(column.translate(table), "big")


def _indices(mask: int, count: int) -> List[int]:
    """Packet indices whose byte is set in C{mask} (built by L{_mask} over C{count} packets)."""
    flags = mask.to_bytes(count, "big")
    found = []
    i = flags.find(1)
    while i >= 0:
        found.append(i)
        i = flags.find(1, i + 1)
    return found


# event kinds, ordered so a keyframe sorts before PSI on the same packet
_KEYFRAME, _PAT, _PMT = 0, 1, 2


class KeyframeScanner:
    """
    Follows a stream's PAT and PMT and finds its keyframes: packets of the
    video PID with the random-access indicator set (before the video PID is
    known, any packet with it set).

    @ivar pmt_pid: the PMT PID learnt from the PAT, or None.
    @ivar video_pid: the video PID learnt from the PMT, or None.
    @ivar random_access_seen: True once a random-access indicator was seen on
        the video PID; until then, after C{keyframe_fallback} seconds, a
        payload start on the video PID (at most one per C{keyframe_fallback})
        stands in for it.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, keyframe_fallback: float) -> None:
        self.clock = clock
        self.keyframe_fallback = keyframe_fallback
        self.pmt_pid: Optional[int] = None
        self.video_pid: Optional[int] = None
        self.random_access_seen = False
        self._pat: Optional[bytes] = None
        self._pmt: Optional[bytes] = None
        self._video_known_at: Optional[float] = None
        self._last_fallback_at: Optional[float] = None

    def forget_tables(self) -> None:
        """Forget the PAT and PMT packets in force (a new upstream sends its own); the PIDs stay watched."""
        self._pat = None
        self._pmt = None

    def scan(self, buf: bytes, start: int, count: int) -> Tuple[List[Tuple[int, bytes]], int]:
        """
        Look at the C{count} aligned packets of C{buf} from offset C{start}.

        Return the keyframes found, each as C{(packet index, PAT + PMT in
        force there)}, and how many packets were scanned: C{count}, or fewer
        when a PAT or PMT changed the PIDs being watched, in which case the
        scan stopped right after that table and the rest must be scanned
        again (with the new PIDs).
        """
        end = start + count * PACKET_SIZE
        pid_high = buf[start + 1 : end : PACKET_SIZE]
        pid_low = buf[start + 2 : end : PACKET_SIZE]

        events: List[Tuple[int, int]] = []
        for kind, pid in ((_PAT, PAT_PID), (_PMT, self.pmt_pid)):
            if pid is None:
                continue
            high, low = _pid_tables_for(pid)
            mask = _mask(pid_low, low)
            if mask:
                mask &= _mask(pid_high, high)
            if mask:
                events.extend((i, kind) for i in _indices(mask, count))

        mask = _mask(buf[start + 3 : end : PACKET_SIZE], _HAS_AF)
        if mask:
            mask &= _mask(buf[start + 4 : end : PACKET_SIZE], _NONZERO)
        if mask:
            mask &= _mask(buf[start + 5 : end : PACKET_SIZE], _RAI)
        if mask and self.video_pid is not None:
            high, low = _pid_tables_for(self.video_pid)
            mask &= _mask(pid_low, low) & _mask(pid_high, high)
            if mask:
                self.random_access_seen = True
        if mask:
            events.extend((i, _KEYFRAME) for i in _indices(mask, count))
        elif self._fallback_due():
            assert self.video_pid is not None
            high, low = _pid_tables_for(self.video_pid)
            mask = _mask(pid_high, _PUSI)
            if mask:
                mask &= _mask(pid_low, low) & _mask(pid_high, high)
            if mask:
                self._last_fallback_at = self.clock.seconds()
                events.append((_indices(mask, count)[0], _KEYFRAME))

        keyframes: List[Tuple[int, bytes]] = []
        if events:
            events.sort()
            for i, kind in events:
                if kind == _KEYFRAME:
                    keyframes.append((i, (self._pat or b"") + (self._pmt or b"")))
                    continue
                offset = start + i * PACKET_SIZE
                packet = buf[offset : offset + PACKET_SIZE]
                changed = self._on_pat(packet) if kind == _PAT else self._on_pmt(packet)
                if changed:
                    return keyframes, i + 1
        return keyframes, count

    def _fallback_due(self) -> bool:
        """No random-access flag on the video PID yet: is it time to take a payload start as a keyframe?"""
        if self.random_access_seen or self.video_pid is None or self._video_known_at is None:
            return False
        since = self._last_fallback_at if self._last_fallback_at is not None else self._video_known_at
        return self.clock.seconds() - since >= self.keyframe_fallback

    def _on_pat(self, packet: bytes) -> bool:
        """Remember a PAT; True when it changed the PMT PID."""
        if self._pat is not None and self._pat[4:] == packet[4:]:
            self._pat = packet  # same table, new continuity counter
            return False
        programs = parse_pat(packet)
        if not programs:
            return False
        self._pat = packet
        pmt_pid = next(iter(programs.values()))
        if pmt_pid == self.pmt_pid:
            return False
        self.log.info("TS program map on PID {pid:#x}", pid=pmt_pid)
        self.pmt_pid = pmt_pid
        self._pmt = None
        return True

    def _on_pmt(self, packet: bytes) -> bool:
        """Remember a PMT; True when it changed the video PID."""
        if self._pmt is not None and self._pmt[4:] == packet[4:]:
            self._pmt = packet
            return False
        parsed = parse_pmt(packet)
        if parsed is None:
            return False
        self._pmt = packet
        video_pid = video_pid_of(parsed[1])
        if video_pid is None or video_pid == self.video_pid:
            return False
        self.log.info("TS video on PID {pid:#x}", pid=video_pid)
        self.video_pid = video_pid
        if self._video_known_at is None:
            self._video_known_at = self.clock.seconds()
        return True
