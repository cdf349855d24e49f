# -*- test-case-name: tests.test_coord_memory,tests.test_coord_contract -*-
"""
L{MemoryCluster}: the state several L{acetwist.coord.memory.MemoryCoordinator}s
share, like one Redis (leases, mirrors, metadata, player and worker records,
aliases, engine load slots), expiring against an injected clock; and
L{MemoryFollower}, a subscription to one stream's mirror in it.
"""

from __future__ import annotations

from typing import Any, Callable, Deque, Dict, List, Optional, Set, Tuple

import attr
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from acetwist.coord.base import FollowGate
from acetwist.engines.ledger import SlotTable
from acetwist.interfaces import Block, ClientRecord, IFollower, Lease

log = Logger()


@attr.s(slots=True, auto_attribs=True)
class _Mirror:
    entries: Deque[Tuple[int, Block, int]]
    expires: float


class MemoryCluster:
    """
    The shared state several L{acetwist.coord.memory.MemoryCoordinator}s see, like one Redis.
    Entries expire lazily against C{clock}, exactly where Redis keys would
    have a TTL, and L{prune} drops everything expired.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.leases: Dict[str, Tuple[Lease, float]] = {}
        self.epochs: Dict[str, int] = {}
        self.mirrors: Dict[str, _Mirror] = {}
        self.metadata: Dict[str, Tuple[Dict[str, str], float]] = {}
        self.clients: Dict[str, Tuple[ClientRecord, float]] = {}
        self.workers: Dict[str, Tuple[Dict[str, Any], float]] = {}
        self.streams: Dict[str, float] = {}
        self.aliases: Dict[str, Tuple[str, float]] = {}
        self.followers: Dict[str, Set["MemoryFollower"]] = {}
        #: engine load slots, shared by every coordinator of this cluster (see L{engine_ledger})
        self.engine_slots = SlotTable(clock)
        self._next_id = 0

    def now(self) -> float:
        return float(self.clock.seconds())

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def lease(self, stream_key: str) -> Optional[Lease]:
        held = self.leases.get(stream_key)
        if held is None:
            return None
        if held[1] <= self.now():
            del self.leases[stream_key]
            return None
        return held[0]

    def alias(self, stream_key: str) -> Optional[str]:
        held = self.aliases.get(stream_key)
        if held is None:
            return None
        if held[1] <= self.now():
            del self.aliases[stream_key]
            return None
        return held[0]

    def mirror(self, stream_key: str) -> Optional[_Mirror]:
        mirror = self.mirrors.get(stream_key)
        if mirror is not None and mirror.expires <= self.now():
            del self.mirrors[stream_key]
            return None
        return mirror

    def index_stream(self, stream_key: str, expires: float) -> None:
        self.streams[stream_key] = max(expires, self.streams.get(stream_key, 0.0))

    def live_clients(self, stream_key: Optional[str] = None) -> List[ClientRecord]:
        now = self.now()
        return [
            record
            for record, expires in self.clients.values()
            if expires > now and (stream_key is None or record.stream_key == stream_key)
        ]

    def prune(self) -> None:
        """Forget everything whose time is up (what Redis's TTLs do)."""
        now = self.now()
        for table in (self.leases, self.metadata, self.clients, self.workers, self.aliases):
            for key in [k for k, (_, expires) in table.items() if expires <= now]:
                del table[key]
        for key in [k for k, m in self.mirrors.items() if m.expires <= now]:
            del self.mirrors[key]
        for key in [k for k, expires in self.streams.items() if expires <= now]:
            del self.streams[key]


def backlog_start(entries: List[Tuple[int, Block, int]], backlog: float) -> Optional[int]:
    """
    The id of the newest keyframe entry created at least C{backlog} s before
    the newest entry, else of the oldest keyframe entry of the newest
    keyframe's epoch and segment; None without a keyframe (FOLLOW_START in Redis).
    """
    newest_created = entries[-1][1].created
    found: Optional[int] = None
    run: Optional[Tuple[int, int]] = None
    for entry_id, block, epoch in reversed(entries):
        if run is not None and (epoch, block.segment) != run:
            break
        if block.keyframe:
            found, run = entry_id, (epoch, block.segment)
            if backlog <= 0 or newest_created - block.created >= backlog:
                break
    return found


@implementer(IFollower)
class MemoryFollower:
    """A subscription to one stream's mirror in a L{MemoryCluster}."""

    def __init__(
        self,
        cluster: MemoryCluster,
        stream_key: str,
        on_block: Callable[[Block, int], None],
        from_start: bool,
        on_stop: Optional[Callable[["MemoryFollower"], None]] = None,
        backlog: float = 0.0,
    ) -> None:
        self.cluster = cluster
        self.on_stop = on_stop
        self.stream_key = stream_key
        self.on_block = on_block
        self.from_start = from_start
        self.backlog = backlog
        self.gate = FollowGate(need_keyframe=not from_start)
        self.cursor: Optional[int] = None
        self.stopped = False
        # The backlog is delivered from the clock, never inside follow():
        # the caller has not even stored the follower yet.
        self._scheduled: Optional[IDelayedCall] = cluster.clock.callLater(0, self._first_pump)

    def _position(self) -> None:
        mirror = self.cluster.mirror(self.stream_key)
        entries = list(mirror.entries) if mirror is not None else []
        if self.from_start or not entries:
            self.cursor = 0
            return
        start = backlog_start(entries, self.backlog)
        self.cursor = start - 1 if start is not None else entries[-1][0]

    def _first_pump(self) -> None:
        self._scheduled = None
        self._position()
        self.pump()

    def pump(self) -> None:
        """Deliver what was mirrored after the cursor (called on every publish)."""
        if self.stopped or self.cursor is None or self._scheduled is not None:
            return
        mirror = self.cluster.mirror(self.stream_key)
        if mirror is None:
            return
        for entry_id, block, epoch in list(mirror.entries):
            if self.stopped:
                return
            if entry_id <= self.cursor:
                continue
            self.cursor = entry_id
            if self.gate.admit(block, epoch):
                try:
                    self.on_block(block, epoch)
                except Exception:
                    log.failure("follower of {key} failed to take a block", key=self.stream_key)

    def stop(self) -> Deferred[None]:
        """Stop at once; returns an already-fired Deferred (like the Redis follower's, which may wait)."""
        if not self.stopped:
            self.stopped = True
            if self._scheduled is not None and self._scheduled.active():
                self._scheduled.cancel()
            self._scheduled = None
            followers = self.cluster.followers.get(self.stream_key)
            if followers is not None:
                followers.discard(self)
                if not followers:
                    del self.cluster.followers[self.stream_key]
            if self.on_stop is not None:
                self.on_stop(self)
        return succeed(None)
