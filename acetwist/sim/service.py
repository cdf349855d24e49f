# -*- test-case-name: tests.test_sim_tap -*-
"""
What twistd runs: L{SimulatorService}, the engines of an
L{acetwist.sim.pool.EnginePool} on consecutive ports from C{--listen}, and
the orchestrator look-alike on C{--orchestrator-listen} when given. Each
listener can be closed and reopened by a fault (an engine's C{down:refuse},
the orchestrator's C{refuse} outage). L{acetwist.sim.testing} builds the same
pool on loopback ports.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, List, Optional

from twisted.application import service
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger

from acetwist.sim.config import SimConfig, endpoint_interface, engine_endpoints
from acetwist.sim.engine import Engine
from acetwist.sim.listening import EndpointListener
from acetwist.sim.orchestrator import Orchestrator
from acetwist.sim.pool import EnginePool
from acetwist.sim.simulator import Simulator

if TYPE_CHECKING:
    from acetwist.reactor import IReactor

__all__ = ["Simulator", "SimulatorService"]


class SimulatorService(service.MultiService):
    """
    The twistd service. Listeners are managed here rather than as children
    so that they can be replaced when a C{refuse} fault ends; the first
    listen happens in C{privilegedStartService}, so a busy port makes twistd
    exit non-zero.

    @ivar simulators: one L{Simulator} per engine; C{simulator} is the first.
    @ivar listeners: one L{EndpointListener} per engine, in the same order.
    """

    log = Logger()

    def __init__(self, config: SimConfig, reactor: IReactor) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.pool = EnginePool(config, reactor, orchestrator=config.orchestrator_listen is not None)
        self.simulators: List[Simulator] = self.pool.simulators
        self.simulator = self.simulators[0]
        self.listeners: List[EndpointListener] = []
        for index, (simulator, description) in enumerate(zip(self.simulators,
                                                             engine_endpoints(config.listen, config.engines))):
            listener = EndpointListener(reactor, description, simulator.site, partial(self._engine_bound, index))
            self.listeners.append(listener)
            simulator.set_listener(listener.pause, listener.resume)
        self.orchestrator_listener: Optional[EndpointListener] = None
        server = self.pool.orchestrator_server
        if server is not None and config.orchestrator_listen is not None:
            self.orchestrator_listener = EndpointListener(reactor, config.orchestrator_listen, server.site,
                                                          self._orchestrator_bound)
            server.set_listener(self.orchestrator_listener.pause, self.orchestrator_listener.resume)

    @property
    def listening(self) -> Optional[service.Service]:
        """The first engine's listening service (None while it is closed)."""
        return self.listeners[0].service

    @property
    def engine(self) -> Engine:
        return self.simulator.engine

    @property
    def orchestrator(self) -> Optional[Orchestrator]:
        return self.pool.orchestrator

    def _engine_bound(self, index: int, port: int) -> None:
        self.pool.engine_bound(index, port)

    def _orchestrator_bound(self, port: int) -> None:
        orchestrator = self.pool.orchestrator
        if orchestrator is not None and not orchestrator.url:
            listen = self.config.orchestrator_listen or ""
            host = endpoint_interface(listen)
            host = "127.0.0.1" if host in (None, "0.0.0.0", "::") else host
            orchestrator.url = f"http://{host}:{port}"

    def _all_listeners(self) -> List[EndpointListener]:
        extra = [self.orchestrator_listener] if self.orchestrator_listener is not None else []
        return [*self.listeners, *extra]

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        for listener in self._all_listeners():
            listener.privileged_start()

    def startService(self) -> None:
        config = self.config
        self.log.info("AceStream engine simulator: {engines} engine(s) from {listen}: bitrate={bitrate} "
                      "prebuffer={prebuffer}s burst={burst}s gop={gop}s idle_timeout={idle}s",
                      engines=config.engines, listen=config.listen, bitrate=config.bitrate,
                      prebuffer=config.prebuffer, burst=config.burst, gop=config.gop, idle=config.idle_timeout)
        template = self.engine.template
        if template.picture:
            self.log.info("stream: H.264 test card 640x360 at 25 fps and silent AAC, padded to the bitrate")
        else:
            self.log.warn("stream: no picture, {why}", why=template.no_picture)
        for content in config.contents:
            self.log.info("content {name}: id={content_id} infohash={infohash}", name=content.name,
                          content_id=content.content_id, infohash=content.infohash)
        for fault in self.engine.faults:
            self.log.info("fault in force on every engine: {fault}", fault=fault.as_json())
        super().startService()
        for listener in self._all_listeners():
            listener.start()
        for simulator, listener in zip(self.simulators, self.listeners):
            self.log.info("engine {name} on {listen} (port {port})", name=simulator.name,
                          listen=listener.description, port=listener.port_number)
        orchestrator = self.pool.orchestrator
        if orchestrator is not None:
            self.log.info("orchestrator look-alike on {url} (key {key}), max_streams_per_engine={max}",
                          url=orchestrator.url or config.orchestrator_listen,
                          key="required" if orchestrator.api_key else "not required",
                          max=orchestrator.max_streams_per_engine)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        stopping = [d for d in (listener.stop() for listener in self._all_listeners()) if d is not None]
        return gatherResults(stopping).addCallback(lambda _: self.pool.shutdown())
