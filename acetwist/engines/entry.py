# -*- test-case-name: tests.test_engine_pool -*-
"""L{EngineEntry}: what the pool keeps of one engine (its record, client, health and load counts)."""

from __future__ import annotations

import math
from typing import List, Optional

import attr
from twisted.internet.defer import Deferred

from acetwist.engine_api import IEngine
from acetwist.engines.api import EngineRecord
from acetwist.engines.health import HEALTHY, Health
from acetwist.engines.select import load


@attr.s(auto_attribs=True, eq=False)
class EngineEntry:
    """
    One engine's state in the pool.

    @ivar listed: still in the engine list (an engine that left it is kept while in use).
    @ivar sessions: committed reservations on it from this process.
    @ivar pending: reservations on it from this process not yet committed.
    @ivar cluster: the cluster's load on it, as the ledger last said (plus this process's since).
    @ivar probe: the probe in flight, if any.
    @ivar old_clients: clients of its earlier addresses (closed when it is forgotten).
    """

    record: EngineRecord
    client: IEngine
    order: int
    health: Health = attr.Factory(Health)
    listed: bool = True
    sessions: int = 0
    pending: int = 0
    cluster: int = 0
    last_chosen: float = -math.inf
    probe: Optional[Deferred[None]] = None
    old_clients: List[IEngine] = attr.Factory(list)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def healthy(self) -> bool:
        return self.health.healthy and self.record.orchestrator_health == HEALTHY

    @property
    def in_use(self) -> bool:
        return self.sessions > 0 or self.pending > 0

    def load(self) -> int:
        return load(self.sessions, self.cluster, self.record.stream_count, self.pending)
