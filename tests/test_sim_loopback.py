"""The simulator over real loopback sockets: the whole flow with valid TS, raw-socket session rules, backpressure, down modes, clean stop."""

import json
from typing import Any, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectError, ConnectionDone, ConnectionLost
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, RedirectAgent, readBody
from twisted.web.http_headers import Headers

from acetwist.sim.contents import DEFAULT_CONTENTS
from acetwist.sim.testing import parse_response, start_simulator
from acetwist.ts import TSChecker

A, B = DEFAULT_CONTENTS[:2]
WAIT = 10.0


class RawClient(Protocol):
    """Sends one raw request; collects the raw reply and how the connection ended."""

    def __init__(self, request: bytes, pause: bool = False) -> None:
        self.request = request
        self.pause = pause
        self.data = bytearray()
        self.ended: Deferred[Failure] = Deferred()  # fires with the reason (as a value)
        self.reason: Optional[Failure] = None

    def connectionMade(self) -> None:
        self.transport.write(self.request)
        if self.pause:
            self.transport.pauseProducing()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        self.reason = reason
        self.ended.callback([reason])


def sleep(seconds: float) -> Deferred[None]:
    d: Deferred[None] = Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d


@inlineCallbacks
def wait_until(predicate: Any, timeout: float = WAIT) -> Any:
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError("condition not met in time")
        yield sleep(0.02)


class LoopbackTestCase(TestCase):
    timeout = 30
    config = dict(prebuffer=0.2, burst=0.5, bitrate=2_000_000, gop=1.0)

    @inlineCallbacks
    def setUp(self) -> Any:
        self.sim = yield start_simulator(reactor, **self.config)
        self.addCleanup(self.sim.stop)
        self.pool = HTTPConnectionPool(reactor)
        self.pool.cachedConnectionTimeout = 0.5
        self.addCleanup(self.pool.closeCachedConnections)
        self.agent = Agent(reactor, pool=self.pool)

    @property
    def port(self) -> int:
        return self.sim.port_number

    def counters(self) -> Any:
        return self.sim.engine.counters.snapshot()

    @inlineCallbacks
    def get_json(self, url: str) -> Any:
        response = yield self.agent.request(b"GET", url.encode()).addTimeout(WAIT, reactor)
        body = yield readBody(response).addTimeout(WAIT, reactor)
        return json.loads(body)

    @inlineCallbacks
    def start(self, content: Any = A) -> Any:
        document = yield self.get_json(f"{self.sim.url}/ace/getstream?id={content.content_id}&format=json")
        self.assertIsNone(document["error"])
        return document["response"]

    @inlineCallbacks
    def raw(self, request: bytes, pause: bool = False) -> Any:
        client = RawClient(request, pause)
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=5), client)
        self.addCleanup(lambda: None if client.ended.called else client.transport.abortConnection())
        return client

    def raw_get(self, path: str, pause: bool = False) -> Any:
        return self.raw(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n\r\n".encode(), pause)

    def content_path(self, content: Any = A) -> str:
        session = self.sim.engine.sessions[content.infohash]
        return f"/content/{content.infohash}/{session.content_key}"


class FlowTests(LoopbackTestCase):
    @inlineCallbacks
    def test_json_then_playback_gives_valid_ts_after_the_prebuffer(self) -> Any:
        """JSON call, then playback_url followed through its redirect: headers after the prebuffer, then valid TS."""
        started = reactor.seconds()
        reply = yield self.start()
        self.assertTrue(reply["playback_url"].startswith(self.sim.url + "/ace/r/"))
        response = yield RedirectAgent(self.agent).request(b"GET", reply["playback_url"].encode()).addTimeout(
            WAIT, reactor)
        self.assertGreaterEqual(reactor.seconds() - started, 0.2)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"video/mp2t"])
        checker = TSChecker()
        done: Deferred[None] = Deferred()

        class Reader(Protocol):
            def dataReceived(self, data: bytes) -> None:
                checker.feed(data)
                if checker.bytes_fed >= 800_000 and not done.called:
                    self.transport.stopProducing()
                    done.callback(None)

            def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
                if not done.called:
                    done.errback(reason)

        response.deliverBody(Reader())
        yield done.addTimeout(WAIT, reactor)
        self.assertTrue(checker.aligned_at_start)
        self.assertEqual(checker.cc_errors, 0)
        self.assertEqual(checker.resyncs, 0)
        self.assertTrue(checker.psi_before_first_video)
        self.assertTrue(checker.first_video_random_access)
        self.assertGreaterEqual(len(checker.random_access_points), 3)
        for interval in checker.random_access_intervals():
            self.assertAlmostEqual(interval, 1.0, places=6)
        counters = self.counters()
        self.assertEqual((counters["playback_gets"], counters["content_gets"]), (1, 1))
        self.assertGreaterEqual(counters["bytes_sent"], 800_000)

    @inlineCallbacks
    def test_redirect_mode_plays_directly(self) -> Any:
        """GET /ace/getstream?id=... (no format=json) followed through every redirect yields TS."""
        response = yield RedirectAgent(self.agent).request(
            b"GET", f"{self.sim.url}/ace/getstream?id={B.content_id}".encode()).addTimeout(WAIT, reactor)
        self.assertEqual(response.code, 200)
        response.deliverBody(Protocol())
        yield wait_until(lambda: self.counters()["bytes_sent"] > 100_000)
        response._transport.stopProducing()  # hang up
        self.assertEqual(self.counters()["redirect_calls"], {B.content_id: 1})

    @inlineCallbacks
    def test_control_api_over_http(self) -> Any:
        """The control API takes a JSON fault over HTTP, and answers 400 to a bad one."""
        body = json.dumps({"name": "failed_content", "content": A.name}).encode()
        from twisted.web.client import FileBodyProducer
        from io import BytesIO

        response = yield self.agent.request(b"POST", f"{self.sim.url}/_sim/faults".encode(),
                                            Headers({b"content-type": [b"application/json"]}),
                                            FileBodyProducer(BytesIO(body))).addTimeout(WAIT, reactor)
        self.assertEqual(response.code, 200)
        yield readBody(response)
        document = yield self.get_json(f"{self.sim.url}/ace/getstream?id={A.content_id}&format=json")
        self.assertEqual(document["error"], "failed to load content")
        response = yield self.agent.request(b"POST", f"{self.sim.url}/_sim/faults?name=nope".encode()).addTimeout(
            WAIT, reactor)
        self.assertEqual(response.code, 400)
        self.assertIn(b"unknown fault", (yield readBody(response)))


class RawSessionTests(LoopbackTestCase):
    @inlineCallbacks
    def test_second_reader_gets_double_status_line_first_continues(self) -> Any:
        """On real sockets a second reader gets two raw status lines and EOF while the first keeps receiving."""
        yield self.start()
        first = yield self.raw_get(self.content_path())
        yield wait_until(lambda: len(first.data) > 50_000)
        second = yield self.raw_get(self.content_path())
        yield second.ended.addTimeout(WAIT, reactor)
        self.assertEqual(bytes(second.data), b"HTTP/1.1 200 OK\r\nHTTP/1.1 200 OK\r\n")
        before = len(first.data)
        yield wait_until(lambda: len(first.data) > before + 50_000)
        self.assertFalse(first.ended.called)
        self.assertEqual(self.counters()["concurrent_reader_rejections"], 1)

    @inlineCallbacks
    def test_superseded_reader_is_reset(self) -> Any:
        """A new JSON call for the content cuts the old reader with a reset, not a clean end."""
        yield self.start()
        reader = yield self.raw_get(self.content_path())
        yield wait_until(lambda: len(reader.data) > 10_000)
        yield self.start()
        [reason] = yield reader.ended.addTimeout(WAIT, reactor)
        self.assertTrue(reason.check(ConnectionLost), reason)
        self.assertFalse(parse_response(bytes(reader.data)).complete)

    @inlineCallbacks
    def test_stopped_reader_ends_cleanly(self) -> Any:
        """stop ends the reader's chunked body properly and closes the connection."""
        reply = yield self.start()
        reader = yield self.raw_get(self.content_path())
        yield wait_until(lambda: len(reader.data) > 10_000)
        document = yield self.get_json(reply["command_url"] + "?method=stop")
        self.assertEqual(document, {"response": "ok", "error": None})
        [reason] = yield reader.ended.addTimeout(WAIT, reactor)
        self.assertTrue(reason.check(ConnectionDone), reason)
        self.assertTrue(parse_response(bytes(reader.data)).complete)


class BackpressureTests(LoopbackTestCase):
    config = dict(prebuffer=0, burst=8, bitrate=20_000_000, gop=1.0)

    @inlineCallbacks
    def test_a_reader_that_stops_reading_stops_the_sender(self) -> Any:
        """With a 20 MB burst and a reader that reads nothing, the bytes sent stop growing well short of the burst."""
        yield self.start()
        reader = yield self.raw_get(self.content_path(), pause=True)
        yield wait_until(lambda: self.counters()["bytes_sent"] > 0)
        yield sleep(0.5)
        first = self.counters()["bytes_sent"]
        yield sleep(0.5)
        self.assertEqual(self.counters()["bytes_sent"], first)
        self.assertLess(first, 20_000_000)
        reader.transport.resumeProducing()
        yield wait_until(lambda: self.counters()["bytes_sent"] > first + 1_000_000)


class DownTests(LoopbackTestCase):
    @inlineCallbacks
    def test_refuse_closes_the_port_until_cleared(self) -> Any:
        """down mode=refuse refuses new connections and cuts open ones; clearing it listens on the same port again."""
        yield self.start()
        reader = yield self.raw_get(self.content_path())
        yield wait_until(lambda: len(reader.data) > 10_000)
        self.sim.engine.set_fault("down", mode="refuse")
        [reason] = yield reader.ended.addTimeout(WAIT, reactor)
        self.assertTrue(reason.check(ConnectionLost), reason)
        yield wait_until(lambda: self.sim.port is None)
        yield self.assertFailure(self.raw_get("/webui/api/service?method=get_version"), ConnectError)
        self.sim.engine.clear_faults("down")
        document = yield self.get_json(f"{self.sim.url}/webui/api/service?method=get_version")
        self.assertIsNone(document["error"])

    @inlineCallbacks
    def test_refuse_for_a_while(self) -> Any:
        """down mode=refuse with ms comes back by itself."""
        self.sim.engine.set_fault("down", mode="refuse", ms=300)
        yield wait_until(lambda: self.sim.port is None)
        yield wait_until(lambda: self.sim.port is not None)
        document = yield self.get_json(f"{self.sim.url}/webui/api/service?method=get_version")
        self.assertIsNone(document["error"])

    @inlineCallbacks
    def test_reset_mode_resets_requests(self) -> Any:
        """down mode=reset accepts the connection and resets it when the request arrives."""
        self.sim.engine.set_fault("down", mode="reset")
        client = yield self.raw_get("/webui/api/service?method=get_version")
        [reason] = yield client.ended.addTimeout(WAIT, reactor)
        self.assertTrue(reason.check(ConnectionLost), reason)
        self.assertEqual(bytes(client.data), b"")


class StopTests(LoopbackTestCase):
    @inlineCallbacks
    def test_stop_cuts_streams_and_held_requests(self) -> Any:
        """stop() closes a streaming reader, a stalled request and an idle keep-alive connection, leaving nothing behind."""
        reply = yield self.start()
        reader = yield self.raw_get(self.content_path())
        self.sim.engine.set_fault("stall", content=B)
        held = yield self.raw_get(f"/ace/getstream?id={B.content_id}&format=json")
        idle = yield self.raw_get("/webui/api/service?method=get_version")
        yield wait_until(lambda: len(reader.data) > 10_000 and len(idle.data) > 0)
        yield self.sim.stop()
        for client in (reader, held, idle):
            yield client.ended.addTimeout(WAIT, reactor)
        self.assertEqual(self.sim.engine.sessions, {})
        yield self.assertFailure(self.raw_get("/"), ConnectError)
        self.assertTrue(reply)
