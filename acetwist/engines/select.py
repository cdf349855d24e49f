# -*- test-case-name: tests.test_engine_pool_select -*-
"""
Which engine takes a stream: pure functions over a snapshot of every
engine (L{Candidate}), so the rules are tested exhaustively without a pool.

1. skip engines excluded (or not the one asked for), unhealthy, no longer
   listed, draining, or full (load >= capacity; capacity 0 = no limit);
2. least loaded first; at equal load forwarded first; then the engine chosen
   least recently (never chosen first); then list order.
"""

from __future__ import annotations

import math
from typing import FrozenSet, Iterable, List, Optional

import attr

#: why a candidate is skipped, in the order the reasons are checked
SKIP_REASONS = ("excluded", "unhealthy", "unlisted", "draining", "full")


@attr.s(frozen=True, auto_attribs=True)
class Candidate:
    """
    One engine as selection sees it.

    @ivar healthy: its probes (and the orchestrator, when there is one) say healthy.
    @ivar listed: still in the engine list (an engine that left it takes no new streams).
    @ivar load: see L{load}.
    @ivar capacity: streams it may take; 0 = no limit.
    @ivar last_chosen: when it was last chosen (clock seconds); -inf when never.
    @ivar order: its place in the list (the last tie-break).
    """

    id: str
    healthy: bool = True
    listed: bool = True
    draining: bool = False
    forwarded: bool = False
    load: int = 0
    capacity: int = 0
    last_chosen: float = -math.inf
    order: int = 0


def load(own_sessions: int, cluster: int, orchestrator: int, in_flight: int) -> int:
    """
    An engine's load: the larger of acetwist's own sessions on it (C{own_sessions}),
    the cluster-wide count of sessions and reservations (C{cluster}, which already
    holds this process's reservations when it is fresh) and the orchestrator's
    C{stream_count}, plus this process's reservations in flight (C{in_flight}) where
    they are not already counted.
    """
    return max(own_sessions + in_flight, cluster, orchestrator + in_flight)


def is_full(load: int, capacity: int) -> bool:
    """C{load} reaches C{capacity} (never when capacity is 0: no limit)."""
    return capacity > 0 and load >= capacity


def skip_reason(candidate: Candidate, exclude: FrozenSet[str] = frozenset(),
                only: Optional[str] = None) -> Optional[str]:
    """Why C{candidate} cannot take a stream now (one of L{SKIP_REASONS}), or None when it can."""
    if candidate.id in exclude or (only is not None and candidate.id != only):
        return "excluded"
    if not candidate.healthy:
        return "unhealthy"
    if not candidate.listed:
        return "unlisted"
    if candidate.draining:
        return "draining"
    if is_full(candidate.load, candidate.capacity):
        return "full"
    return None


def rank(candidates: Iterable[Candidate], exclude: FrozenSet[str] = frozenset(),
         only: Optional[str] = None) -> List[Candidate]:
    """The eligible candidates, best first."""
    eligible = [c for c in candidates if skip_reason(c, exclude, only) is None]
    return sorted(eligible, key=lambda c: (c.load, not c.forwarded, c.last_chosen, c.order))


def choose(candidates: Iterable[Candidate], exclude: FrozenSet[str] = frozenset(),
           only: Optional[str] = None) -> Optional[Candidate]:
    """The best eligible candidate, or None."""
    ranked = rank(candidates, exclude, only)
    return ranked[0] if ranked else None


def why_none(candidates: Iterable[Candidate], exclude: FrozenSet[str] = frozenset(),
             only: Optional[str] = None) -> str:
    """Why no candidate is eligible, for the 503's message: C{"2 full, 1 unhealthy"} or C{"no engines"}."""
    counts = {reason: 0 for reason in SKIP_REASONS}
    total = 0
    for candidate in candidates:
        total += 1
        reason = skip_reason(candidate, exclude, only)
        if reason is not None:
            counts[reason] += 1
    if not total:
        return "no engines are listed"
    return ", ".join(f"{n} {reason}" for reason, n in counts.items() if n)
