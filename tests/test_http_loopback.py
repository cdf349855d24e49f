"""The real proxy on loopback against abusive clients: slow heads, too many connections, bodies, bad paths, tokens in logs."""

import json
from typing import Any, Dict, List, Optional

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from acetwist.testing import fetch, split_url, wait_for
from tests.integration import SimulatorProxyTestCase


class RawClient(Protocol):
    """A hand-written HTTP client: what it sends is up to the test; it records what comes back."""

    def __init__(self) -> None:
        self.received = b""
        self.sent = 0
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.closed.callback(None)

    def send(self, data: bytes) -> None:
        self.sent += len(data)
        assert self.transport is not None
        self.transport.write(data)

    @property
    def status(self) -> Optional[int]:
        if not self.received.startswith(b"HTTP/1.1 "):
            return None
        return int(self.received[9:12])

    def body(self) -> Dict[str, Any]:
        return json.loads(self.received.partition(b"\r\n\r\n")[2])


class LoopbackTestCase(SimulatorProxyTestCase):
    @inlineCallbacks
    def connect(self) -> Any:
        host, port = split_url(self.proxy.url)
        client = RawClient()
        yield connectProtocol(TCP4ClientEndpoint(self.reactor, host, port, timeout=5), client)
        self.addCleanup(self._close, client)
        return client

    @staticmethod
    def _close(client: RawClient) -> Deferred[None]:
        if not client.closed.called and client.transport is not None:
            client.transport.abortConnection()  # type: ignore[attr-defined]
        return client.closed

    @property
    def http(self) -> Dict[str, int]:
        return self.proxy.service.app.connections.status()


class SlowClientTests(LoopbackTestCase):
    proxy_config = dict(SimulatorProxyTestCase.proxy_config, header_timeout=0.5)

    @inlineCallbacks
    def test_slow_loris_is_cut_at_the_header_deadline(self) -> Any:
        """A client sending one header byte every 0.1 s gets a 408 and is disconnected at the head deadline, long before its head is done."""
        client = yield self.connect()
        head = b"GET /healthz HTTP/1.1\r\nHost: proxy\r\nX-Slow: " + b"a" * 200 + b"\r\n\r\n"

        def trickle() -> None:
            if not client.closed.called and client.sent < len(head):
                client.send(head[client.sent:client.sent + 1])

        loop = LoopingCall(trickle)
        loop.clock = self.reactor
        loop.start(0.1)
        self.addCleanup(lambda: loop.stop() if loop.running else None)
        yield wait_for(self.reactor, lambda: client.closed.called, timeout=15)
        self.assertEqual(client.status, 408)
        self.assertLess(client.sent, len(head))
        self.assertEqual(self.http["header_timeouts"], 1)

    @inlineCallbacks
    def test_player_streaming_past_the_deadline_is_not_cut(self) -> Any:
        """A player receiving a stream for several header deadlines gets every byte it asked for."""
        player = self.play(limit=1_500_000)
        yield player.done
        self.assertEqual(player.end_reason, "limit")
        self.assertGreater(player.ended_at - player.first_byte_at, 1.0)  # several 0.5 s deadlines passed
        self.assertCleanTS(player)
        self.assertEqual(self.http["header_timeouts"], 0)


class PerAddressCapTests(LoopbackTestCase):
    proxy_config = dict(SimulatorProxyTestCase.proxy_config, max_connections_per_ip=3)

    @inlineCallbacks
    def test_connections_over_the_per_address_cap_are_closed(self) -> Any:
        """With --max-connections-per-ip 3, a 4th connection from 127.0.0.1 is closed without an answer; closing one lets the next in."""
        held: List[RawClient] = []
        for _ in range(3):
            held.append((yield self.connect()))
        yield wait_for(self.reactor, lambda: self.http["open"] == 3)
        extra = yield self.connect()
        extra.send(b"GET /healthz HTTP/1.1\r\nHost: proxy\r\n\r\n")
        yield wait_for(self.reactor, lambda: extra.closed.called, timeout=10)
        self.assertEqual(extra.received, b"")
        self.assertEqual(self.http["refused_per_ip"], 1)
        held[0].transport.loseConnection()  # type: ignore[union-attr]
        yield wait_for(self.reactor, lambda: self.http["open"] == 2)
        status, _, body = yield fetch(self.reactor, f"{self.proxy.url}/healthz")
        self.assertEqual(status, 200)


class TotalCapTests(LoopbackTestCase):
    proxy_config = dict(SimulatorProxyTestCase.proxy_config, max_connections=2, max_connections_per_ip=0)

    @inlineCallbacks
    def test_connections_over_the_total_cap_are_closed(self) -> Any:
        """With --max-connections 2, a third connection is closed at once and counted."""
        for _ in range(2):
            yield self.connect()
        yield wait_for(self.reactor, lambda: self.http["open"] == 2)
        extra = yield self.connect()
        yield wait_for(self.reactor, lambda: extra.closed.called, timeout=10)
        self.assertEqual(extra.received, b"")
        self.assertEqual(self.http["refused_max_connections"], 1)


class RequestAbuseTests(LoopbackTestCase):
    @inlineCallbacks
    def test_large_body_is_refused_before_it_is_sent(self) -> Any:
        """A POST announcing 10 MB gets a JSON 413 after its headers and 64 KiB, the rest never sent, and no engine call."""
        client = yield self.connect()
        client.send(b"POST /status HTTP/1.1\r\nHost: proxy\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 65536)
        yield wait_for(self.reactor, lambda: client.closed.called, timeout=10)
        self.assertEqual(client.status, 413)
        self.assertEqual(client.body()["status"], 413)
        self.assertEqual(self.http["bodies_refused"], 1)
        self.assertEqual(self.counters()["json_calls"], {})

    @inlineCallbacks
    def test_non_utf8_path_is_a_400_without_a_traceback(self) -> Any:
        """GET /%ff%fe is a JSON 400 and nothing is logged as an error."""
        client = yield self.connect()
        client.send(b"GET /%ff%fe HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n\r\n")
        yield wait_for(self.reactor, lambda: client.closed.called, timeout=10)
        self.assertEqual(client.status, 400)
        self.assertEqual(client.body()["status"], 400)
        self.assertEqual(self.flushLoggedErrors(), [])

    @inlineCallbacks
    def test_double_slash_stream_url_is_served(self) -> Any:
        """GET /ace//getstream?id=X streams the channel (no redirect that drops the query)."""
        url = self.stream_url().replace("/ace/getstream", "/ace//getstream")
        player = self.play(url, limit=300_000)
        yield player.done
        self.assertEqual(player.status, 200)
        self.assertEqual(player.end_reason, "limit")
        self.assertEqual(self.json_calls(), 1)


class TokenLogTests(LoopbackTestCase):
    proxy_config = dict(SimulatorProxyTestCase.proxy_config, token="s3cret-player", admin_token="s3cret-admin")

    @inlineCallbacks
    def test_tokens_never_reach_the_log(self) -> Any:
        """Neither token appears in any log line while players and operators use them (access log included)."""
        lines: List[str] = []

        def observe(event: Dict[str, Any]) -> None:
            lines.append(str(formatEvent(event)))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        player = self.play(self.stream_url(token="s3cret-player"), limit=300_000)
        yield player.done
        self.assertEqual(player.end_reason, "limit")
        for path in ("/status?token=s3cret-admin", "/status?token=s3cret-player", "/metrics?admin_token=x&token=s3cret-admin",
                     "/ace/status?token=s3cret-player", "/nowhere?token=s3cret-player"):
            yield fetch(self.reactor, f"{self.proxy.url}{path}")
        status, _, body = yield fetch(self.reactor, f"{self.proxy.url}/status?token=s3cret-admin")
        self.assertEqual(status, 200)
        self.assertFalse(json.loads(body)["redacted"])
        self.assertTrue(any("/status?token=REDACTED" in line for line in lines), lines)
        self.assertEqual([line for line in lines if "s3cret" in line], [])
