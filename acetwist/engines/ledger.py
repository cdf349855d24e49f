# -*- test-case-name: tests.test_engine_ledger -*-
"""
L{MemoryLedger}: engine load counted in one process (L{ILoadLedger} without
Redis). Several ledgers sharing one L{SlotTable} behave like several workers
sharing Redis (the table of a L{acetwist.coord.memory_cluster.MemoryCluster} is
shared that way), so multi-worker logic can be tested on a C{task.Clock}.
The Redis ledger is L{acetwist.coord.ledger.RedisLedger}.

A slot is named by the caller (the pool names one per reservation). A
reserved slot expires C{ttl} seconds after it was taken unless it is
committed or released; committed slots are refreshed by C{commit} again
(the pool does it on a timer) and expire C{committed_ttl} after the last one.
"""

from __future__ import annotations

from typing import Dict

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from acetwist.engines.api import ILoadLedger


class SlotTable:
    """Slots per engine id, each with its expiry (clock seconds), like one Redis's ZSETs."""

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.slots: Dict[str, Dict[str, float]] = {}

    def live(self, engine_id: str) -> Dict[str, float]:
        """The engine's unexpired slots (expired ones are dropped)."""
        now = float(self.clock.seconds())
        slots = self.slots.get(engine_id, {})
        for slot in [s for s, expires in slots.items() if expires <= now]:
            del slots[slot]
        if not slots:
            self.slots.pop(engine_id, None)
        return slots

    def loads(self) -> Dict[str, int]:
        return {engine_id: n for engine_id in list(self.slots) if (n := len(self.live(engine_id)))}


@implementer(ILoadLedger)
class MemoryLedger:
    """L{ILoadLedger} in memory; every call has answered when it returns."""

    def __init__(self, clock: IReactorTime, table: "SlotTable | None" = None, committed_ttl: float = 30.0) -> None:
        self.clock = clock
        self.table = table if table is not None else SlotTable(clock)
        self.committed_ttl = committed_ttl

    def _now(self) -> float:
        return float(self.clock.seconds())

    def reserve(self, engine_id: str, stream_key: str, capacity: int, ttl: float) -> Deferred[bool]:
        slots = self.table.live(engine_id)
        if stream_key not in slots and capacity > 0 and len(slots) >= capacity:
            return succeed(False)
        self.table.slots.setdefault(engine_id, slots)[stream_key] = self._now() + ttl
        return succeed(True)

    def commit(self, engine_id: str, stream_key: str) -> Deferred[None]:
        # A committed slot is a running session: it is (re)written even if it had expired.
        self.table.live(engine_id)
        self.table.slots.setdefault(engine_id, {})[stream_key] = self._now() + self.committed_ttl
        return succeed(None)

    def release(self, engine_id: str, stream_key: str) -> Deferred[None]:
        slots = self.table.slots.get(engine_id)
        if slots is not None:
            slots.pop(stream_key, None)
            if not slots:
                del self.table.slots[engine_id]
        return succeed(None)

    def loads(self) -> Deferred[Dict[str, int]]:
        return succeed(self.table.loads())
