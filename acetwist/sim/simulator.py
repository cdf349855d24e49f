# -*- test-case-name: tests.test_sim_web -*-
"""
One simulated engine assembled: the engine, its Site, and what an
engine-wide C{down} fault does to the listening port (C{refuse} stops
listening until the fault is cleared).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from acetwist.sim.config import SimConfig
from acetwist.sim.control import ControlResource
from acetwist.sim.engine import Engine
from acetwist.sim.faults import Fault
from acetwist.sim.listening import ListenSwitch, Pause, Resume
from acetwist.sim.web import EngineResource, SimSite


class Simulator:
    """
    One simulated engine: L{engine} (state, counters, faults) and L{site}
    (the HTTP API). Give it a listener with L{set_listener} so that
    C{down:mode=refuse} can close and reopen the port.
    """

    def __init__(self, config: SimConfig, reactor: IReactorTime, name: str = "") -> None:
        self.reactor = reactor
        self.name = name
        self.engine = Engine(reactor, config, name=name)
        self.log = Logger(namespace=f"acetwist.sim.service.{name}" if name else "acetwist.sim.service")
        self.site: SimSite = SimSite(EngineResource(self.engine, ControlResource(self.engine, lambda: self.site)),
                                     reactor)
        self._stopped = False
        self.switch = ListenSwitch(reactor, self._wanted, self.log)
        self.engine.add_down_observer(self._down_changed)

    def set_listener(self, pause: Pause, resume: Resume) -> None:
        """C{pause()} stops listening (may return a Deferred); C{resume()} listens again (may raise)."""
        self.switch.set_listener(pause, resume)

    def _down_changed(self, fault: Fault, active: bool) -> None:
        if fault.content is not None:
            return
        if active and fault.params["mode"] in ("refuse", "reset"):
            self.site.abort_connections(keep_control=True)
        self.switch.reconcile()

    def _wanted(self) -> bool:
        return not self._stopped and self.engine.down_mode(None) != "refuse"

    def shutdown(self) -> Deferred[None]:
        """Stop every timer and cut every connection; fires when all connections are gone."""
        self._stopped = True
        self.switch.stop()
        self.engine.shutdown()
        self.site.abort_connections(keep_control=False)
        return self.site.drained()
