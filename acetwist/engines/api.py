"""
The engine pool's seams: what a channel asks of the pool (an engine for a
stream, reserved before the engine is called), what the pool knows of each
engine, and the load ledger that makes reservations atomic in one process or
across a cluster.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, FrozenSet, List, Optional

import attr
from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from acetwist.engine_api import EngineSession


@attr.s(frozen=True, auto_attribs=True)
class EngineRecord:
    """
    One engine as the pool's source lists it.

    @ivar id: stable id: the URL for a static list, C{container_id} from an orchestrator.
    @ivar url: C{scheme://host:port}.
    @ivar orchestrator_health: C{healthy}, C{unhealthy} or C{unknown} (C{healthy} for a static list).
    @ivar stream_count: the orchestrator's count of streams on it (0 for a static list).
    """

    id: str
    url: str
    name: str = ""
    forwarded: bool = False
    orchestrator_health: str = "healthy"
    draining: bool = False
    stream_count: int = 0


class IReservation(Interface):
    """A slot on one engine, taken before that engine is called."""

    engine_id = Attribute("The engine's id (str).")
    engine = Attribute("The engine's client (IEngine).")

    def commit(session: "EngineSession") -> None:
        """The engine granted C{session}: the slot is now load (and the orchestrator hears stream_started)."""

    def release(reason: str) -> None:
        """
        Give the slot back: the call failed, or the committed session ended
        (then the orchestrator hears stream_ended with C{reason}). Idempotent.
        """


class IEnginePool(Interface):
    """The engines a proxy may use, their health and load, and reservations on them."""

    json_calls = Attribute("getstream calls made through every engine client, ever (int).")
    stop_calls = Attribute("stop calls made through every engine client, ever (int).")

    def start() -> None:
        """Begin reading the engine list and probing engines."""

    def stop() -> "Deferred[None]":
        """Stop probing and refreshing; close every engine client (after calls in flight)."""

    def reserve(stream_key: str, only: Optional[str] = None,
                exclude: FrozenSet[str] = frozenset()) -> "Deferred[IReservation]":
        """
        Pick an engine for C{stream_key} (skipping unhealthy, draining and full
        ones, and C{exclude}; only C{only} when given) by the selection rules,
        and reserve a slot on it atomically. Fails with an L{EngineError} 503
        (kind LIMIT, with C{retry_after}) when no engine is eligible; then no
        engine is called.
        """

    def connection_failed(engine_id: str) -> None:
        """A real call to the engine could not connect: it is unhealthy until a probe succeeds."""

    def eligible(exclude: FrozenSet[str] = frozenset()) -> bool:
        """Some engine outside C{exclude} could take a stream now."""

    def can_fail_over(engine_id: str) -> bool:
        """The pool knows an engine other than C{engine_id} (eligible now or not): failing over is worth waiting for."""

    def status() -> List[Dict[str, Any]]:
        """Per engine: id, url, healthy, forwarded, draining, load, capacity, reservations, last error, last probe."""

    def source_status() -> Dict[str, Any]:
        """Where the engine list comes from and whether it is current (C{stale} while an orchestrator cannot be read)."""

    def healthy(engine_id: str) -> bool:
        """Engine C{engine_id} is known and healthy (its probes, and the orchestrator when there is one)."""

    def on_unhealthy(callback: "Callable[[str], None]") -> "Callable[[], None]":
        """
        Call C{callback(engine_id)} whenever an engine becomes unhealthy (a
        probe, a failed connection, the orchestrator); returns a function
        that unsubscribes. Channels on that engine may move at once.
        """


class ILoadLedger(Interface):
    """
    Load per engine, counted where every worker sees it (Redis), or in
    process. A reservation is taken only under capacity, atomically, and
    expires by itself if its worker dies before committing or releasing it.
    """

    def reserve(engine_id: str, stream_key: str, capacity: int, ttl: float) -> "Deferred[bool]":
        """Take a slot for C{stream_key} on C{engine_id} if its load is under C{capacity} (0: no limit)."""

    def commit(engine_id: str, stream_key: str) -> "Deferred[None]":
        """The reserved slot holds a running session (it is refreshed while it runs)."""

    def release(engine_id: str, stream_key: str) -> "Deferred[None]":
        """Free the slot."""

    def loads() -> "Deferred[Dict[str, int]]":
        """Committed sessions plus reservations in flight, per engine id, cluster-wide."""
