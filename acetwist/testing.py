"""
Test and benchmark helpers shipped with the package (txacme style):

- L{start_proxy}: an in-process proxy on 127.0.0.1 with a free port.
- L{Player}: an HTTP player that reads a stream, checks it with
  L{acetwist.ts.TSChecker}, records its time to first byte, and can stall.
- L{FakeEngine} and L{FakeReader}: an L{IEngine} driven by hand, for unit
  tests on C{task.Clock} (checked against the real client by
  C{tests/test_engine_contract.py}).

Everything else here runs on the real reactor and talks only to loopback.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Dict, Generator, Iterable, List, Optional, Tuple, Union

import attr
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IProcessTransport, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone, readBody
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse
from twisted.web.server import Site
from zope.interface import implementer

from acetwist.config import Settings
from acetwist.engine_api import EngineSession, IEngine, IPlaybackReader, PlaybackEnd, Selector
from acetwist.errors import EngineError, ErrorKind
from acetwist.service import ProxyService
from acetwist.ts import TSChecker
from acetwist.upstream import playback_error

if TYPE_CHECKING:
    from acetwist.interfaces import ICoordinator
    from acetwist.reactor import IReactor
    from acetwist.registry import Registry

#: how a L{ProcessWorker} ended: (exit code, signal), one of them None
ExitStatus = Tuple[Optional[int], Optional[int]]


@attr.s(auto_attribs=True)
class RunningProxy:
    service: ProxyService
    port: IListeningPort
    url: str

    @property
    def registry(self) -> Registry:
        return self.service.registry

    @inlineCallbacks
    def stop(self) -> Generator[Deferred[Any], Any, None]:
        yield maybeDeferred(self.port.stopListening)
        yield maybeDeferred(self.service.stopService)


def start_proxy(reactor: IReactor, engine_url: str, coordinator: Optional[ICoordinator] = None,
                **overrides: object) -> RunningProxy:
    """Start a proxy for C{engine_url} listening on 127.0.0.1, port chosen by the kernel."""
    settings = Settings.defaults(engine=engine_url, listen="tcp:0:interface=127.0.0.1", **overrides)
    service = ProxyService(settings, reactor, coordinator=coordinator)
    service.startService()
    # Twisted types listenTCP's factory as ServerFactory[_ProtoWithFactory], which Site is not (invariance)
    port = reactor.listenTCP(0, Site(service.app.resource()), interface="127.0.0.1")  # type: ignore[arg-type]
    address = port.getHost()
    assert isinstance(address, (IPv4Address, IPv6Address))
    return RunningProxy(service, port, f"http://127.0.0.1:{address.port}")


class _PlayerBody(Protocol):
    def __init__(self, player: "Player") -> None:
        self.player = player

    def dataReceived(self, data: bytes) -> None:
        self.player._data(data)

    def connectionLost(self, reason: Optional[Failure] = None) -> None:
        self.player._lost(reason)


class Player:
    """
    One player connection. C{done} fires with the player itself when the
    stream ended, was aborted, or C{limit} bytes were read (then the player
    hangs up).
    """

    def __init__(self, reactor: IReactor, url: str, *, limit: int = 2_000_000,
                 user_agent: str = "acetwist-test-player", keep_bytes: bool = False,
                 max_rate: Optional[float] = None) -> None:
        self.reactor = reactor
        self.url = url
        self.limit = limit
        self.user_agent = user_agent
        self.keep_bytes = keep_bytes
        self.checker = TSChecker()
        self.received = 0
        self.head = b""
        self.data = bytearray()
        self.status: Optional[int] = None
        self.headers: Optional[Headers] = None
        self.body: Optional[bytes] = None
        self.started_at = 0.0
        self.first_byte_at: Optional[float] = None
        self.ended_at: Optional[float] = None
        self.end_reason: Optional[str] = None
        self.clean_end = False
        self.done: Deferred["Player"] = Deferred()
        #: bytes per second this player reads at most (a slow player), or None
        self.max_rate = max_rate
        self._throttled: Optional[IDelayedCall] = None
        self._protocol: Optional[_PlayerBody] = None
        self._pool = HTTPConnectionPool(reactor, persistent=False)
        self._agent = Agent(reactor, pool=self._pool, connectTimeout=5)

    def start(self) -> "Player":
        self.started_at = self.reactor.seconds()
        d = self._agent.request(b"GET", self.url.encode(), Headers({b"User-Agent": [self.user_agent.encode()]}))
        d.addCallbacks(self._response, self._failed)
        return self

    @property
    def time_to_first_byte(self) -> Optional[float]:
        return None if self.first_byte_at is None else self.first_byte_at - self.started_at

    def json(self) -> Dict[str, Any]:
        assert self.body is not None
        return json.loads(self.body)

    def _producer(self) -> Optional[IPushProducer]:
        """The body's transport: the response's producer (pausing it stops reading the socket)."""
        if self._protocol is None or self._protocol.transport is None:
            return None
        return IPushProducer(self._protocol.transport)

    def pause(self) -> None:
        """Stop reading the socket (a stalled player)."""
        producer = self._producer()
        assert producer is not None
        producer.pauseProducing()

    def resume(self) -> None:
        producer = self._producer()
        assert producer is not None
        producer.resumeProducing()

    def hang_up(self) -> None:
        producer = self._producer()
        if producer is not None:
            producer.stopProducing()

    def _response(self, response: IResponse) -> None:
        self.status = response.code
        self.headers = response.headers
        ctype = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
        if response.code != 200 or not ctype.startswith(b"video/"):
            readBody(response).addCallbacks(self._error_body, self._failed)
            return
        self._protocol = _PlayerBody(self)
        response.deliverBody(self._protocol)

    def _error_body(self, body: bytes) -> None:
        self.body = body
        self._finish("http error")

    def _data(self, data: bytes) -> None:
        if self.first_byte_at is None:
            self.first_byte_at = self.reactor.seconds()
            self.head = data[:4096]
        self.received += len(data)
        if self.keep_bytes:
            self.data += data
        self.checker.feed(data)
        if self.received >= self.limit:
            self.hang_up()
        elif self.max_rate is not None and self._throttled is None:
            assert self.first_byte_at is not None
            ahead = self.received / self.max_rate - (self.reactor.seconds() - self.first_byte_at)
            if ahead > 0:
                # short, frequent pauses: a slow reader, not a stalled one
                self.pause()
                self._throttled = self.reactor.callLater(min(ahead, 1.0), self._unthrottle)

    def _unthrottle(self) -> None:
        self._throttled = None
        if not self.done.called:
            self.resume()

    def _lost(self, reason: Optional[Failure]) -> None:
        if self.received >= self.limit:
            self._finish("limit")
        elif reason is not None and reason.check(ResponseDone):
            self.clean_end = True
            self._finish("ended")
        elif reason is not None and reason.check(PotentialDataLoss):
            self._finish("ended without length")
        else:
            self._finish(f"aborted: {reason.getErrorMessage() if reason else '?'}")

    def _failed(self, failure: Failure) -> None:
        self._finish(f"request failed: {failure.getErrorMessage()}")

    def _finish(self, reason: str) -> None:
        if self.done.called:
            return
        if self._throttled is not None and self._throttled.active():
            self._throttled.cancel()
        self.end_reason = reason
        self.ended_at = self.reactor.seconds()
        self._pool.closeCachedConnections()
        self.done.callback(self)


@inlineCallbacks
def fetch(
    reactor: IReactor, url: str, method: bytes = b"GET"
) -> Generator[Deferred[Any], Any, Tuple[int, Headers, bytes]]:
    """A small request; fires with (status, headers, body). For JSON endpoints and HEAD."""
    pool = HTTPConnectionPool(reactor, persistent=False)
    agent = Agent(reactor, pool=pool, connectTimeout=5)
    try:
        response = yield agent.request(method, url.encode())
        body = yield readBody(response)
        return response.code, response.headers, body
    finally:
        yield pool.closeCachedConnections()


def wait_for(reactor: IReactorTime, predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> Deferred[None]:
    """
    Fire when C{predicate()} is true, checking every C{interval}; fail with
    AssertionError after C{timeout}. For state that has no event to wait on
    (counters in another component), bounded in time.
    """
    d: Deferred[None] = Deferred()
    deadline = reactor.seconds() + timeout

    def check() -> None:
        try:
            ok = predicate()
        except Exception:
            d.errback()
            return
        if ok:
            d.callback(None)
        elif reactor.seconds() >= deadline:
            d.errback(AssertionError(f"condition not met within {timeout} s"))
        else:
            reactor.callLater(interval, check)

    check()
    return d


def percentile(values: Iterable[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, int(round(fraction * (len(ordered) - 1)))))
    return ordered[index]


def split_url(url: str) -> Tuple[str, int]:
    host, port = url.split("//", 1)[1].split(":")
    return host, int(port)


def repo_root() -> str:
    """The directory holding the acetwist package (and twisted/plugins)."""
    import os

    import acetwist

    return os.path.dirname(os.path.dirname(os.path.abspath(acetwist.__file__)))


def twistd_command(*args: str) -> List[str]:
    """argv running twistd with this interpreter (its module has no __main__ guard)."""
    import sys

    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", *args]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProcessWorker:
    """
    A real C{twistd acestream-proxy} process on 127.0.0.1 (for multi-worker
    tests and benchmarks). L{start} fires once it listens; L{ended} fires
    with C{(exit code, signal)}.
    """

    def __init__(self, reactor: IReactor, name: str, *options: str) -> None:
        self.reactor = reactor
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.options = options
        self.output = b""
        self.ended: Deferred[ExitStatus] = Deferred()
        self.process: Optional[IProcessTransport] = None

    def start(self) -> Deferred[None]:
        import os

        from twisted.internet import protocol

        worker = self

        class Watch(protocol.ProcessProtocol):
            def outReceived(self, data: bytes) -> None:
                worker.output += data

            errReceived = outReceived

            def processEnded(self, reason: Failure) -> None:
                status = reason.value
                assert isinstance(status, (ProcessDone, ProcessTerminated))
                worker.ended.callback((status.exitCode, status.signal))

        env = dict(os.environ, PYTHONPATH=repo_root() + os.pathsep + os.environ.get("PYTHONPATH", ""))
        argv = twistd_command("acestream-proxy", "--listen", f"tcp:{self.port}:interface=127.0.0.1",
                              "--worker-id", self.name, *self.options)
        self.process = self.reactor.spawnProcess(Watch(), argv[0], argv, env=env, path=repo_root())
        marker = f"Site starting on {self.port}".encode()

        def listening(_: None) -> None:
            if self.ended.called:
                raise RuntimeError(f"worker {self.name} exited: {self.output[-2000:]!r}")

        d = wait_for(self.reactor, lambda: marker in self.output or self.ended.called, timeout=30)
        return d.addCallback(listening)

    @property
    def running(self) -> bool:
        return self.process is not None and not self.ended.called

    def signal(self, name: str) -> None:
        if self.process is not None and self.running:
            self.process.signalProcess(name)

    def stop(self) -> Deferred[ExitStatus] | Deferred[None]:
        """SIGTERM, then SIGKILL if it has not ended within 15 s; fires with how it ended (None if it never started)."""
        if not self.running:
            return self.ended if self.ended.called else succeed(None)
        self.signal("TERM")
        timer = self.reactor.callLater(15, self.signal, "KILL")

        def ended(result: ExitStatus) -> ExitStatus:
            if timer.active():
                timer.cancel()
            return result

        return self.ended.addBoth(ended)

    def status(self) -> Deferred[Dict[str, Any]]:
        return fetch(self.reactor, f"{self.url}/status").addCallback(lambda r: json.loads(r[2]))


async def _none() -> None:
    return None


# ------------------------------------------------------------------ engine fakes
#
# An IEngine and IPlaybackReader that tests complete by hand. Their canned
# endings give the same errors as the real client (tests/test_engine_contract.py
# runs the same behaviours against both).


def engine_error(kind: ErrorKind, message: str = "") -> EngineError:
    """An error of C{kind} with the status and Retry-After the real engine client gives it."""
    retry_after = 5 if kind is ErrorKind.UNREACHABLE else None
    return EngineError(kind.status, message or f"engine: {kind.value}", retry_after, kind=kind)


@implementer(IPlaybackReader)
class FakeReader:
    """
    A playback read the test drives: L{feed} it bytes, then end it the way
    the engine would (L{cut}, L{empty}, L{gone}) or with any error (L{end}).
    Like the real reader it calls C{on_end} at most once and never after
    L{stop}; C{stopped} is true once either happened.
    """

    def __init__(self, engine: "FakeEngine", url: str, on_data: Callable[[bytes], None],
                 on_end: Callable[[PlaybackEnd], None], first_byte_timeout: float, idle_timeout: float = 0.0) -> None:
        self.engine = engine
        self.url = url
        self.on_data = on_data
        self.on_end = on_end
        self.first_byte_timeout = first_byte_timeout
        self.idle_timeout = idle_timeout
        self.stopped = False
        self.bytes_read = 0

    def feed(self, data: bytes) -> None:
        """The engine sends C{data}."""
        assert not self.stopped, "a stopped or ended read gets no data"
        self.bytes_read += len(data)
        self.on_data(data)

    def end(self, reason: str = "cut", error: Union[EngineError, ErrorKind, None] = None) -> None:
        """End the read with C{error} (an L{EngineError}, or a kind made into one by L{engine_error})."""
        assert not self.stopped, "a stopped or ended read does not end again"
        if isinstance(error, ErrorKind):
            error = engine_error(error, reason)
        self.stopped = True
        self.on_end(PlaybackEnd(reason, self.bytes_read, error))

    def cut(self) -> None:
        """The engine ends a flowing stream (closed or reset): no error, the bytes read so far."""
        assert self.bytes_read > 0, "cut() ends a stream that delivered data; use empty() before any"
        self.end("engine closed the stream")

    def empty(self) -> None:
        """The playback reply ends before any byte (the engine is warming up): C{EMPTY}."""
        assert self.bytes_read == 0, "empty() is an end before any data"
        self.end("engine closed the stream",
                 EngineError(502, "engine ended the stream before any data", kind=ErrorKind.EMPTY))

    def gone(self, code: int = 404, body: bytes = b"download not found") -> None:
        """The playback URL answers HTTP C{code}: the engine no longer knows the session (C{GONE})."""
        assert self.bytes_read == 0, "an HTTP error comes before any data"
        self.end(f"engine playback answered HTTP {code}", playback_error(code, body))

    def stop(self) -> None:
        """Abandon the read; no callback follows."""
        self.stopped = True


@implementer(IEngine)
class FakeEngine:
    """
    An engine client whose JSON calls and reads the test completes by hand:
    C{opens} are the pending L{open_session} Deferreds (L{answer} or
    L{refuse} them), C{readers} every L{FakeReader}. It tracks which sessions
    are live as the engine would: L{stop} is True once for a live session,
    L{restart} forgets them all. Set C{down} while the engine cannot be
    reached: L{stop} then says False (JSON calls and reads are still ended by
    hand, with C{refuse(ErrorKind.UNREACHABLE)} and C{end(..., ErrorKind.UNREACHABLE)}).
    """

    base_url = "http://engine.invalid:6878"

    def __init__(self, infohash: str = "ab" * 20) -> None:
        self.infohash = infohash
        self.opens: List[Deferred[EngineSession]] = []
        self.selectors: List[Selector] = []
        self.readers: List[FakeReader] = []
        #: pids of every session stop was asked for, in order
        self.stopped: List[str] = []
        self.json_calls = 0
        self.stop_calls = 0
        self.restarts = 0
        self.down = False
        self._live: Dict[str, EngineSession] = {}  # by pid

    def open_session(self, selector: Selector) -> Deferred[EngineSession]:
        self.json_calls += 1
        self.selectors.append(selector)
        d: Deferred[EngineSession] = Deferred()
        self.opens.append(d)
        return d

    def session(self, n: int, infohash: Optional[str] = None) -> EngineSession:
        """The session the C{n}th JSON call gets (URLs on C{base_url}, C{pid-n})."""
        return EngineSession(
            playback_url=f"{self.base_url}/ace/r/{infohash or self.infohash}/{n:032x}",
            stat_url=f"{self.base_url}/ace/stat/{infohash or self.infohash}/{n:032x}",
            command_url=f"{self.base_url}/ace/cmd/{infohash or self.infohash}/{n:032x}",
            infohash=infohash or self.infohash,
            playback_session_id=f"{n:040x}",
            pid=f"pid-{n}",
        )

    def answer(self, index: int = -1, infohash: Optional[str] = None) -> EngineSession:
        """Complete the C{index}th JSON call with a (live) session."""
        n = index if index >= 0 else len(self.opens) + index
        session = self.session(n, infohash)
        self._live[session.pid] = session
        self.opens[n].callback(session)
        return session

    def refuse(self, error: Union[EngineError, ErrorKind] = ErrorKind.REFUSED, index: int = -1) -> None:
        """Fail the C{index}th JSON call with C{error} (or the real client's error of that kind)."""
        if isinstance(error, ErrorKind):
            error = engine_error(error, "engine: failed to load content" if error is ErrorKind.REFUSED else "")
        self.opens[index].errback(error)

    def knows(self, url: str) -> bool:
        """C{url} is the playback URL of a live session (answered, not stopped, not forgotten)."""
        return any(session.playback_url == url for session in self._live.values())

    def restart(self) -> None:
        """
        The engine restarts: every session is forgotten, flowing reads are
        cut, reads still waiting for data lose their connection (C{UNREACHABLE}).
        """
        self.restarts += 1
        self._live.clear()
        for reader in list(self.readers):  # a channel may start a new read from on_end: not this restart's
            if reader.stopped:
                continue
            if reader.bytes_read:
                reader.cut()
            else:
                reader.end("playback request failed: connection lost", ErrorKind.UNREACHABLE)

    def read(self, url: str, *, on_data: Callable[[bytes], None], on_end: Callable[[PlaybackEnd], None],
             first_byte_timeout: float, idle_timeout: float) -> FakeReader:
        reader = FakeReader(self, url, on_data, on_end, first_byte_timeout, idle_timeout)
        self.readers.append(reader)
        return reader

    def stop(self, session: EngineSession) -> Deferred[bool]:
        """True if C{session} was live (it is not any more), False otherwise (or while C{down}); never fails."""
        self.stop_calls += 1
        self.stopped.append(session.pid)
        if self.down:
            return succeed(False)
        return succeed(self._live.pop(session.pid, None) == session)

    def close(self) -> Deferred[None]:
        return succeed(None)
