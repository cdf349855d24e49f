"""
The engine client's errors and their kinds: the playback reader's deadlines and outcomes on task.Clock with a
hand-driven agent, and real connection failures on loopback.
"""

from typing import Any, List

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool, RequestTransmissionFailed, ResponseDone, \
    ResponseFailed, ResponseNeverReceived
from twisted.web.http_headers import Headers

from acetwist.errors import EngineError, ErrorKind
from acetwist.testing import free_port
from acetwist.upstream import EngineClient, PlaybackEnd, PlaybackReader, Selector, is_connection_failure, \
    playback_error, rebase, stream_key


class FakeTransport:
    def __init__(self) -> None:
        self.stopped = False
        self.protocol: Any = None

    def stopProducing(self) -> None:
        if not self.stopped:
            self.stopped = True
            if self.protocol is not None:
                self.protocol.connectionLost(Failure(ResponseFailed([Failure(Exception("aborted"))])))


class FakeResponse:
    def __init__(self, code: int = 200) -> None:
        self.code = code
        self.protocol: Any = None
        self.transport = FakeTransport()

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        self.transport.protocol = protocol
        protocol.makeConnection(self.transport)

    def body(self, data: bytes = b"") -> None:
        """The whole body: C{data}, then a clean end."""
        if data:
            self.protocol.dataReceived(data)
        self.transport.protocol = None
        self.protocol.connectionLost(Failure(ResponseDone()))


class FakeAgent:
    def __init__(self) -> None:
        self.requests: List[Deferred[Any]] = []
        self.headers: List[Any] = []

    def request(self, method: bytes, url: bytes, headers: Any = None) -> Deferred[Any]:
        d: Deferred[Any] = Deferred(lambda d: d.errback(Failure(Exception("cancelled"))))
        self.requests.append(d)
        self.headers.append(headers)
        return d


class ReaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.agent = FakeAgent()
        self.data: List[bytes] = []
        self.ends: List[PlaybackEnd] = []
        self.reader = PlaybackReader(self.agent, self.clock, "http://e/ace/r/x/y", on_data=self.data.append,
                                     on_end=self.ends.append, first_byte_timeout=10, idle_timeout=3)
        self.reader.start()

    def respond(self, code: int = 200) -> FakeResponse:
        response = FakeResponse(code)
        self.agent.requests[0].callback(response)
        return response

    def test_asks_for_identity_encoding(self) -> None:
        """The playback GET asks for an unencoded body."""
        self.assertEqual(self.agent.headers[0].getRawHeaders(b"accept-encoding"), [b"identity"])

    def test_no_headers_before_deadline_is_a_504(self) -> None:
        """An engine that never answers the playback GET ends the read with a 504 TIMEOUT at the first-byte deadline."""
        self.clock.advance(9.9)
        self.assertEqual(self.ends, [])
        self.clock.advance(0.2)
        [end] = self.ends
        self.assertEqual(end.error.status, 504)
        self.assertIs(end.kind, ErrorKind.TIMEOUT)
        self.assertEqual(end.bytes_read, 0)

    def test_headers_without_body_still_hit_the_first_byte_deadline(self) -> None:
        """Headers followed by silence end at the first-byte deadline too (TIMEOUT), and the connection is aborted."""
        response = self.respond()
        self.clock.advance(10.1)
        self.assertEqual(self.ends[0].error.status, 504)
        self.assertIs(self.ends[0].kind, ErrorKind.TIMEOUT)
        self.assertTrue(response.transport.stopped)

    def test_data_switches_to_the_idle_watchdog(self) -> None:
        """Once data flows, only a silence of idle_timeout ends the read (IDLE); steady data never does."""
        response = self.respond()
        for _ in range(20):
            response.protocol.dataReceived(b"x" * 188)
            self.clock.advance(1.0)
        self.assertEqual(self.ends, [])
        self.clock.advance(3.0)
        [end] = self.ends
        self.assertEqual(end.bytes_read, 20 * 188)
        self.assertIn("no data", end.reason)
        self.assertIs(end.kind, ErrorKind.IDLE)
        self.assertEqual(end.error.status, 504)
        self.assertTrue(response.transport.stopped)

    def test_http_error_is_a_502_and_never_data(self) -> None:
        """A 403 on the playback URL ends the read with a 502 GONE once its body is read; the body is not delivered."""
        response = self.respond(403)
        self.assertEqual(self.ends, [])
        response.body(b"unknown playback session id")
        [end] = self.ends
        self.assertEqual(end.error.status, 502)
        self.assertIs(end.kind, ErrorKind.GONE)
        self.assertTrue(end.error.definitive)
        self.assertIn("unknown playback session id", end.error.message)
        self.assertEqual(self.data, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_error_body_that_never_ends_is_judged_by_its_status_at_the_deadline(self) -> None:
        """An error reply whose body stalls ends at the first-byte deadline with the kind its status gives."""
        response = self.respond(404)
        self.clock.advance(10.1)
        [end] = self.ends
        self.assertIs(end.kind, ErrorKind.GONE)
        self.assertTrue(response.transport.stopped)

    def test_long_error_body_is_cut_short(self) -> None:
        """Only the start of a long error body is read; then the connection is dropped and the read ends once."""
        response = self.respond(500)
        response.protocol.dataReceived(b"e" * 100_000)
        [end] = self.ends
        self.assertIs(end.kind, ErrorKind.REFUSED)
        self.assertLess(len(end.error.message), 300)
        self.assertTrue(response.transport.stopped)

    def test_refused_connection_is_a_503(self) -> None:
        """A refused connection means the engine is down: 503 UNREACHABLE."""
        self.agent.requests[0].errback(Failure(ConnectionRefusedError()))
        self.assertEqual(self.ends[0].error.status, 503)
        self.assertEqual(self.ends[0].error.retry_after, 5)
        self.assertIs(self.ends[0].kind, ErrorKind.UNREACHABLE)

    def test_clean_end_after_data_carries_no_error(self) -> None:
        """A stream that ends after data reports its bytes and no error (the channel recovers)."""
        response = self.respond()
        response.body(b"x" * 1000)
        [end] = self.ends
        self.assertIsNone(end.error)
        self.assertIsNone(end.kind)
        self.assertEqual(end.bytes_read, 1000)

    def test_empty_body_is_warming_up(self) -> None:
        """A 200 with an empty body ends with EMPTY and the 'before any data' text the old channel retries on."""
        response = self.respond()
        response.body()
        self.assertIn("before any data", self.ends[0].error.message)
        self.assertEqual(self.ends[0].error.status, 502)
        self.assertIs(self.ends[0].kind, ErrorKind.EMPTY)
        self.assertFalse(self.ends[0].error.definitive)

    def test_stop_silences_every_callback(self) -> None:
        """After stop(), no end callback follows and no timer is left."""
        response = self.respond()
        response.protocol.dataReceived(b"x")
        self.reader.stop()
        self.assertTrue(response.transport.stopped)
        response.protocol.connectionLost(Failure(ResponseDone()))
        self.clock.advance(100)
        self.assertEqual(self.ends, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_while_waiting_for_headers_cancels_the_request(self) -> None:
        """Stopping before the engine answered cancels the GET; its failure is not reported."""
        self.reader.stop()
        self.assertTrue(self.agent.requests[0].called)
        self.clock.advance(100)
        self.assertEqual(self.ends, [])


class PlaybackErrorTests(SynchronousTestCase):
    def assertKind(self, code: int, kind: ErrorKind, status: int, body: bytes = b"") -> EngineError:
        error = playback_error(code, body)
        self.assertEqual((error.kind, error.status), (kind, status), f"HTTP {code} {body!r}")
        return error

    def test_client_errors_mean_the_session_is_gone(self) -> None:
        """A 4xx on the playback URL (404 after a restart, 403 when superseded, 410) is GONE, a 502."""
        for code in (400, 403, 404, 410):
            self.assertKind(code, ErrorKind.GONE, 502)

    def test_retryable_answers_are_not_definitive(self) -> None:
        """503 and 429 are UNREACHABLE (503, Retry-After), 408 is a TIMEOUT (504): worth another try."""
        self.assertEqual(self.assertKind(503, ErrorKind.UNREACHABLE, 503).retry_after, 5)
        self.assertEqual(self.assertKind(429, ErrorKind.UNREACHABLE, 503).retry_after, 5)
        self.assertKind(408, ErrorKind.TIMEOUT, 504)
        for code in (503, 429, 408):
            self.assertFalse(playback_error(code).definitive)

    def test_server_error_naming_an_unknown_session_is_gone(self) -> None:
        """A 500 saying 'unknown playback session id' (a stopped or expired session) is GONE; another 500 REFUSED."""
        self.assertKind(500, ErrorKind.GONE, 502, b"unknown playback session id")
        self.assertKind(500, ErrorKind.REFUSED, 502, b"internal error")
        self.assertKind(502, ErrorKind.REFUSED, 502)

    def test_other_answers_are_refused(self) -> None:
        """A success other than 200 (204, 206) or a redirect left over is REFUSED."""
        for code in (204, 206, 304):
            self.assertKind(code, ErrorKind.REFUSED, 502)


class EngineErrorTests(SynchronousTestCase):
    def test_kind_defaults_from_status(self) -> None:
        """Without a kind, 503 is UNREACHABLE, 504 TIMEOUT and anything else REFUSED."""
        self.assertIs(EngineError(503, "x").kind, ErrorKind.UNREACHABLE)
        self.assertIs(EngineError(504, "x").kind, ErrorKind.TIMEOUT)
        self.assertIs(EngineError(502, "x").kind, ErrorKind.REFUSED)
        self.assertIs(EngineError(503, "x", kind=ErrorKind.LIMIT).kind, ErrorKind.LIMIT)

    def test_only_gone_is_definitive(self) -> None:
        """Only an engine that forgot the session makes re-reading the same URL pointless."""
        definitive = {kind for kind in ErrorKind if EngineError(kind.status, "x", kind=kind).definitive}
        self.assertEqual(definitive, {ErrorKind.GONE})

    def test_every_kind_has_a_player_status(self) -> None:
        """Each kind maps to the status its comment documents: 502, 503 or 504."""
        self.assertEqual({kind.name: kind.status for kind in ErrorKind},
                         {"REFUSED": 502, "UNREACHABLE": 503, "TIMEOUT": 504, "IDLE": 504, "EMPTY": 502,
                          "GONE": 502, "LIMIT": 503, "STOPPED": 503, "CLUSTER": 503, "LOST": 502, "INTERNAL": 502})

    def test_repr_shows_the_kind(self) -> None:
        """The repr names the status, the message and the kind."""
        self.assertEqual(repr(EngineError(502, "gone", kind=ErrorKind.GONE)), "EngineError(502, 'gone', kind=GONE)")
        self.assertEqual(str(EngineError(502, "gone")), "gone")


class HelperTests(SynchronousTestCase):
    def test_rebase_puts_engine_urls_on_the_engine_address(self) -> None:
        """URLs built from another Host header are moved onto the engine's own scheme and address."""
        self.assertEqual(rebase("http://localhost:6878/ace/r/ab/cd?x=1", "http://engine:6879"),
                         "http://engine:6879/ace/r/ab/cd?x=1")

    def test_stream_key_is_the_content_alone(self) -> None:
        """Passed-through parameters are not part of the stream key: one content, one channel."""
        self.assertEqual(Selector("id", "a", (("b", "1"), ("a", "2"))).key, stream_key("id", "a"))
        self.assertEqual(Selector("id", "a", (("b", "1"), ("a", "2"))).parameters, "a=2&b=1")


# ---------------------------------------------------------------- real failures on loopback


class _Server(Protocol):
    """A loopback peer that misbehaves as told: C{how} is close, reset, silent, garbage or an HTTP reply."""

    def __init__(self, how: str, reply: bytes = b"") -> None:
        self.how = how
        self.reply = reply

    def connectionMade(self) -> None:
        if self.how == "close":
            self.transport.loseConnection()

    def dataReceived(self, data: bytes) -> None:
        if self.how == "reset":
            self.transport.abortConnection()
        elif self.how in ("garbage", "reply") and b"\r\n\r\n" in data:
            self.transport.write(self.reply)
            self.transport.loseConnection()


class _Pending:
    """A body producer that never finishes (a request still being sent)."""

    length = 1_000_000

    def startProducing(self, consumer: Any) -> Deferred[None]:
        consumer.write(b"x" * 1000)
        return Deferred()

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class ConnectionFailureTests(TestCase):
    """Real failures from Twisted's HTTP client, classified by class (is_connection_failure) and by kind."""

    timeout = 20

    def serve(self, how: str, reply: bytes = b"") -> str:
        factory = Factory.forProtocol(lambda: _Server(how, reply))
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    def client(self, base_url: str, **kw: Any) -> EngineClient:
        client = EngineClient(reactor, base_url, **kw)
        self.addCleanup(client.close)
        return client

    @inlineCallbacks
    def request_failure(self, base_url: str, body: Any = None, method: bytes = b"GET") -> Any:
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        try:
            yield Agent(reactor, pool=pool, connectTimeout=5).request(method, f"{base_url}/x".encode(), Headers(), body)
        except Exception:
            return [Failure()]  # a Failure returned bare would fail this Deferred
        self.fail("the request did not fail")

    @inlineCallbacks
    def open_error(self, client: EngineClient) -> Any:
        try:
            yield client.open_session(Selector("id", "ab" * 20))
        except EngineError as e:
            return e
        self.fail("open_session did not fail")

    @inlineCallbacks
    def read_end(self, client: EngineClient, url: str) -> Any:
        ended: Deferred[PlaybackEnd] = Deferred()
        client.read(url, on_data=lambda data: None, on_end=ended.callback, first_byte_timeout=5, idle_timeout=5)
        end = yield ended
        return end

    @inlineCallbacks
    def test_closed_port_is_unreachable(self) -> Any:
        """A closed loopback port refuses the connection: a connection failure, UNREACHABLE 503 for both calls."""
        url = f"http://127.0.0.1:{free_port()}"
        [failure] = yield self.request_failure(url)
        self.assertTrue(failure.check(ConnectionRefusedError))
        self.assertTrue(is_connection_failure(failure))
        client = self.client(url)
        error = yield self.open_error(client)
        self.assertEqual((error.kind, error.status, error.retry_after), (ErrorKind.UNREACHABLE, 503, 5))
        self.assertTrue(error.engine_down)  # no connection at all: the engine is down
        end = yield self.read_end(client, f"{url}/ace/r/ab/cd")
        self.assertIs(end.kind, ErrorKind.UNREACHABLE)
        assert end.error is not None
        self.assertTrue(end.error.engine_down)

    @inlineCallbacks
    def test_server_closing_without_an_answer_is_unreachable(self) -> Any:
        """A peer that closes before answering gives ResponseNeverReceived: a connection failure, UNREACHABLE."""
        url = self.serve("close")
        [failure] = yield self.request_failure(url)
        self.assertTrue(failure.check(ResponseNeverReceived))
        self.assertTrue(is_connection_failure(failure))
        error = yield self.open_error(self.client(url))
        self.assertIs(error.kind, ErrorKind.UNREACHABLE)
        self.assertFalse(error.engine_down)  # it accepted the connection: alive, if unhelpful
        end = yield self.read_end(self.client(url), f"{url}/ace/r/ab/cd")
        self.assertIs(end.kind, ErrorKind.UNREACHABLE)
        self.assertEqual(end.bytes_read, 0)

    @inlineCallbacks
    def test_server_resetting_the_request_is_unreachable(self) -> Any:
        """A peer that resets the connection on the request is a connection failure, UNREACHABLE."""
        url = self.serve("reset")
        [failure] = yield self.request_failure(url)
        self.assertTrue(failure.check(ResponseNeverReceived))
        self.assertTrue(is_connection_failure(failure))
        error = yield self.open_error(self.client(url))
        self.assertIs(error.kind, ErrorKind.UNREACHABLE)

    @inlineCallbacks
    def test_loss_while_sending_the_request_is_a_connection_failure(self) -> Any:
        """A connection lost while the request is still being sent gives RequestTransmissionFailed: a connection failure."""
        url = self.serve("reset")
        [failure] = yield self.request_failure(url, body=_Pending(), method=b"POST")
        self.assertTrue(failure.check(RequestTransmissionFailed))
        self.assertTrue(is_connection_failure(failure))

    @inlineCallbacks
    def test_a_reply_that_is_not_http_is_refused_not_unreachable(self) -> Any:
        """A peer that answers garbage did answer: ResponseFailed is not a connection failure, the call is REFUSED."""
        url = self.serve("garbage", b"HELLO THERE\r\n\r\n")
        [failure] = yield self.request_failure(url)
        self.assertTrue(failure.check(ResponseFailed))
        self.assertFalse(failure.check(ResponseNeverReceived))
        self.assertFalse(is_connection_failure(failure))
        error = yield self.open_error(self.client(url))
        self.assertEqual((error.kind, error.status), (ErrorKind.REFUSED, 502))

    @inlineCallbacks
    def test_silent_engine_is_a_json_timeout(self) -> Any:
        """A getstream call that gets no answer within the deadline fails with TIMEOUT 504, not UNREACHABLE."""
        url = self.serve("silent")
        error = yield self.open_error(self.client(url, json_timeout=0.3))
        self.assertEqual((error.kind, error.status), (ErrorKind.TIMEOUT, 504))
        self.assertIn("within 0.3 s", error.message)

    @inlineCallbacks
    def test_json_503_is_unreachable(self) -> Any:
        """An engine answering 503 to getstream is UNREACHABLE with Retry-After."""
        url = self.serve("reply", b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
        error = yield self.open_error(self.client(url))
        self.assertEqual((error.kind, error.status, error.retry_after), (ErrorKind.UNREACHABLE, 503, 5))

    @inlineCallbacks
    def test_playback_404_is_gone(self) -> Any:
        """A real 404 on the playback URL ends the read with GONE after reading the error body."""
        url = self.serve("reply", b"HTTP/1.1 404 Not Found\r\nContent-Length: 18\r\n\r\ndownload not found")
        end = yield self.read_end(self.client(url), f"{url}/ace/r/ab/cd")
        self.assertEqual((end.kind, end.error.status, end.bytes_read), (ErrorKind.GONE, 502, 0))
        self.assertIn("download not found", end.error.message)
