# -*- test-case-name: tests.test_hls_segmenter -*-
"""
L{Segmenter}: a channel's blocks, as they are cut, into numbered HLS segments
of whole GOPs.

A segment begins at a keyframe block, with the PAT and PMT in force in front
of it, and ends at the first keyframe at least C{target} seconds later by the
stream's own clock (L{acetwist.hls.timing}); its C{#EXTINF} is that distance.
A splice (the ring starts a new C{segment}: the upstream was replaced) drops
the segment being cut and marks the next one discontinuous.

The owner of a channel decides the boundaries (L{Segmenter.lead}), and each
decision is a L{SegmentMark} that travels with the block through the mirror;
a follower cuts exactly where the marks say, with the owner's numbers and
durations (L{Segmenter.follow}), so the same segment URI gives the same bytes
on every worker. A segment holds the ring's own block bytes: one copy serves
every viewer. While no HLS viewer watches (C{retain} is false) a segment is
kept only as long as the ring still holds its first block, so a channel
without viewers holds no more than its ring.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Callable, List, Optional, Tuple

import attr

from acetwist.hls.timing import elapsed, keyframe_time
from acetwist.interfaces import Block, SegmentMark

#: a keyframe this close below the target still ends a segment (timestamp rounding)
_TOLERANCE = 0.001
#: a keyframe further than this from the segment start is a jump of the stream's clock, not a duration
_MAX_PLAUSIBLE = 30.0


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Segment:
    """
    One finished HLS segment.

    @ivar parts: the PAT and PMT, then the blocks' bytes (shared with the ring).
    @ivar discontinuous: an C{#EXT-X-DISCONTINUITY} goes before it.
    """

    sequence: int
    discontinuity: int
    discontinuous: bool
    duration: float
    parts: Tuple[bytes, ...]
    size: int
    #: the ring seq of its first block
    first_block: int = 0


@attr.s(auto_attribs=True)
class _Cutting:
    """The segment being cut."""

    sequence: int
    discontinuity: int
    discontinuous: bool
    ring_segment: int
    first_block: int
    start_time: Optional[int]
    started_at: float
    parts: List[bytes]
    size: int

    def add(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)


class Segmenter:
    """
    Cuts segments of about C{target} seconds and keeps the newest C{keep}.

    @ivar segments: finished segments by sequence, oldest first.
    @ivar on_segment: called with each segment once it is finished.
    """

    def __init__(self, target: float, keep: int, first_sequence: int = 0,
                 on_segment: Optional[Callable[[Segment], None]] = None,
                 oldest_block: Optional[Callable[[], int]] = None) -> None:
        if target <= 0 or keep < 1:
            raise ValueError("a segmenter needs a positive target and keeps at least one segment")
        self.target = target
        self.keep = keep
        self.on_segment = on_segment
        #: the seq of the oldest block the ring still holds (segments before it are let go unless C{retain})
        self.oldest_block = oldest_block
        #: keep C{keep} segments even once the ring has let their blocks go (HLS viewers are watching)
        self.retain = False
        self.segments: "OrderedDict[int, Segment]" = OrderedDict()
        self.longest = 0.0
        self.dropped = 0
        self._next_sequence = first_sequence
        self._discontinuity = 0
        self._splice_pending = False
        self._ring_segment: Optional[int] = None
        self._cutting: Optional[_Cutting] = None

    # ------------------------------------------------------------ view

    @property
    def target_duration(self) -> int:
        """C{#EXT-X-TARGETDURATION}: whole seconds, never below any segment's duration, never decreasing."""
        return max(1, math.ceil(self.target - _TOLERANCE), math.ceil(round(self.longest, 3)))

    def window(self, count: int) -> List[Segment]:
        """The newest C{count} finished segments, oldest first."""
        return list(self.segments.values())[-count:]

    def get(self, sequence: int) -> Optional[Segment]:
        return self.segments.get(sequence)

    @property
    def newest(self) -> Optional[int]:
        """The sequence of the newest finished segment, or None."""
        return next(reversed(self.segments)) if self.segments else None

    @property
    def cutting(self) -> Optional[int]:
        """The sequence of the segment being cut, or None."""
        return self._cutting.sequence if self._cutting is not None else None

    def close(self) -> None:
        """Forget every segment (the channel ended)."""
        self.segments.clear()
        self._cutting = None
        self.on_segment = None

    # ------------------------------------------------------------ the owner

    def lead(self, block: Block) -> Optional[SegmentMark]:
        """
        Take the owner's next block; return the mark when a segment begins
        at it (the previous one, if any, ends there).
        """
        self._check_splice(block)
        cutting = self._cutting
        if block.keyframe and block.psi:
            now = keyframe_time(block.data)
            if cutting is None:
                return self._begin(block, now, 0.0)
            length = self._length(cutting, now, block.created)
            jumped = length is None
            if length is None:
                # the stream's clock jumped: end here with the arrival time, and mark the next one discontinuous
                length = max(block.created - cutting.started_at, 0.001)
                self._splice_pending = True
            if jumped or length >= self.target - _TOLERANCE:
                self._finish(cutting, length)
                return self._begin(block, now, length)
        if cutting is not None:
            cutting.add(block.data)
        return None

    def _length(self, cutting: _Cutting, now: Optional[int], arrived: float) -> Optional[float]:
        """Seconds from the segment's first keyframe to C{now} by the stream's clock; None if it jumped."""
        if cutting.start_time is None or now is None:
            return arrived - cutting.started_at  # no timestamps in this stream: arrival times are all there is
        length = elapsed(cutting.start_time, now)
        return length if length <= _MAX_PLAUSIBLE else None

    # ------------------------------------------------------------ a follower

    def follow(self, block: Block) -> None:
        """Take a block from the owner's mirror: cut where its mark says, with the owner's numbers."""
        self._check_splice(block)
        mark = block.mark
        cutting = self._cutting
        if mark is None:
            if cutting is not None:
                cutting.add(block.data)
            return
        if cutting is not None:
            if cutting.sequence == mark.sequence - 1 and mark.previous_duration > 0:
                self._finish(cutting, mark.previous_duration)
            else:
                self._drop()
        newest = next(reversed(self.segments.values())) if self.segments else None
        self._next_sequence = mark.sequence
        self._discontinuity = mark.discontinuity
        self._splice_pending = False
        discontinuous = newest is not None and newest.discontinuity < mark.discontinuity
        self._open(block, mark.sequence, mark.discontinuity, discontinuous, None)

    # ------------------------------------------------------------ internals

    def _check_splice(self, block: Block) -> None:
        """A new ring segment: the upstream was replaced, so the segment being cut is dropped."""
        if self._ring_segment is not None and block.segment != self._ring_segment:
            self._drop()
            self._splice_pending = True
        self._ring_segment = block.segment

    def _begin(self, block: Block, now: Optional[int], previous: float) -> SegmentMark:
        discontinuous = self._splice_pending and bool(self.segments)
        if discontinuous:
            self._discontinuity += 1
        self._splice_pending = False
        self._open(block, self._next_sequence, self._discontinuity, discontinuous, now)
        return SegmentMark(self._next_sequence, self._discontinuity, previous)

    def _open(self, block: Block, sequence: int, discontinuity: int, discontinuous: bool,
              now: Optional[int]) -> None:
        self._cutting = _Cutting(sequence, discontinuity, discontinuous, block.segment, block.seq, now,
                                 block.created, [block.psi, block.data], len(block.psi) + len(block.data))

    def _finish(self, cutting: _Cutting, duration: float) -> None:
        segment = Segment(cutting.sequence, cutting.discontinuity, cutting.discontinuous, duration,
                          tuple(cutting.parts), cutting.size, cutting.first_block)
        self._cutting = None
        self.segments[segment.sequence] = segment
        self._next_sequence = segment.sequence + 1
        self.longest = max(self.longest, duration)
        self._trim()
        if self.on_segment is not None:
            self.on_segment(segment)

    def _trim(self) -> None:
        """Keep the newest C{keep}; without C{retain}, only those whose first block the ring still holds."""
        segments = self.segments
        while len(segments) > self.keep:
            segments.popitem(last=False)
        if self.retain or self.oldest_block is None:
            return
        oldest = self.oldest_block()
        while segments and next(iter(segments.values())).first_block < oldest:
            segments.popitem(last=False)

    def _drop(self) -> None:
        if self._cutting is not None:
            self.dropped += 1
            self._cutting = None
