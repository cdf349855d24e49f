"""The HTTP server side on task.Clock and in-memory transports: head deadline, bodies, connection caps, access log, backlog."""

import io
import json
from typing import Any, List, Optional

from twisted.internet.address import IPv4Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from acetwist.config import resolve, with_backlog
from acetwist.http import LINGER_BYTES, LINGER_SECONDS, ConnectionStats, Limits, ProxyHTTPChannel, ProxySite
from acetwist.tap import Options, makeService


class Recorder(Resource):
    """Answers C{ok}, except C{/stream}, which stays open (a player's stream) until the test finishes it."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.rendered: List[bytes] = []
        self.open: List[Request] = []

    def render(self, request: Request) -> Any:
        self.rendered.append(request.uri)
        if request.path == b"/stream":
            request.write(b"\x47" * 188)
            self.open.append(request)
            return NOT_DONE_YET
        return b"ok"


class HalfClosingTransport(StringTransport):
    """A StringTransport that records a half-close (TCP's loseWriteConnection)."""

    write_closed = False
    aborted = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def abortConnection(self) -> None:
        self.aborted = True
        super().abortConnection()


def peer(host: str = "10.0.0.1", port: int = 5000) -> IPv4Address:
    return IPv4Address("TCP", host, port)


class SiteTestCase(SynchronousTestCase):
    limits = Limits(header_timeout=10.0, max_connections=3, max_connections_per_ip=2)

    def setUp(self) -> None:
        self.clock = Clock()
        self.resource = Recorder()
        self.stats = ConnectionStats()
        self.site = ProxySite(self.resource, self.limits, self.stats, self.clock)  # type: ignore[arg-type]

    def connect(self, address: Any = None) -> "tuple[Optional[ProxyHTTPChannel], HalfClosingTransport]":
        """A connection from C{address}: its HTTP channel, or None when it was refused (and aborted at once)."""
        address = address or peer()
        protocol = self.site.buildProtocol(address)
        transport = HalfClosingTransport(peerAddress=address)
        protocol.makeConnection(transport)
        if not isinstance(protocol, ProxyHTTPChannel):
            self.assertTrue(transport.aborted)
            self.assertEqual(transport.value(), b"")
            return None, transport
        return protocol, transport

    def lose(self, channel: ProxyHTTPChannel) -> None:
        channel.connectionLost(Failure(ConnectionError("gone")))


class HeadDeadlineTests(SiteTestCase):
    def test_slow_loris_is_cut_at_the_head_deadline(self) -> None:
        """A client sending one byte every 3 s is answered 408 and closed 10 s after connecting, though each byte arrived in time."""
        channel, transport = self.connect()
        assert channel is not None
        for byte in b"GET /healthz HTTP/1.1\r\n":
            channel.dataReceived(bytes([byte]))
            self.clock.advance(3)
            if transport.write_closed:
                break
        self.assertTrue(transport.write_closed)
        self.assertEqual(self.clock.seconds(), 12)  # the 4th byte's wait crossed the 10 s deadline
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 408 "))
        self.assertEqual(self.stats.header_timeouts, 1)
        self.assertEqual(self.resource.rendered, [])

    def test_silent_connection_is_cut_at_the_head_deadline(self) -> None:
        """A connection that sends nothing is closed at the head deadline, long before Twisted's 60 s idle timeout."""
        channel, transport = self.connect()
        self.clock.advance(9.9)
        self.assertFalse(transport.write_closed)
        self.clock.advance(0.2)
        self.assertTrue(transport.write_closed)

    def test_streaming_response_is_never_cut(self) -> None:
        """Once the head arrived, a response that stays open for an hour is not cut by the deadline."""
        channel, transport = self.connect()
        assert channel is not None
        channel.dataReceived(b"GET /stream HTTP/1.1\r\nHost: proxy\r\n\r\n")
        self.assertEqual(self.resource.rendered, [b"/stream"])
        for _ in range(360):
            self.clock.advance(10)
            self.resource.open[0].write(b"\x47" * 188)
        self.assertFalse(transport.write_closed)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(self.stats.header_timeouts, 0)

    def test_kept_alive_connection_gets_a_new_deadline_from_the_next_requests_first_byte(self) -> None:
        """After a response, an idle kept-alive connection waits (Twisted's idle timeout); the next head has 10 s from its first byte."""
        channel, transport = self.connect()
        assert channel is not None
        channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: proxy\r\n\r\n")
        self.assertEqual(self.resource.rendered, [b"/a"])
        self.clock.advance(30)
        self.assertFalse(transport.write_closed)
        channel.dataReceived(b"GE")
        self.clock.advance(9.9)
        self.assertFalse(transport.write_closed)
        self.clock.advance(0.2)
        self.assertTrue(transport.write_closed)
        self.assertIn(b"HTTP/1.1 408 ", transport.value())

    def test_pipelined_requests_are_served(self) -> None:
        """Two requests sent at once are both answered (the deadline does not disturb pipelining)."""
        channel, transport = self.connect()
        assert channel is not None
        channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: p\r\n\r\nGET /b HTTP/1.1\r\nHost: p\r\n\r\n")
        self.assertEqual(self.resource.rendered, [b"/a", b"/b"])
        self.clock.advance(11)
        self.assertFalse(transport.write_closed)


class BodyTests(SiteTestCase):
    def assertRefused(self, transport: HalfClosingTransport) -> None:
        head, _, body = transport.value().partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 413 "), head)
        self.assertIn(b"Connection: close", head)
        self.assertEqual(json.loads(body)["status"], 413)
        self.assertTrue(transport.write_closed)
        self.assertEqual(self.resource.rendered, [])

    def test_announced_body_is_refused_from_the_headers(self) -> None:
        """A 10 MB Content-Length is answered 413 from the headers: nothing is rendered and the request gets no body buffer."""
        channel, transport = self.connect()
        assert channel is not None
        channel.dataReceived(b"POST /status HTTP/1.1\r\nHost: p\r\nContent-Length: 10000000\r\n\r\n" + b"x" * 5000)
        self.assertRefused(transport)
        self.assertIsNone(channel.requests[-1].content)
        self.assertEqual(self.stats.bodies_refused, 1)

    def test_chunked_body_is_refused(self) -> None:
        """A chunked request body is refused the same way."""
        channel, transport = self.connect()
        assert channel is not None
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: p\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        self.assertRefused(transport)

    def test_refused_connection_drops_what_follows_then_aborts(self) -> None:
        """After a refusal further bytes are dropped unparsed, and the connection is aborted after the linger time or byte budget."""
        channel, transport = self.connect()
        assert channel is not None
        channel.dataReceived(b"POST / HTTP/1.1\r\nHost: p\r\nContent-Length: 99\r\n\r\n")
        channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: p\r\n\r\n")
        self.assertEqual(self.resource.rendered, [])
        self.clock.advance(LINGER_SECONDS)
        self.assertTrue(transport.aborted)
        other, other_transport = self.connect(peer(port=5001))
        assert other is not None
        other.dataReceived(b"POST / HTTP/1.1\r\nHost: p\r\nContent-Length: 99999999\r\n\r\n")
        other.dataReceived(b"x" * (LINGER_BYTES + 1))
        self.assertTrue(other_transport.aborted)

    def test_empty_body_is_fine(self) -> None:
        """Content-Length: 0 is not a body: the request is served."""
        channel, transport = self.connect()
        assert channel is not None
        channel.dataReceived(b"GET /a HTTP/1.1\r\nHost: p\r\nContent-Length: 0\r\n\r\n")
        self.assertEqual(self.resource.rendered, [b"/a"])


class MalformedHeadTests(SiteTestCase):
    def answer(self, data: bytes) -> "tuple[bytes, Any]":
        channel, transport = self.connect()
        assert channel is not None
        channel.dataReceived(data)
        head, _, body = transport.value().partition(b"\r\n\r\n")
        self.assertTrue(transport.write_closed)
        self.assertEqual(self.resource.rendered, [])
        return head, json.loads(body)

    def test_malformed_request_line_is_a_json_400(self) -> None:
        """A request line Twisted cannot parse gets a JSON 400 and a lingering close."""
        head, body = self.answer(b"G@T / HTTP/1.1\r\nHost: p\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 400 "))
        self.assertEqual(body["status"], 400)

    def test_overlong_header_line_is_a_431(self) -> None:
        """A header line over Twisted's line limit gets a JSON 431 instead of a silent close."""
        head, body = self.answer(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 431 "))
        self.assertEqual(body["status"], 431)


class ConnectionCapTests(SiteTestCase):
    def test_per_address_cap(self) -> None:
        """A third connection from one address is refused at accept while another address is admitted; a close frees a slot."""
        first, _ = self.connect(peer(port=1))
        second, _ = self.connect(peer(port=2))
        third, _ = self.connect(peer(port=3))
        self.assertIsNone(third)
        self.assertEqual(self.stats.refused_per_ip, 1)
        other, _ = self.connect(peer("10.0.0.2"))
        self.assertIsNotNone(other)
        assert first is not None
        self.lose(first)
        again, _ = self.connect(peer(port=4))
        self.assertIsNotNone(again)
        self.assertEqual(self.site.per_host, {"10.0.0.1": 2, "10.0.0.2": 1})

    def test_total_cap(self) -> None:
        """Beyond max_connections every new connection is refused, whatever its address, until one closes."""
        channels = [self.connect(peer(f"10.0.1.{i}"))[0] for i in range(3)]
        self.assertIsNone(self.connect(peer("10.0.2.1"))[0])
        self.assertIsNone(self.connect(UNIXAddress(None))[0])
        self.assertEqual(self.stats.refused_max_connections, 2)
        assert channels[0] is not None
        self.lose(channels[0])
        self.assertIsNotNone(self.connect(peer("10.0.2.1"))[0])
        self.assertEqual((self.stats.open, self.stats.peak, self.stats.accepted), (3, 3, 4))

    def test_a_channel_is_released_once(self) -> None:
        """connectionLost twice does not free two slots."""
        channel, _ = self.connect()
        assert channel is not None
        self.lose(channel)
        self.lose(channel)
        self.assertEqual(self.stats.open, 0)
        self.assertEqual(self.site.per_host, {})

    def test_zero_means_no_limit(self) -> None:
        """With both caps at 0, many connections from one address are admitted."""
        self.site.limits = Limits(header_timeout=10.0, max_connections=0, max_connections_per_ip=0)
        self.assertTrue(all(self.connect(peer(port=i))[0] is not None for i in range(100)))


class AccessLogTests(SiteTestCase):
    def test_access_log_has_no_token(self) -> None:
        """A served request's access-log line has its token redacted."""
        self.site.startFactory()
        self.addCleanup(self.site.stopFactory)
        log = io.StringIO()
        self.site.logFile = log
        channel, _ = self.connect()
        assert channel is not None
        channel.dataReceived(b"GET /a?id=1&token=s3cret HTTP/1.1\r\nHost: p\r\nAuthorization: Bearer s3cret\r\n\r\n")
        self.assertIn('"GET /a?id=1&token=REDACTED HTTP/1.1" 200', log.getvalue())
        self.assertNotIn("s3cret", log.getvalue())


class BacklogTests(SynchronousTestCase):
    def test_backlog_is_added_unless_given(self) -> None:
        """--backlog is appended to tcp, tcp6, unix and ssl endpoints without one; systemd and explicit backlogs are kept."""
        self.assertEqual(with_backlog("tcp:8080", 1024), "tcp:8080:backlog=1024")
        self.assertEqual(with_backlog("tcp6:8080:interface=\\:\\:", 9), "tcp6:8080:interface=\\:\\::backlog=9")
        self.assertEqual(with_backlog("unix:/run/a.sock", 9), "unix:/run/a.sock:backlog=9")
        self.assertEqual(with_backlog("tcp:8080:backlog=7", 1024), "tcp:8080:backlog=7")
        self.assertEqual(with_backlog("systemd:domain=INET:index=0", 1024), "systemd:domain=INET:index=0")

    def test_twistd_service_listens_with_the_backlog(self) -> None:
        """makeService listens with --backlog (default 1024) and the proxy's limited site."""
        options = Options(environ={})
        options.parseOptions(["--listen", "tcp:0:interface=127.0.0.1", "--backlog", "777"])
        root = makeService(options, reactor=Clock())  # type: ignore[arg-type]
        [listener] = [s for s in root if hasattr(s, "endpoint")]
        self.assertEqual(listener.endpoint._backlog, 777)  # type: ignore[attr-defined]
        self.assertIsInstance(listener.factory, ProxySite)  # type: ignore[attr-defined]
        self.assertEqual(resolve({}, {}).backlog, 1024)
