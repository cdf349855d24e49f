# -*- test-case-name: tests.test_ring,tests.test_sink -*-
"""
L{BlockHistory}: a channel's newest L{Block}s by sequence number, with a
keyframe index, bounded by bytes (strictly) and by age (never dropping the
newest keyframe block). The players' sinks read it through cursors and hold
no copies. L{acetwist.ring.TSRing} is the history its blocks are cut into.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Callable, Dict, List, Optional

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from acetwist.interfaces import Block, SegmentMark


class BlockHistory:
    """
    Kept blocks and the cursor queries on them.

    @ivar first_seq: seq of the oldest block kept (equals C{next_seq} when empty).
    @ivar next_seq: seq the next block will get.
    @ivar segment: segment the next block will get.
    @ivar total_bytes: bytes of C{data} in the kept blocks.
    @ivar blocks_cut: blocks appended.
    @ivar keyframes: keyframe blocks appended.
    @ivar on_block: called with each block once it is appended (and the history trimmed).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        *,
        max_seconds: float,
        max_bytes: int,
        on_block: Optional[Callable[[Block], None]] = None,
    ) -> None:
        self.clock = clock
        self.max_seconds = max_seconds
        self.max_bytes = max_bytes
        self.on_block = on_block
        self._blocks: Dict[int, Block] = {}
        self._starts: Dict[int, int] = {}  # seq -> bytes appended before that block
        self._keyframe_seqs: List[int] = []
        self._appended = 0
        self.first_seq = 0
        self.next_seq = 0
        self.segment = 0
        self.total_bytes = 0
        self.blocks_cut = 0
        self.keyframes = 0

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

    def keyframe_back(self, created_by: float) -> Optional[Block]:
        """
        Where a joiner with a backlog starts: the newest kept keyframe block
        cut at or before C{created_by}, else the oldest kept keyframe block.
        Only keyframes of the newest keyframe's segment count: a backlog never
        reaches back across a discontinuity. None when no keyframe is kept.
        """
        seqs = self._keyframe_seqs
        if not seqs:
            return None
        chosen = self._blocks[seqs[-1]]
        segment = chosen.segment
        # newest first; a few per GOP in the ring, and no reliance on the clock never going back
        for seq in reversed(seqs):
            block = self._blocks[seq]
            if block.segment != segment:
                break
            chosen = block
            if block.created <= created_by:
                break
        return chosen

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

    def _append(self, data: bytes, keyframe: bool, psi: bytes, mark: Optional[SegmentMark] = None) -> Block:
        """Keep C{data} as the newest block, trim the oldest, and tell C{on_block}."""
        seq = self.next_seq
        block = Block(seq=seq, data=data, keyframe=keyframe, psi=psi, segment=self.segment,
                      created=self.clock.seconds(), mark=mark)
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
