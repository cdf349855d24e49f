# -*- test-case-name: tests.test_ring -*-
"""
The TS ring: raw upstream bytes in, 188-aligned L{Block}s out.

L{TSRing.feed} takes the engine's bytes in pieces of any size and alignment,
finds and keeps packet sync, and cuts blocks of whole packets: when a block is
full, when the flush interval has passed since its first packet (so low
bitrates are not delayed), and right before every random-access packet, so a
keyframe block always begins with its random-access point and carries the PAT
and PMT in force to send in front of it.

The ring is a L{BlockHistory}: it keeps the newest blocks, bounded by bytes
and by age, and serves them by sequence number to the players' sinks.

Where keyframes fall and which PAT/PMT is in force is the job of
L{acetwist.ts.keyframes.KeyframeScanner}, which looks at a whole run of
packets at once, never at every packet in Python.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Union

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from acetwist.history import BlockHistory
from acetwist.interfaces import Block, SegmentMark
from acetwist.ts.keyframes import KeyframeScanner
from acetwist.ts.packet import PACKET_SIZE, SYNC, find_sync

_Part = Union[bytes, memoryview]

#: Unsynced bytes kept for the next piece: a sync candidate within the last
#: two packets of a piece cannot be confirmed yet (L{find_sync} needs three).
_UNCONFIRMED_TAIL = 2 * PACKET_SIZE


class TSRing(BlockHistory):
    """
    Aligned blocks of a channel's MPEG-TS, with a keyframe index and bounded
    history (the reading side, C{get}, C{latest_keyframe}, C{next_keyframe},
    C{bytes_from}, C{first_seq}, C{next_seq}, C{total_bytes}, is
    L{BlockHistory}'s). L{discontinuity} starts a new C{segment}.

    @ivar bytes_in: raw bytes fed.
    @ivar resyncs: times a packet boundary did not hold a sync byte.
    @ivar skipped_bytes: junk dropped while looking for sync.
    @ivar pmt_pid: the PMT PID learnt from the PAT, or None.
    @ivar video_pid: the video PID learnt from the PMT, or None.
    @ivar random_access_seen: True once a random-access indicator was seen on
        the video PID (see L{KeyframeScanner}).
    """

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
        super().__init__(clock, max_seconds=max_seconds, max_bytes=max_bytes, on_block=on_block)
        self.block_size = block_size - block_size % PACKET_SIZE
        self.flush_interval = flush_interval
        self._tail = b""
        self._synced = False
        self._parts: List[_Part] = []
        self._pending_packets = 0
        self._pending_keyframe = False
        self._pending_psi = b""
        self._timer: Optional[IDelayedCall] = None
        self._scanner = KeyframeScanner(clock, keyframe_fallback)
        self._closed = False

        self.bytes_in = 0
        self.resyncs = 0
        self.skipped_bytes = 0

    @property
    def pmt_pid(self) -> Optional[int]:
        return self._scanner.pmt_pid

    @property
    def video_pid(self) -> Optional[int]:
        return self._scanner.video_pid

    @property
    def random_access_seen(self) -> bool:
        return self._scanner.random_access_seen

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
        self._scanner.forget_tables()
        self.segment += 1

    def append_block(self, data: bytes, keyframe: bool, psi: bytes, mark: Optional[SegmentMark] = None) -> Block:
        """
        Append an already-cut block of whole packets (from another worker's
        mirror, with the owner's HLS C{mark}); the ring gives it its own seq,
        segment and creation time.
        """
        if not data or len(data) % PACKET_SIZE:
            raise ValueError(f"a block is a whole number of packets, not {len(data)} bytes")
        self._cut()
        return self._append(bytes(data), keyframe, bytes(psi) if keyframe else b"", mark)

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

    # ------------------------------------------------------------ internals

    def _take(self, buf: bytes, view: memoryview, base: int, count: int) -> None:
        """
        Consume C{count} aligned packets of C{buf} starting at C{base},
        cutting a block right before each keyframe.
        """
        first = 0
        while first < count and not self._closed:
            keyframes, scanned = self._scanner.scan(buf, base + first * PACKET_SIZE, count - first)
            mark = first
            for index, psi in keyframes:
                index += first
                self._add(view, base, mark, index)
                mark = index
                self._cut()
                self._pending_keyframe = True
                self._pending_psi = psi
            first += scanned
            self._add(view, base, mark, first)

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
