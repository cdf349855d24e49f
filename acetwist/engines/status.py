# -*- test-case-name: tests.test_engine_pool,tests.test_engine_pool_loopback -*-
"""What the pool shows on the status page: each engine, and where the list comes from."""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Optional

from acetwist.engines.entry import EngineEntry
from acetwist.engines.events import EventSender


def engines_status(entries: Iterable[EngineEntry], capacity: int) -> List[Dict[str, Any]]:
    """Each engine (listed ones first, in list order): its record, health, load and last choice."""
    out = []
    for entry in sorted(entries, key=lambda e: (not e.listed, e.order)):
        record = entry.record
        out.append({
            "id": entry.id,
            "url": record.url,
            "name": record.name,
            "healthy": entry.healthy,
            "probe": entry.health.state,
            "orchestrator_health": record.orchestrator_health,
            "forwarded": record.forwarded,
            "draining": record.draining,
            "listed": entry.listed,
            "load": entry.load(),
            "capacity": capacity,
            "sessions": entry.sessions,
            "reservations": entry.pending,
            "cluster_load": entry.cluster,
            "stream_count": record.stream_count,
            "last_error": entry.health.last_error,
            "last_probe": entry.health.last_probe,
            "last_chosen": entry.last_chosen if entry.last_chosen > -math.inf else None,
        })
    return out


def source_status(source: Any, *, capacity: int, eligible: int, counters: Dict[str, int],
                  events: Optional[EventSender]) -> Dict[str, Any]:
    """The source's own status, with the capacity, how many engines are eligible, and the pool's counters."""
    out = dict(source.status())
    out.update(capacity=capacity, eligible=eligible, **counters)
    if events is not None:
        out["events"] = dict(events.counters, queued=events.queued)
    return out
