# -*- test-case-name: tests.test_sim_web -*-
"""
The simulator in-process, for the proxy's integration tests and benchmarks.

    from acetwist.sim.testing import start_simulator
    from acetwist.sim.contents import DEFAULT_CONTENTS

    sim = await start_simulator(reactor, prebuffer=0.2, burst=1.0, bitrate=4_000_000)
    try:
        url = f"{sim.url}/ace/getstream?id={DEFAULT_CONTENTS[0].content_id}&format=json"
        ...
        sim.engine.set_fault("cut", content=DEFAULT_CONTENTS[0].content_id, after_bytes=300_000)
        assert sim.engine.counters.snapshot()["sessions_opened"] == 1
    finally:
        await sim.stop()

L{start_simulator} returns a Deferred (await it, or yield it under
inlineCallbacks) that fires with a L{RunningSimulator} listening on
127.0.0.1 on a free port. Its keyword arguments are the command-line options
with dashes as underscores: C{bitrate}, C{prebuffer}, C{burst}, C{gop},
C{idle_timeout}, C{stat_keeps_alive}, C{contents}, C{tick}, and C{faults} (a
list of C{"name:k=v@content"} strings or C{{"name": ..., "content": ...,
**params}} dicts). Values may be numbers or the same strings as the flags.

C{RunningSimulator.engine} is the L{acetwist.sim.engine.Engine}:
C{engine.counters.snapshot()} (names in docs/simulator.md),
C{engine.set_fault(name, content=None, **params)},
C{engine.clear_faults(name=None, content="*")}, C{engine.restart(down_ms=0)},
C{engine.sessions} (live sessions by infohash). C{stop()} stops listening,
cuts every connection, cancels every timer and fires when all is closed.
"""

from __future__ import annotations

from typing import Any, Optional

import attr
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred

from acetwist.sim.config import SimConfig
from acetwist.sim.engine import Engine
from acetwist.sim.service import Simulator


@attr.s(auto_attribs=True, eq=False)
class RunningSimulator:
    """A simulator listening on loopback. C{url} is C{http://127.0.0.1:PORT}."""

    simulator: Simulator
    reactor: Any
    interface: str
    port_number: int
    port: Optional[Any] = None
    stopped: bool = False

    @property
    def engine(self) -> Engine:
        return self.simulator.engine

    @property
    def url(self) -> str:
        return f"http://{self.interface}:{self.port_number}"

    def _pause(self) -> Any:
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None

    def _resume(self) -> None:
        self.port = self.reactor.listenTCP(self.port_number, self.simulator.site, interface=self.interface)

    @inlineCallbacks
    def stop(self) -> Any:
        """Stop listening, cut every connection, cancel every timer."""
        if self.stopped:
            return
        self.stopped = True
        yield maybeDeferred(self._pause)
        yield self.simulator.shutdown()


def start_simulator(reactor: Any, interface: str = "127.0.0.1", port: int = 0, **config: Any) -> Deferred[RunningSimulator]:
    """
    Start a simulator on C{interface}:C{port} (a free port by default) with
    the given settings. Raises L{acetwist.config.ConfigError} for a bad
    setting; the Deferred fires once the port is listening.
    """
    settings = SimConfig.from_values(config)
    simulator = Simulator(settings, reactor)
    listening = reactor.listenTCP(port, simulator.site, interface=interface)
    running = RunningSimulator(simulator, reactor, interface, listening.getHost().port, listening)
    simulator.set_listener(running._pause, running._resume)
    done: Deferred[RunningSimulator] = Deferred()
    done.callback(running)
    return done
