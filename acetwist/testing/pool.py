"""An engine pool of hand-driven engines, for channel tests on task.Clock."""

from __future__ import annotations

from typing import Any, Callable, Dict, FrozenSet, List, Optional, Set, Tuple

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from acetwist.engine_api import EngineSession, IEngine
from acetwist.engines.api import IEnginePool, IReservation
from acetwist.errors import EngineError, ErrorKind
from acetwist.testing.engine import FakeEngine


@implementer(IReservation)
class FakeReservation:
    def __init__(self, pool: "FakePool", engine_id: str, stream_key: str) -> None:
        self.pool = pool
        self.engine_id = engine_id
        self.engine: IEngine = pool.engines[engine_id]
        self.stream_key = stream_key
        self.session: Optional[EngineSession] = None
        self.released: Optional[str] = None

    def commit(self, session: EngineSession) -> None:
        self.session = session
        self.pool.events.append(("started", self.engine_id, self.stream_key))

    def release(self, reason: str) -> None:
        if self.released is not None:
            return
        self.released = reason
        if self.session is not None:
            self.pool.events.append(("ended", self.engine_id, self.stream_key))


@implementer(IEnginePool)
class FakePool:
    """
    Engines by id, all eligible unless marked C{down} or full (C{capacity}
    sessions each, 0 for no limit). Reservations go to the least loaded
    eligible engine, in id order at equal load. C{events} records commits and
    releases of committed reservations, as the orchestrator would hear them.
    """

    def __init__(self, *engines: Tuple[str, FakeEngine], capacity: int = 0) -> None:
        self.engines: Dict[str, FakeEngine] = dict(engines) or {"engine-a": FakeEngine()}
        self.capacity = capacity
        self.down: Set[str] = set()
        self.reservations: List[FakeReservation] = []
        self.events: List[Tuple[str, str, str]] = []
        self.failures: List[str] = []
        self.watchers: List[Callable[[str], None]] = []

    @classmethod
    def of(cls, engine: FakeEngine) -> "FakePool":
        """A pool of one engine, with the engine's base URL as its id (as for a static --engine)."""
        return cls((engine.base_url, engine))

    def start(self) -> None:
        pass

    def stop(self) -> "Deferred[None]":
        return succeed(None)

    def load(self, engine_id: str) -> int:
        return sum(1 for r in self.reservations if r.engine_id == engine_id and r.released is None)

    def _candidates(self, only: Optional[str], exclude: FrozenSet[str]) -> List[str]:
        ids = [i for i in sorted(self.engines) if i not in exclude and i not in self.down]
        if only is not None:
            ids = [i for i in ids if i == only]
        if self.capacity:
            ids = [i for i in ids if self.load(i) < self.capacity]
        return sorted(ids, key=self.load)

    def reserve(self, stream_key: str, only: Optional[str] = None,
                exclude: FrozenSet[str] = frozenset()) -> "Deferred[IReservation]":
        candidates = self._candidates(only, exclude)
        if not candidates:
            return fail(EngineError(503, "no engine can take the stream", retry_after=10, kind=ErrorKind.LIMIT))
        reservation = FakeReservation(self, candidates[0], stream_key)
        self.reservations.append(reservation)
        return succeed(reservation)

    @property
    def json_calls(self) -> int:
        return sum(e.json_calls for e in self.engines.values())

    @property
    def stop_calls(self) -> int:
        return sum(e.stop_calls for e in self.engines.values())

    def connection_failed(self, engine_id: str) -> None:
        self.failures.append(engine_id)

    def healthy(self, engine_id: str) -> bool:
        return engine_id in self.engines and engine_id not in self.down

    def mark_down(self, engine_id: str) -> None:
        """The engine's probes fail: it becomes unhealthy, and every watcher hears it."""
        self.down.add(engine_id)
        for watcher in list(self.watchers):
            watcher(engine_id)

    def on_unhealthy(self, callback: Callable[[str], None]) -> Callable[[], None]:
        self.watchers.append(callback)
        return lambda: self.watchers.remove(callback) if callback in self.watchers else None

    def source_status(self) -> Dict[str, Any]:
        return {"source": "static", "stale": False}

    def eligible(self, exclude: FrozenSet[str] = frozenset()) -> bool:
        return bool(self._candidates(None, exclude))

    def can_fail_over(self, engine_id: str) -> bool:
        return any(i != engine_id for i in self.engines)

    def status(self) -> List[Dict[str, Any]]:
        """The fields the real pool's status has (see L{acetwist.engines.pool.EnginePool.status})."""
        return [{"id": i, "url": e.base_url, "name": "", "healthy": i not in self.down, "probe": "ok",
                 "orchestrator_health": "healthy", "forwarded": False, "draining": False, "listed": True,
                 "load": self.load(i), "capacity": self.capacity, "sessions": self.load(i), "reservations": 0,
                 "cluster_load": self.load(i), "stream_count": 0, "last_error": None, "last_probe": None,
                 "last_chosen": None}
                for i, e in sorted(self.engines.items())]
