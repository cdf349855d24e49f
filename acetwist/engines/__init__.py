"""
The engine pool: several AceStream engines (a static list or an
orchestrator's), their health and load, and reservations on them
(C{docs/engines.md}). The seams are in L{acetwist.engines.api}; L{make_pool}
builds the pool a proxy uses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional, cast

if TYPE_CHECKING:
    from acetwist.config import Settings
    from acetwist.engine_api import IEngine
    from acetwist.engines.api import ILoadLedger
    from acetwist.engines.pool import EnginePool
    from acetwist.interfaces import ICoordinator

#: a committed slot expires this long after its last refresh (the pool refreshes every third of it)
COMMITTED_TTL = 30.0


def make_pool(settings: "Settings", reactor: Any, coordinator: "ICoordinator", *,
              http: Any = None, make_client: Optional[Callable[[str], "IEngine"]] = None,
              ledger: Optional["ILoadLedger"] = None, trust_new_engines: bool = False) -> "EnginePool":
    """
    The proxy's engine pool: engines from C{--orchestrator} or C{--engine},
    load counted in the coordinator's cluster (Redis or memory), one
    L{acetwist.upstream.EngineClient} per engine. Call C{start()} after the
    coordinator's, and C{stop()} after every channel stopped.

    @param http: a treq-like client for probes and the orchestrator (default:
        treq over its own connection pool, closed on stop); tests pass
        L{treq.testing.StubTreq}.
    @param make_client: an engine client for a URL (default: L{EngineClient}).
    @param ledger: where load is counted (default: the coordinator's C{engine_ledger()}, else in memory).
    @param trust_new_engines: a new engine is eligible before its first probe answers.
    """
    from acetwist.engines.events import EventSender
    from acetwist.engines.http import JsonHTTP, default_client
    from acetwist.engines.ledger import MemoryLedger
    from acetwist.engines.pool import EnginePool
    from acetwist.engines.sources import OrchestratorSource, StaticSource
    from acetwist.upstream import EngineClient

    on_stop = None
    if http is None:
        http, connections = default_client(reactor, settings.connect_timeout)
        on_stop = connections.closeCachedConnections
    if make_client is None:
        def make_client(url: str) -> "IEngine":
            return EngineClient(reactor, url, json_timeout=settings.json_timeout,
                                connect_timeout=settings.connect_timeout, stop_timeout=settings.stop_timeout)
    if ledger is None:
        factory = getattr(coordinator, "engine_ledger", None)
        ledger = cast("ILoadLedger", factory(COMMITTED_TTL)) if factory is not None \
            else MemoryLedger(reactor, committed_ttl=COMMITTED_TTL)
    source: Any
    events = None
    if settings.orchestrator:
        headers = {}
        if settings.orchestrator_key:
            headers = {"X-API-Key": settings.orchestrator_key, "Authorization": f"Bearer {settings.orchestrator_key}"}
        orchestrator = JsonHTTP(http, reactor, headers)
        source = OrchestratorSource(settings.orchestrator, orchestrator, reactor, settings.orchestrator_interval)
        events = EventSender(orchestrator, reactor, lambda: source.events_base)
    else:
        source = StaticSource(settings.engines or (settings.engine,))
    return EnginePool(
        source,
        clock=reactor,
        ledger=ledger,
        make_client=make_client,
        probes=JsonHTTP(http, reactor),
        worker_id=coordinator.worker_id,
        capacity=settings.engine_max_streams,
        check_interval=settings.engine_check_interval,
        events=events,
        reservation_ttl=max(15.0, 2 * settings.json_timeout + settings.connect_timeout),
        refresh_interval=COMMITTED_TTL / 3,
        trust_new_engines=trust_new_engines,
        on_stop=on_stop,
    )
