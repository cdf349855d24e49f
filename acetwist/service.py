# -*- test-case-name: tests.test_proxy_lifecycle,tests.test_web -*-
"""The proxy as a Twisted service: engine client, coordinator, registry and web app."""

from __future__ import annotations

import os
import socket
from typing import Any, Callable, Optional

from twisted.application.service import Service
from twisted.internet.defer import inlineCallbacks
from twisted.logger import Logger
from twisted.web.server import Request

from acetwist.channel import Channel
from acetwist.config import Settings
from acetwist.coord.memory import MemoryCoordinator
from acetwist.coord.settings import CoordSettings, heartbeat_timings
from acetwist.interfaces import ICoordinator, ISink
from acetwist.ring import TSRing
from acetwist.sink import ClientSink
from acetwist.memory import MemoryReleaser
from acetwist.redact import redact_credentials
from acetwist.registry import Registry
from acetwist.engines import make_pool
from acetwist.engines.api import IEnginePool
from acetwist.upstream import Selector
from acetwist.web import ProxyApp


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


#: Blocks a single process's memory mirror keeps (Redis keeps L{CoordSettings}' 200 for other
#: workers). Only a channel of this same process could follow it, from the newest keyframe there;
#: 200 blocks of 64 KiB are 13 MB per channel: 26 s at 4 Mbit/s, where the ring keeps 10 s.
LOCAL_MIRROR_BLOCKS = 64


def make_coordinator(settings: Settings, reactor: Any, worker_id: str) -> ICoordinator:
    """
    Redis when C{--redis} is given (imported only then: txredisapi binds the
    reactor on import), else memory. C{--lease} and C{--heartbeat} set both
    (heartbeats, player-record writes and the TTLs above them, see
    L{heartbeat_timings}); C{--redis-prefix} the Redis keys.
    """
    lease_ms = max(1, int(settings.lease * 1000))
    timings = heartbeat_timings(settings.heartbeat)
    if settings.redis:
        from acetwist.coord.redis import RedisCoordinator
        from acetwist.coord.settings import RedisSettings

        return RedisCoordinator(
            RedisSettings.from_url(settings.redis, prefix=settings.redis_prefix, lease_ms=lease_ms,
                                  **timings),
            worker_id=worker_id,
            reactor=reactor,
        )
    return MemoryCoordinator(worker_id=worker_id, clock=reactor,
                             settings=CoordSettings(lease_ms=lease_ms, mirror_maxlen=LOCAL_MIRROR_BLOCKS, **timings))


class ProxyService(Service):
    """
    Owns everything behind the listening port. On stop, every channel is
    stopped (players closed, one engine C{stop} each) before the engine
    pool closes its engine clients.
    """

    log = Logger()

    def __init__(self, settings: Settings, reactor: Any, coordinator: Optional[ICoordinator] = None,
                 pool: Optional[IEnginePool] = None) -> None:
        self.settings = settings
        self.reactor = reactor
        self.worker_id = settings.worker_id or default_worker_id()
        self.coordinator = coordinator or make_coordinator(settings, reactor, self.worker_id)
        self._memory = MemoryReleaser.for_this_process(reactor)
        self.pool: IEnginePool = pool or make_pool(settings, reactor, self.coordinator)
        self.registry = Registry(self._make_channel, clock=reactor, make_sink=self._make_sink,
                                 max_channels=settings.max_channels, max_clients=settings.max_clients,
                                 failed_content_ttl=settings.failed_content_ttl,
                                 on_channel_ended=self._memory.channel_ended)
        self.app = ProxyApp(self.registry, settings, reactor, self.coordinator, self.pool)

    def _make_channel(self, selector: Selector, registry: Registry) -> Channel:
        return Channel(
            selector,
            pool=self.pool,
            settings=self.settings,
            clock=self.reactor,
            coordinator=self.coordinator,
            on_gone=registry.forget,
            on_canonical=registry.canonical,
            on_redirect=registry.redirect,
        )

    def _make_sink(self, request: Request, ring: TSRing, on_close: Callable[[ISink, str], None]) -> ISink:
        return ClientSink(
            request,
            ring,
            self.reactor,
            max_lag_bytes=self.settings.client_max_lag,
            stall_timeout=self.settings.client_stall_timeout,
            write_batch=self.settings.write_batch,
            join_backlog=self.settings.join_backlog,
            on_close=on_close,
            direct_send=self.settings.direct_send,
            write_delay=self.settings.write_delay,
        )

    def startService(self) -> None:
        super().startService()
        self.coordinator.start()
        self.pool.start()
        engines = self.settings.orchestrator or ", ".join(self.settings.engines)
        self.log.info(
            "acetwist worker {worker} proxying {what} {engines}", worker=self.worker_id,
            what="the engines of orchestrator" if self.settings.orchestrator else "engine(s)",
            engines=redact_credentials(engines),
        )

    @inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        yield self.registry.stop_all("shutting down")
        self._memory.stop()
        yield self.pool.stop()  # after the channels' stops; flushes orchestrator events, closes engine clients
        yield self.coordinator.stop()
