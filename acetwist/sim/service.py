# -*- test-case-name: tests.test_sim_tap -*-
"""
Assembly: the engine, its Site, and what an engine-wide C{down} fault does to
the listening port (C{refuse} stops listening until the fault is cleared).
L{SimulatorService} is what twistd runs; L{acetwist.sim.testing} builds the
same L{Simulator} on a loopback port.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Optional

from twisted.application import service, strports
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from acetwist.sim.config import SimConfig
from acetwist.sim.control import ControlResource
from acetwist.sim.engine import Engine
from acetwist.sim.faults import Fault
from acetwist.sim.web import EngineResource, SimSite

if TYPE_CHECKING:
    from acetwist.reactor import IReactor

RETRY_LISTEN = 0.5

#: stops listening; may return a Deferred that fires once it has
Pause = Callable[[], Optional[Deferred[None]]]
#: listens again; raises when the port is busy
Resume = Callable[[], None]


class Simulator:
    """
    One simulated engine: L{engine} (state, counters, faults) and L{site}
    (the HTTP API). Give it a listener with L{set_listener} so that
    C{down:mode=refuse} can close and reopen the port.
    """

    log = Logger()

    def __init__(self, config: SimConfig, reactor: IReactorTime) -> None:
        self.reactor = reactor
        self.engine = Engine(reactor, config)
        self.site: SimSite = SimSite(EngineResource(self.engine, ControlResource(self.engine, lambda: self.site)),
                                     reactor)
        self._pause: Optional[Pause] = None
        self._resume: Optional[Resume] = None
        self._listening = True
        self._busy = False
        self._retry: Optional[IDelayedCall] = None
        self._stopped = False
        self.engine.add_down_observer(self._down_changed)

    def set_listener(self, pause: Pause, resume: Resume) -> None:
        """C{pause()} stops listening (may return a Deferred); C{resume()} listens again (may raise)."""
        self._pause, self._resume = pause, resume
        self._reconcile()

    def _down_changed(self, fault: Fault, active: bool) -> None:
        if fault.content is not None:
            return
        if active and fault.params["mode"] in ("refuse", "reset"):
            self.site.abort_connections(keep_control=True)
        self._reconcile()

    def _wanted(self) -> bool:
        return not self._stopped and self.engine.down_mode(None) != "refuse"

    def _reconcile(self) -> None:
        if self._busy or self._pause is None or self._resume is None or self._wanted() == self._listening:
            return
        if self._listening:
            self._busy = True
            self.log.info("down: no longer listening")

            def paused(_: object) -> None:
                self._listening = False
                self._busy = False
                self._reconcile()

            maybeDeferred(self._pause).addBoth(paused)
            return
        try:
            self._resume()
        except Exception as e:
            self.log.warn("listening again failed ({error}); retrying", error=e)
            self._retry = self.reactor.callLater(RETRY_LISTEN, self._retry_listen)
            return
        self._listening = True
        self.log.info("up: listening again")

    def _retry_listen(self) -> None:
        self._retry = None
        self._reconcile()

    def shutdown(self) -> Deferred[None]:
        """Stop every timer and cut every connection; fires when all connections are gone."""
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self.engine.shutdown()
        self.site.abort_connections(keep_control=False)
        return self.site.drained()


class SimulatorService(service.MultiService):
    """
    The twistd service: a L{Simulator} listening on C{config.listen}. The
    listening service is managed here rather than as a child so that it can
    be replaced when a C{refuse} fault ends; the first listen happens in
    C{privilegedStartService}, so a busy port makes twistd exit non-zero.
    """

    log = Logger()

    def __init__(self, config: SimConfig, reactor: IReactor) -> None:
        super().__init__()
        self.config = config
        self.reactor = reactor
        self.simulator = Simulator(config, reactor)
        self.listening: Optional[service.Service] = self._listen_service()
        self.simulator.set_listener(self._pause, self._resume)

    @property
    def engine(self) -> Engine:
        return self.simulator.engine

    def _listen_service(self) -> service.Service:
        return strports.service(self.config.listen, self.simulator.site, reactor=self.reactor)

    def _pause(self) -> Optional[Deferred[None]]:
        listening, self.listening = self.listening, None
        if listening is not None and listening.running:
            return listening.stopService()
        return None

    def _resume(self) -> None:
        fresh = self._listen_service()
        if self.running:
            fresh.privilegedStartService()  # raises when the port is busy
            fresh.startService()
        self.listening = fresh

    def privilegedStartService(self) -> None:
        super().privilegedStartService()
        if self.listening is not None:
            self.listening.privilegedStartService()

    def startService(self) -> None:
        config = self.config
        self.log.info("AceStream engine simulator on {listen}: bitrate={bitrate} prebuffer={prebuffer}s "
                      "burst={burst}s gop={gop}s idle_timeout={idle}s", listen=config.listen, bitrate=config.bitrate,
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
            self.log.info("fault in force: {fault}", fault=fault.as_json())
        super().startService()
        if self.listening is not None:
            self.listening.startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        listening = self._pause()
        stopped = listening if listening is not None else succeed(None)
        return stopped.addCallback(lambda _: self.simulator.shutdown())
