"""An in-process proxy on loopback, and players that read and check its streams."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Dict, Generator, Iterable, Optional, Tuple

import attr
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone, readBody
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from acetwist.config import Settings
from acetwist.service import ProxyService
from acetwist.ts import TSChecker

if TYPE_CHECKING:
    from acetwist.interfaces import ICoordinator
    from acetwist.reactor import IReactor
    from acetwist.registry import Registry


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
    """
    Start a proxy for C{engine_url} listening on 127.0.0.1, port chosen by the
    kernel, with the same site (connection limits, header deadline, redacted
    access log) and backlog as C{twistd acestream-proxy}.
    """
    settings = Settings.defaults(engine=engine_url, listen="tcp:0:interface=127.0.0.1", **overrides)
    service = ProxyService(settings, reactor, coordinator=coordinator)
    service.startService()
    site = service.app.site(reactor)
    # Twisted types listenTCP's factory as ServerFactory[_ProtoWithFactory], which Site is not (invariance)
    port = reactor.listenTCP(0, site, backlog=settings.backlog, interface="127.0.0.1")  # type: ignore[arg-type]
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
