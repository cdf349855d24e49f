"""
What both coordinators share: the errors they fail with, how a follower
decides which mirrored blocks to deliver, and how values are normalised so
that the in-memory and the Redis coordinator answer alike.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Optional

import attr

from acetwist.interfaces import Block, ClientRecord, Lease


class CoordinatorUnavailable(Exception):
    """The cluster state could not be reached within the command timeout."""


class CountUnknown(Exception):
    """
    C{client_count} cannot give a number it can stand behind: the cluster
    could not be asked (no connection, no answer within the deadline), or
    its player records may be incomplete (Redis came back empty, was
    flushed or was unreachable long enough for records to expire, or this
    worker has only just reconnected, so not every worker has rewritten
    its players' records yet). The message says which. An unknown count is
    never zero: ask again later.
    """


def lease_value(owner: str, epoch: int) -> str:
    """The owner key's value: C{<worker>:<epoch>} (a worker id may contain colons)."""
    return f"{owner}:{epoch}"


def parse_lease(value: Any) -> Optional[Lease]:
    """C{<worker>:<epoch>} (bytes or str) to a L{Lease}, None for anything else."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    owner, sep, epoch = str(value).rpartition(":")
    if not sep or not epoch.isdigit():
        return None
    return Lease(owner, int(epoch))


def field_text(value: Any) -> str:
    """
    How a metadata value is stored: strings as they are, everything else as
    JSON (C{5} -> C{"5"}, C{True} -> C{"true"}, C{None} -> C{"null"}).
    Both coordinators hand metadata back as these strings.
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def record_dict(record: ClientRecord) -> Dict[str, Any]:
    """A player record as the cluster view lists it (C{ClientRecord(**d)} rebuilds it)."""
    return attr.asdict(record)


@attr.s(slots=True, auto_attribs=True)
class FollowGate:
    """
    Decides, block by block, what a follower delivers:

    - never a block from an epoch lower than the highest one delivered;
    - never a block already delivered (same epoch and segment, seq not
      higher);
    - after a gap (same epoch and segment, seq jumped: the mirror was trimmed
      past us or recreated), nothing until the next keyframe block, and the
      same at the start unless the follower starts from the oldest block.
    """

    need_keyframe: bool = True
    highest_epoch: Optional[int] = None
    last_epoch: Optional[int] = None
    last_segment: Optional[int] = None
    last_seq: Optional[int] = None
    delivered: int = 0
    stale: int = 0
    duplicates: int = 0
    gaps: int = 0
    waited: int = 0

    def admit(self, block: Block, epoch: int) -> bool:
        if self.highest_epoch is not None and epoch < self.highest_epoch:
            self.stale += 1
            return False
        if self.last_seq is not None and epoch == self.last_epoch:
            assert self.last_segment is not None
            if block.segment < self.last_segment or (
                block.segment == self.last_segment and block.seq <= self.last_seq
            ):
                self.duplicates += 1
                return False
            jumped = block.segment == self.last_segment and block.seq != self.last_seq + 1
            if jumped and not self.need_keyframe:
                self.gaps += 1
                self.need_keyframe = True
        if self.need_keyframe and not block.keyframe:
            self.waited += 1
            return False
        self.need_keyframe = False
        self.highest_epoch = epoch if self.highest_epoch is None else max(self.highest_epoch, epoch)
        self.last_epoch = epoch
        self.last_segment = block.segment
        self.last_seq = block.seq
        self.delivered += 1
        return True

    def counters(self) -> Dict[str, int]:
        return {
            "delivered": self.delivered,
            "stale": self.stale,
            "duplicates": self.duplicates,
            "gaps": self.gaps,
            "waited_for_keyframe": self.waited,
        }


def empty_view(backend: str, available: bool) -> Dict[str, Any]:
    """The shape of L{ICoordinator.cluster_view}'s answer."""
    return {"backend": backend, "available": available, "workers": {}, "streams": {}, "players": {}}
