# -*- test-case-name: tests.test_sim_pool -*-
"""
Several simulated engines in one process, and the orchestrator look-alike
that lists them. Each engine is a L{Simulator} of its own (sessions, faults,
counters, port); all serve the same contents. How they listen is up to the
caller (L{acetwist.sim.service} for twistd, L{acetwist.sim.testing} for
tests), which reports each engine's port with L{EnginePool.engine_bound}.
"""

from __future__ import annotations

from typing import List, Optional

from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime

from acetwist.sim.config import SimConfig, endpoint_interface
from acetwist.sim.orchestrator import OrchestratedEngine, Orchestrator
from acetwist.sim.orchestrator_web import OrchestratorServer
from acetwist.sim.simulator import Simulator


def container_id(index: int) -> str:
    """The orchestrator's id of engine C{index} (0-based): C{sim-engine-1}, C{sim-engine-2}, ..."""
    return f"sim-engine-{index + 1}"


def container_name(index: int) -> str:
    return f"acestream-sim-{index + 1}"


def record_host(config: SimConfig) -> str:
    """The host the orchestrator's records name: C{--engine-host}, else the listen interface, else loopback."""
    if config.engine_host:
        return config.engine_host
    interface = endpoint_interface(config.listen)
    if interface in (None, "0.0.0.0"):
        return "127.0.0.1"
    if interface == "::":
        return "::1"
    return interface


class EnginePool:
    """
    C{config.engines} simulators, and an L{OrchestratorServer} when
    C{orchestrator} is true (its records start in engine order, on C{host},
    with port 0 until L{engine_bound} gives the real one).
    """

    def __init__(self, config: SimConfig, reactor: IReactorTime, orchestrator: bool = False,
                 host: Optional[str] = None) -> None:
        self.config = config
        self.simulators: List[Simulator] = [Simulator(config, reactor, name=container_id(i))
                                            for i in range(config.engines)]
        self.orchestrator_server: Optional[OrchestratorServer] = None
        if orchestrator:
            state = Orchestrator(reactor, max_streams_per_engine=config.max_streams_per_engine,
                                 api_key=config.orchestrator_key)
            host = host or record_host(config)
            for i in range(config.engines):
                state.engines.append(OrchestratedEngine(container_id(i), host, 0, container_name=container_name(i)))
            self.orchestrator_server = OrchestratorServer(state, reactor)

    @property
    def orchestrator(self) -> Optional[Orchestrator]:
        return None if self.orchestrator_server is None else self.orchestrator_server.orchestrator

    def engine_bound(self, index: int, port: int) -> None:
        """Engine C{index} listens on C{port}: its orchestrator record says so."""
        orchestrator = self.orchestrator
        if orchestrator is None:
            return
        cid = container_id(index)
        for record in orchestrator.engines:
            if record.container_id == cid:
                record.port = port

    def shutdown(self) -> Deferred[None]:
        """Shut every engine and the orchestrator down; fires when every connection is gone."""
        waits = [simulator.shutdown() for simulator in self.simulators]
        if self.orchestrator_server is not None:
            waits.append(self.orchestrator_server.shutdown())
        return gatherResults(waits).addCallback(lambda _: None)
