"""The playback reader's deadlines and outcomes, on task.Clock with a hand-driven agent."""

from typing import Any, List

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import ResponseDone

from acetwist.upstream import PlaybackEnd, PlaybackReader, rebase, stream_key


class FakeTransport:
    def __init__(self) -> None:
        self.stopped = False

    def stopProducing(self) -> None:
        self.stopped = True


class FakeResponse:
    def __init__(self, code: int = 200) -> None:
        self.code = code
        self.protocol: Any = None
        self.transport = FakeTransport()

    def deliverBody(self, protocol: Any) -> None:
        self.protocol = protocol
        protocol.makeConnection(self.transport)


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
        """An engine that never answers the playback GET ends the read with a 504 at the first-byte deadline."""
        self.clock.advance(9.9)
        self.assertEqual(self.ends, [])
        self.clock.advance(0.2)
        [end] = self.ends
        self.assertEqual(end.error.status, 504)
        self.assertEqual(end.bytes_read, 0)

    def test_headers_without_body_still_hit_the_first_byte_deadline(self) -> None:
        """Headers followed by silence end at the first-byte deadline too, and the connection is aborted."""
        response = self.respond()
        self.clock.advance(10.1)
        self.assertEqual(self.ends[0].error.status, 504)
        self.assertTrue(response.transport.stopped)

    def test_data_switches_to_the_idle_watchdog(self) -> None:
        """Once data flows, only a silence of idle_timeout ends the read; steady data never does."""
        response = self.respond()
        for _ in range(20):
            response.protocol.dataReceived(b"x" * 188)
            self.clock.advance(1.0)
        self.assertEqual(self.ends, [])
        self.clock.advance(3.0)
        [end] = self.ends
        self.assertEqual(end.bytes_read, 20 * 188)
        self.assertIn("no data", end.reason)

    def test_http_error_is_a_502_and_never_data(self) -> None:
        """A 403 on the playback URL ends the read with a 502; its body is not delivered."""
        self.respond(403)
        [end] = self.ends
        self.assertEqual(end.error.status, 502)
        self.assertEqual(self.data, [])

    def test_refused_connection_is_a_503(self) -> None:
        """A refused connection means the engine is down: 503."""
        self.agent.requests[0].errback(Failure(ConnectionRefusedError()))
        self.assertEqual(self.ends[0].error.status, 503)
        self.assertEqual(self.ends[0].error.retry_after, 5)

    def test_clean_end_after_data_carries_no_error(self) -> None:
        """A stream that ends after data reports its bytes and no error (the channel recovers)."""
        response = self.respond()
        response.protocol.dataReceived(b"x" * 1000)
        response.protocol.connectionLost(Failure(ResponseDone()))
        [end] = self.ends
        self.assertIsNone(end.error)
        self.assertEqual(end.bytes_read, 1000)

    def test_empty_body_is_warming_up(self) -> None:
        """A 200 with an empty body ends with the 'before any data' error the channel retries on."""
        response = self.respond()
        response.protocol.connectionLost(Failure(ResponseDone()))
        self.assertIn("before any data", self.ends[0].error.message)

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


class HelperTests(SynchronousTestCase):
    def test_rebase_puts_engine_urls_on_the_engine_address(self) -> None:
        """URLs built from another Host header are moved onto the engine's own scheme and address."""
        self.assertEqual(rebase("http://localhost:6878/ace/r/ab/cd?x=1", "http://engine:6879"),
                         "http://engine:6879/ace/r/ab/cd?x=1")

    def test_stream_key_sorts_extras(self) -> None:
        """Extra parameters in any order give the same key."""
        self.assertEqual(stream_key("id", "a", (("b", "1"), ("a", "2"))), stream_key("id", "a", (("a", "2"), ("b", "1"))))
