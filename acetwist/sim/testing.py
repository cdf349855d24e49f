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
C{idle_timeout}, C{stat_keeps_alive}, C{contents}, C{tick}, C{engines},
C{engine_host}, C{orchestrator_key}, C{max_streams_per_engine}, and C{faults}
(a list of C{"name:k=v@content"} strings or C{{"name": ..., "content": ...,
**params}} dicts, set on every engine). Values may be numbers or the same
strings as the flags. C{orchestrator=True} also starts the orchestrator
look-alike (on C{orchestrator_port}, free by default).

C{RunningSimulator.engine} is the first engine's
L{acetwist.sim.engine.Engine}: C{engine.counters.snapshot()} (names in
docs/simulator.md), C{engine.set_fault(name, content=None, **params)},
C{engine.clear_faults(name=None, content="*")}, C{engine.restart(down_ms=0)},
C{engine.sessions} (live sessions by infohash). C{RunningSimulator.engines}
lists every engine as a L{RunningEngine} (C{url}, C{engine}, C{container_id},
C{down()}, C{up()}, C{stop()}); C{RunningSimulator.orchestrator} is the
L{acetwist.sim.orchestrator.Orchestrator} (with its C{url}) or None. C{stop()}
stops listening, cuts every connection, cancels every timer and fires when
all is closed.

    sim = await start_simulator(reactor, engines=3, orchestrator=True, orchestrator_key="k")
    sim.engines[1].down()                                  # only that engine refuses connections
    sim.orchestrator.set_engine(sim.engines[0].container_id, forwarded=True)
    sim.orchestrator.events_of("stream_started")           # the bodies received, in order
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Generator, List, Optional

import attr
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.error import ConnectionAborted, ConnectionDone
from twisted.internet.interfaces import IListeningPort, IProtocol, IReactorTime
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.server import Site

from acetwist.sim.config import SimConfig
from acetwist.sim.engine import Engine
from acetwist.sim.faults import Fault
from acetwist.sim.orchestrator import Orchestrator
from acetwist.sim.pool import EnginePool, container_id
from acetwist.sim.simulator import Simulator

if TYPE_CHECKING:
    from acetwist.reactor import IReactor


@attr.s(auto_attribs=True, eq=False)
class LoopbackListener:
    """A TCP port on C{interface} that can be closed and reopened on the same number."""

    reactor: IReactor
    interface: str
    port_number: int
    factory: Site
    port: Optional[IListeningPort] = None

    @property
    def url(self) -> str:
        host = f"[{self.interface}]" if ":" in self.interface else self.interface
        return f"http://{host}:{self.port_number}"

    def pause(self) -> Optional[Deferred[None]]:
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None

    def resume(self) -> None:
        self.port = _listen(self.reactor, self.port_number, self.factory, self.interface)


def _loopback(reactor: IReactor, interface: str, port: int, factory: Site) -> LoopbackListener:
    listening = _listen(reactor, port, factory, interface)
    address = listening.getHost()
    assert isinstance(address, (IPv4Address, IPv6Address))
    return LoopbackListener(reactor, interface, address.port, factory, listening)


@attr.s(auto_attribs=True, eq=False)
class RunningEngine:
    """
    One engine of a running simulator, with its own port, sessions, faults
    and counters. C{url} is C{http://127.0.0.1:PORT}; C{container_id} is its
    id in the orchestrator look-alike's list (C{sim-engine-1}, ...).
    """

    index: int
    simulator: Simulator
    listener: LoopbackListener
    stopped: bool = False

    @property
    def engine(self) -> Engine:
        return self.simulator.engine

    @property
    def site(self) -> Site:
        return self.simulator.site

    @property
    def url(self) -> str:
        return self.listener.url

    @property
    def port_number(self) -> int:
        return self.listener.port_number

    @property
    def port(self) -> Optional[IListeningPort]:
        """The listening port; None while a C{refuse} fault has it closed, and after L{stop}."""
        return self.listener.port

    @property
    def container_id(self) -> str:
        return container_id(self.index)

    def down(self, mode: str = "refuse", ms: Optional[int] = None) -> Fault:
        """Take this engine (only) down: C{refuse} closes its port, C{reset} and C{503} answer so; see faults."""
        return self.engine.set_fault("down", mode=mode, ms=ms)

    def up(self) -> int:
        """End an engine-wide C{down} fault; returns how many were cleared (0 or 1)."""
        return self.engine.clear_faults("down", content=None)

    @inlineCallbacks
    def stop(self) -> Generator[Deferred[Any], Any, None]:
        """This engine dies for good: it stops listening, cuts every connection, cancels every timer."""
        if self.stopped:
            return
        self.stopped = True
        yield maybeDeferred(self.listener.pause)
        yield self.simulator.shutdown()


@attr.s(auto_attribs=True, eq=False)
class RunningSimulator:
    """
    Engines (and perhaps the orchestrator look-alike) listening on loopback.
    C{engines} lists every engine; C{url}, C{engine}, C{port_number} and
    C{port} are the first engine's. C{orchestrator} is the look-alike's
    state (with its C{url}), or None.
    """

    engines: List[RunningEngine]
    pool: EnginePool
    orchestrator_listener: Optional[LoopbackListener] = None
    stopped: bool = False

    @property
    def simulator(self) -> Simulator:
        return self.engines[0].simulator

    @property
    def engine(self) -> Engine:
        return self.engines[0].engine

    @property
    def url(self) -> str:
        return self.engines[0].url

    @property
    def urls(self) -> List[str]:
        """Every engine's URL, in order."""
        return [e.url for e in self.engines]

    @property
    def interface(self) -> str:
        return self.engines[0].listener.interface

    @property
    def port_number(self) -> int:
        return self.engines[0].port_number

    @property
    def port(self) -> Optional[IListeningPort]:
        return self.engines[0].port

    @property
    def orchestrator(self) -> Optional[Orchestrator]:
        return self.pool.orchestrator

    def engine_by_id(self, container_id: str) -> RunningEngine:
        """The engine whose orchestrator C{container_id} (or URL) this is."""
        for engine in self.engines:
            if container_id in (engine.container_id, engine.url):
                return engine
        raise KeyError(container_id)

    @inlineCallbacks
    def stop(self) -> Generator[Deferred[Any], Any, None]:
        """Stop listening, cut every connection, cancel every timer (every engine and the orchestrator)."""
        if self.stopped:
            return
        self.stopped = True
        listener = self.orchestrator_listener
        if listener is not None:
            yield maybeDeferred(listener.pause)
        for engine in self.engines:
            yield engine.stop()
        server = self.pool.orchestrator_server
        if server is not None:
            yield server.shutdown()


def _listen(reactor: IReactor, port: int, site: Site, interface: str) -> IListeningPort:
    # Twisted types listenTCP's factory as ServerFactory[_ProtoWithFactory], which Site is not (invariance)
    return reactor.listenTCP(port, site, interface=interface)  # type: ignore[arg-type]


def start_simulator(reactor: IReactor, interface: str = "127.0.0.1", port: int = 0, *,
                    orchestrator: bool = False, orchestrator_port: int = 0,
                    **config: object) -> Deferred[RunningSimulator]:
    """
    Start C{engines} engines (1 by default) on C{interface}, on consecutive
    ports from C{port} (a free port each by default), and with
    C{orchestrator} the orchestrator look-alike on C{orchestrator_port}
    (free by default), listing them. Raises L{acetwist.config.ConfigError}
    for a bad setting; the Deferred fires once every port is listening.
    """
    settings = SimConfig.from_values(config)
    pool = EnginePool(settings, reactor, orchestrator=orchestrator, host=settings.engine_host or interface)
    listeners: List[LoopbackListener] = []
    try:
        for index, simulator in enumerate(pool.simulators):
            listener = _loopback(reactor, interface, port + index if port else 0, simulator.site)
            listeners.append(listener)
            pool.engine_bound(index, listener.port_number)
        server = pool.orchestrator_server
        orchestrator_listener = None
        if server is not None:
            orchestrator_listener = _loopback(reactor, interface, orchestrator_port, server.site)
            listeners.append(orchestrator_listener)
            server.orchestrator.url = orchestrator_listener.url
    except Exception:
        for listener in listeners:
            listener.pause()
        pool.shutdown()
        raise
    engines = [RunningEngine(i, simulator, listener)
               for i, (simulator, listener) in enumerate(zip(pool.simulators, listeners))]
    for engine in engines:
        engine.simulator.set_listener(engine.listener.pause, engine.listener.resume)
    if server is not None and orchestrator_listener is not None:
        server.set_listener(orchestrator_listener.pause, orchestrator_listener.resume)
    done: Deferred[RunningSimulator] = Deferred()
    done.callback(RunningSimulator(engines, pool, orchestrator_listener))
    return done


# --------------------------------------------------------------------------
# in-memory HTTP, for tests that run the simulator on a task.Clock


class _MemoryTransport(StringTransport):
    """A StringTransport whose close and abort reach the protocol on the next clock turn."""

    def __init__(self, clock: IReactorTime) -> None:
        super().__init__(IPv4Address("TCP", "127.0.0.1", 6878), IPv4Address("TCP", "127.0.0.1", 50000))
        self.clock = clock
        self.protocol: Optional[IProtocol] = None
        self.aborted = False
        self.closed = False

    def loseConnection(self) -> None:
        super().loseConnection()
        self._close(ConnectionDone())

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()
        self._close(ConnectionAborted())

    def _close(self, reason: Exception) -> None:
        if not self.closed:
            self.closed = True
            assert self.protocol is not None
            self.clock.callLater(0, self.protocol.connectionLost, Failure(reason))


@attr.s(auto_attribs=True)
class MemoryResponse:
    status: Optional[int]
    headers: Dict[str, str]
    body: bytes
    complete: bool
    raw: bytes


def parse_response(raw: bytes) -> MemoryResponse:
    """The first HTTP/1.1 response in C{raw}, chunked bodies decoded (status None until the headers are there)."""
    head, sep, rest = raw.partition(b"\r\n\r\n")
    if not sep:
        return MemoryResponse(None, {}, b"", False, raw)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        chunks, complete = bytearray(), False
        while True:
            size_line, crlf, after = rest.partition(b"\r\n")
            if not crlf:
                break
            size = int(size_line, 16)
            if size == 0:
                complete = True
                break
            if len(after) < size + 2:
                chunks += after[:size]
                break
            chunks += after[:size]
            rest = after[size + 2 :]
        return MemoryResponse(status, headers, bytes(chunks), complete, raw)
    length = int(headers.get("content-length", "-1"))
    body = rest if length < 0 else rest[:length]
    return MemoryResponse(status, headers, body, length >= 0 and len(rest) >= length, raw)


class MemoryClient:
    """
    One HTTP connection to a simulator's Site held in memory, for tests on a
    C{task.Clock}: C{get(path)}, then C{clock.advance(...)}, then
    C{response()}. C{transport.aborted} tells a reset from a clean close.
    """

    def __init__(self, site: Site, clock: IReactorTime, host: str = "127.0.0.1:6878") -> None:
        self.host = host
        self.transport = _MemoryTransport(clock)
        protocol = site.buildProtocol(self.transport.getPeer())
        assert protocol is not None
        self.protocol: IProtocol = protocol
        self.transport.protocol = self.protocol
        self.protocol.makeConnection(self.transport)

    def request(self, method: str, path: str, body: bytes = b"",
                headers: Optional[Dict[str, str]] = None) -> "MemoryClient":
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
        self.protocol.dataReceived(head.encode("latin-1") + body)
        return self

    def get(self, path: str) -> "MemoryClient":
        return self.request("GET", path)

    def raw(self) -> bytes:
        return self.transport.value()

    def response(self) -> MemoryResponse:
        return parse_response(self.transport.value())

    def hang_up(self) -> None:
        """The client goes away."""
        self.transport.loseConnection()
