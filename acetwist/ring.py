# -*- test-case-name: tests.test_ring -*-
"""
The TS ring: raw upstream bytes in, 188-aligned L{Block}s out.

L{TSRing.feed} takes the engine's bytes in pieces of any size and alignment,
finds and keeps packet sync, and cuts blocks of whole packets: when a block is
full, when the flush interval has passed since its first packet (so low
bitrates are not delayed), and right before every random-access packet, so a
keyframe block always begins with its random-access point and carries the PAT
and PMT in force to send in front of it.

The ring keeps the newest blocks, bounded by bytes (strictly) and by age (never
dropping the newest keyframe block), and serves them by sequence number to the
players' sinks, which read through cursors and hold no copies.

Ingest looks at packet headers column-wise: for a run of aligned packets it
slices one header byte of every packet at once (C{buf[i::188]}), maps the
columns through translation tables and combines them as big integers, so
Python only ever loops over the few packets that matter (PAT, PMT,
random-access points), never over every packet or byte.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Callable, Dict, List, Optional, Union

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from acetwist.interfaces import Block
from acetwist.ts import PACKET_SIZE, PAT_PID, SYNC, find_sync, parse_pat, parse_pmt, video_pid_of

_Part = Union[bytes, memoryview]

#: Unsynced bytes kept for the next piece: a sync candidate within the last
#: two packets of a piece cannot be confirmed yet (L{find_sync} needs three).
_UNCONFIRMED_TAIL = 2 * PACKET_SIZE


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

_pid_tables: Dict[int, tuple[bytes, bytes]] = {}


def _pid_tables_for(pid: int) -> tuple[bytes, bytes]:
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


class TSRing:
    """
    Aligned blocks of a channel's MPEG-TS, with a keyframe index and bounded
    history.

    @ivar first_seq: seq of the oldest block kept (equals C{next_seq} when empty).
    @ivar next_seq: seq the next block will get.
    @ivar segment: segment the next block will get (see L{discontinuity}).
    @ivar total_bytes: bytes of C{data} in the kept blocks.
    @ivar bytes_in: raw bytes fed.
    @ivar resyncs: times a packet boundary did not hold a sync byte.
    @ivar skipped_bytes: junk dropped while looking for sync.
    @ivar blocks_cut: blocks appended (cut here or given to L{append_block}).
    @ivar keyframes: keyframe blocks appended.
    @ivar pmt_pid: the PMT PID learnt from the PAT, or None.
    @ivar video_pid: the video PID learnt from the PMT, or None.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        *,
        block_size: int = 348 * PACKET_SIZE,
        flush_interval: float = 0.05,
        max_seconds: float = 10.0,
        max_bytes: int = 64 * 1024 * 1024,
        on_block: Optional[Callable[[Block], None]] = None,
        keyframe_fallback: float = 3.0,
    ) -> None:
        if block_size < PACKET_SIZE:
            raise ValueError(f"block_size must hold at least one packet, not {block_size}")
        self.clock = clock
        self.block_size = block_size - block_size % PACKET_SIZE
        self.flush_interval = flush_interval
        self.max_seconds = max_seconds
        self.max_bytes = max_bytes
        self.on_block = on_block
        self.keyframe_fallback = keyframe_fallback

        # kept blocks
        self._blocks: Dict[int, Block] = {}
        self._starts: Dict[int, int] = {}  # seq -> bytes appended before that block
        self._keyframe_seqs: List[int] = []
        self._appended = 0
        self.first_seq = 0
        self.next_seq = 0
        self.segment = 0
        self.total_bytes = 0

        # ingest state
        self._tail = b""
        self._synced = False
        self._parts: List[_Part] = []
        self._pending_packets = 0
        self._pending_keyframe = False
        self._pending_psi = b""
        self._timer: Optional[IDelayedCall] = None
        self._pat: Optional[bytes] = None
        self._pmt: Optional[bytes] = None
        self._closed = False

        self.bytes_in = 0
        self.resyncs = 0
        self.skipped_bytes = 0
        self.blocks_cut = 0
        self.keyframes = 0
        self.pmt_pid: Optional[int] = None
        self.video_pid: Optional[int] = None
        #: True once a random-access indicator was seen on the video PID; until
        #: then, after C{keyframe_fallback} seconds, a payload start on the
        #: video PID (at most one per C{keyframe_fallback}) stands in for it.
        self.random_access_seen = False
        self._video_known_at: Optional[float] = None
        self._last_fallback_at: Optional[float] = None

    # ------------------------------------------------------------ ingest

    def feed(self, data: bytes) -> None:
        """Take raw upstream bytes: any alignment, any piece size, junk allowed."""
        if self._closed or not data:
            return
        self.bytes_in += len(data)
        buf = self._tail + data if self._tail else bytes(data)
        self._tail = b""
        view = memoryview(buf)
        size = len(buf)
        offset = 0
        while offset < size and not self._closed:
            if not self._synced:
                found = find_sync(buf, offset)
                if found < 0:
                    keep = max(offset, size - _UNCONFIRMED_TAIL)
                    self.skipped_bytes += keep - offset
                    offset = keep
                    break
                if found > offset:
                    self.skipped_bytes += found - offset
                    self.log.debug("TS sync found after {skipped} bytes of junk", skipped=found - offset)
                offset = found
                self._synced = True
            count = (size - offset) // PACKET_SIZE
            if not count:
                break
            starts = buf[offset : offset + count * PACKET_SIZE : PACKET_SIZE]
            good = count - len(starts.lstrip(SYNC))
            if good:
                self._take(buf, view, offset, good)
                offset += good * PACKET_SIZE
            if good < count:
                self.resyncs += 1
                self._synced = False
                self.log.debug("TS sync lost at a packet boundary; searching again")
        if offset < size and not self._closed:
            self._tail = buf[offset:]

    def flush(self) -> None:
        """Cut the pending partial block now, if there is one."""
        self._cut()

    def discontinuity(self) -> None:
        """
        The upstream was replaced. Whole packets still pending become the last
        block of the old segment; the carried partial packet is dropped, sync
        is searched afresh, the remembered PAT/PMT are forgotten (the new
        upstream's own are sent in front of its keyframes), and the next block
        starts a new segment.
        """
        self._cut()
        self._tail = b""
        self._synced = False
        self._pat = None
        self._pmt = None
        self.segment += 1

    def append_block(self, data: bytes, keyframe: bool, psi: bytes) -> Block:
        """
        Append an already-cut block of whole packets (from another worker's
        mirror); the ring gives it its own seq, segment and creation time.
        """
        if not data or len(data) % PACKET_SIZE:
            raise ValueError(f"a block is a whole number of packets, not {len(data)} bytes")
        self._cut()
        return self._append(bytes(data), keyframe, bytes(psi) if keyframe else b"")

    def close(self) -> None:
        """Cancel the flush timer, release every block at once, and ignore later feeds."""
        self._closed = True
        self._cancel_timer()
        self._parts = []
        self._pending_packets = 0
        self._tail = b""
        self.on_block = None
        while self._blocks:
            self._drop_oldest()

    # ------------------------------------------------------------ reading

    def __len__(self) -> int:
        return len(self._blocks)

    def get(self, seq: int) -> Optional[Block]:
        """The block with C{seq}, or None when it is not (or no longer, or not yet) kept."""
        return self._blocks.get(seq)

    def latest_keyframe(self) -> Optional[Block]:
        """The newest kept keyframe block."""
        if not self._keyframe_seqs:
            return None
        return self._blocks[self._keyframe_seqs[-1]]

    def next_keyframe(self, from_seq: int) -> Optional[Block]:
        """The first kept keyframe block with C{seq >= from_seq}."""
        seqs = self._keyframe_seqs
        i = bisect_left(seqs, from_seq)
        if i == len(seqs):
            return None
        return self._blocks[seqs[i]]

    def bytes_from(self, seq: int) -> int:
        """Bytes in the kept blocks from C{seq} to the newest (a cursor's lag)."""
        if seq >= self.next_seq:
            return 0
        if seq <= self.first_seq:
            return self.total_bytes
        return self._appended - self._starts[seq]

    # ------------------------------------------------------------ internals

    def _take(self, buf: bytes, view: memoryview, base: int, count: int) -> None:
        """Consume C{count} aligned packets of C{buf} starting at C{base}."""
        first = 0
        while first < count and not self._closed:
            first = self._scan(buf, view, base, first, count)

    def _scan(self, buf: bytes, view: memoryview, base: int, first: int, count: int) -> int:
        """
        Consume packets C{first..count-1}; return where to continue. A PAT or
        PMT that changes the PIDs being watched stops the scan after itself so
        the rest is scanned with the new PIDs.
        """
        start = base + first * PACKET_SIZE
        end = base + count * PACKET_SIZE
        n = count - first
        pid_high = buf[start + 1 : end : PACKET_SIZE]
        pid_low = buf[start + 2 : end : PACKET_SIZE]

        events: List[tuple[int, int]] = []
        for kind, pid in ((_PAT, PAT_PID), (_PMT, self.pmt_pid)):
            if pid is None:
                continue
            high, low = _pid_tables_for(pid)
            mask = _mask(pid_low, low)
            if mask:
                mask &= _mask(pid_high, high)
            if mask:
                events.extend((i, kind) for i in _indices(mask, n))

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
            events.extend((i, _KEYFRAME) for i in _indices(mask, n))
        elif self._fallback_due():
            assert self.video_pid is not None
            high, low = _pid_tables_for(self.video_pid)
            mask = _mask(pid_high, _PUSI)
            if mask:
                mask &= _mask(pid_low, low) & _mask(pid_high, high)
            if mask:
                self._last_fallback_at = self.clock.seconds()
                events.append((_indices(mask, n)[0], _KEYFRAME))

        mark = first
        if events:
            events.sort()
            for i, kind in events:
                index = first + i
                if kind == _KEYFRAME:
                    self._add(view, base, mark, index)
                    mark = index
                    self._cut()
                    self._pending_keyframe = True
                    self._pending_psi = (self._pat or b"") + (self._pmt or b"")
                    continue
                offset = base + index * PACKET_SIZE
                packet = buf[offset : offset + PACKET_SIZE]
                changed = self._on_pat(packet) if kind == _PAT else self._on_pmt(packet)
                if changed:
                    self._add(view, base, mark, index + 1)
                    return index + 1
        self._add(view, base, mark, count)
        return count

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

    def _add(self, view: memoryview, base: int, first: int, stop: int) -> None:
        """Add packets C{first..stop-1} to the pending block, cutting it whenever it is full."""
        full = self.block_size // PACKET_SIZE
        while first < stop and not self._closed:
            take = min(full - self._pending_packets, stop - first)
            if not self._pending_packets and self.flush_interval > 0:
                self._timer = self.clock.callLater(self.flush_interval, self._flush_due)
            a = base + first * PACKET_SIZE
            self._parts.append(view[a : a + take * PACKET_SIZE])
            self._pending_packets += take
            first += take
            if self._pending_packets >= full:
                self._cut()

    def _flush_due(self) -> None:
        self._timer = None
        self._cut()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _cut(self) -> None:
        """Turn the pending packets into a block."""
        if not self._pending_packets:
            return
        parts = self._parts
        data = bytes(parts[0]) if len(parts) == 1 else b"".join(parts)
        keyframe, psi = self._pending_keyframe, self._pending_psi
        self._parts = []
        self._pending_packets = 0
        self._pending_keyframe = False
        self._pending_psi = b""
        self._cancel_timer()
        self._append(data, keyframe, psi)

    def _append(self, data: bytes, keyframe: bool, psi: bytes) -> Block:
        seq = self.next_seq
        block = Block(seq=seq, data=data, keyframe=keyframe, psi=psi, segment=self.segment, created=self.clock.seconds())
        self._blocks[seq] = block
        self._starts[seq] = self._appended
        self._appended += len(data)
        self.total_bytes += len(data)
        self.next_seq = seq + 1
        self.blocks_cut += 1
        if keyframe:
            self._keyframe_seqs.append(seq)
            self.keyframes += 1
        self._trim()
        if self.on_block is not None:
            try:
                self.on_block(block)
            except Exception:
                self.log.failure("on_block raised for block {seq}", seq=seq)
        return block

    def _trim(self) -> None:
        """Drop the oldest blocks past the byte bound (strictly) or the age bound (keeping the newest keyframe)."""
        while self.total_bytes > self.max_bytes and self._blocks:
            self._drop_oldest()
        horizon = self.clock.seconds() - self.max_seconds
        keep_from = self._keyframe_seqs[-1] if self._keyframe_seqs else self.next_seq
        while self.first_seq < keep_from and self._blocks[self.first_seq].created < horizon:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        seq = self.first_seq
        block = self._blocks.pop(seq)
        del self._starts[seq]
        self.total_bytes -= len(block.data)
        self.first_seq = seq + 1
        if self._keyframe_seqs and self._keyframe_seqs[0] == seq:
            del self._keyframe_seqs[0]
