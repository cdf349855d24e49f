# -*- test-case-name: tests.test_ts,tests.test_sim_stream -*-
"""
L{TSChecker}: follows a stream fed in pieces and reports its sync, its
continuity errors and its random-access points (the simulator's own checks,
the tests' players and the benchmarks use it).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from acetwist.ts.packet import (
    NULL_PID,
    PACKET_SIZE,
    PAT_PID,
    SYNC_BYTE,
    SYNC_CONFIRMATIONS,
    continuity_counter,
    discontinuity,
    find_sync,
    has_payload,
    packet_pid,
    pcr,
    random_access,
)
from acetwist.ts.psi import parse_pat, parse_pmt, video_pid_of


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
