"""
The engine pool over real HTTP on loopback: the simulator as an engine, a
port nobody listens on as a dead one, and a small orchestrator look-alike
that lists the simulator and records the events it receives.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Dict, List

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from acetwist.config import Settings
from acetwist.coord.memory import MemoryCoordinator
from acetwist.engine_api import Selector
from acetwist.engines import make_pool
from acetwist.errors import EngineError
from acetwist.sim.contents import DEFAULT_CONTENTS
from acetwist.sim.testing import start_simulator
from acetwist.testing import free_port

CONTENT = DEFAULT_CONTENTS[0].content_id


class Orchestrator(Resource):
    """Lists engines at /api/v1/engines (or only at /engines when legacy), answers config, records events."""

    isLeaf = True

    def __init__(self, engines: List[Dict[str, Any]], legacy: bool = False) -> None:
        super().__init__()
        self.engines = engines
        self.legacy = legacy
        self.events: List[Any] = []
        self.keys: List[bytes] = []

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"application/json")
        if request.path == (b"/engines" if self.legacy else b"/api/v1/engines"):
            return json.dumps({"engines": self.engines, "total": len(self.engines)} if not self.legacy
                              else self.engines).encode()
        if request.path == b"/api/v1/proxy/config":
            return json.dumps({"max_streams_per_engine": 2}).encode()
        request.setResponseCode(404)
        return b'{"detail": "Not Found"}'

    def render_POST(self, request: Request) -> bytes:
        assert request.content is not None
        self.keys.append(request.getHeader(b"x-api-key") or b"")
        self.events.append((request.path.decode().rsplit("/", 1)[1], json.loads(request.content.read())))
        return json.dumps({"id": f"stream-{len(self.events)}"}).encode()


class LoopbackTests(TestCase):
    timeout = 30

    @inlineCallbacks
    def until(self, predicate: Callable[[], bool], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached")
            yield deferLater(reactor, 0.02, lambda: None)

    @inlineCallbacks
    def sim(self) -> Any:
        sim = yield start_simulator(reactor, prebuffer=0.1, burst=1.0)
        self.addCleanup(sim.stop)
        return sim

    def pool(self, settings: Settings) -> Any:
        pool = make_pool(settings, reactor, MemoryCoordinator("w1", reactor))
        pool.start()
        self.addCleanup(pool.stop)
        return pool

    @inlineCallbacks
    def test_static_engines_dead_one_never_chosen(self) -> Any:
        """With the simulator and a dead port as engines, the dead one turns unhealthy and every stream goes to the simulator."""
        sim = yield self.sim()
        dead = f"http://127.0.0.1:{free_port()}"
        pool = self.pool(Settings.defaults(engines=(dead, sim.url), engine_check_interval=0.2))
        chosen = []
        for n in range(3):
            reservation = yield pool.reserve(f"id:{CONTENT}{n}")
            chosen.append(reservation.engine_id)
        self.assertEqual(chosen, [sim.url] * 3)
        yield self.until(lambda: pool.status()[0]["probe"] == "unhealthy")
        self.assertFalse(pool.healthy(dead))

    @inlineCallbacks
    def test_a_session_through_the_reserved_client(self) -> Any:
        """The reservation's client opens a real session on the simulator; commit and release keep the counts right."""
        sim = yield self.sim()
        pool = self.pool(Settings.defaults(engine=sim.url, engine_max_streams=1))
        reservation = yield pool.reserve(f"id:{CONTENT}")
        session = yield reservation.engine.open_session(Selector("id", CONTENT))
        reservation.commit(session)
        self.assertEqual((pool.status()[0]["sessions"], pool.json_calls), (1, 1))
        yield self.assertFailure(pool.reserve("id:other"), EngineError)
        yield reservation.engine.stop(session)
        reservation.release("stopped")
        self.assertEqual(pool.status()[0]["load"], 0)
        self.assertEqual(sim.engine.counters.snapshot()["sessions_opened"], 1)

    @inlineCallbacks
    def test_orchestrator_list_and_events(self) -> Any:
        """From a loopback orchestrator: the list (legacy shape too), its capacity, and started/ended events with the key."""
        sim = yield self.sim()
        host, port = sim.url.rsplit("//", 1)[1].split(":")
        for legacy in (False, True):
            orchestrator = Orchestrator([{"container_id": "sim-1", "container_name": "acestream-1", "host": host,
                                          "port": int(port), "forwarded": True, "health_status": "healthy",
                                          "draining": False, "stream_count": 0}], legacy=legacy)
            listening = reactor.listenTCP(0, Site(orchestrator), interface="127.0.0.1")
            self.addCleanup(listening.stopListening)
            url = f"http://127.0.0.1:{listening.getHost().port}"
            pool = self.pool(Settings.defaults(orchestrator=url, orchestrator_key="k", engines=()))
            reservation = yield pool.reserve(f"id:{CONTENT}")
            self.assertEqual((reservation.engine_id, pool.capacity), ("sim-1", 2))
            session = yield reservation.engine.open_session(Selector("id", CONTENT))
            reservation.commit(session)
            reservation.release("stopped")
            yield self.until(lambda: len(orchestrator.events) == 2)
            (started, body), (ended, end_body) = orchestrator.events
            self.assertEqual((started, ended), ("stream_started", "stream_ended"))
            self.assertEqual((body["container_id"], body["engine"], body["session"]["playback_session_id"]),
                             ("sim-1", {"host": host, "port": int(port)}, session.playback_session_id))
            self.assertEqual(end_body, {"content_id": CONTENT, "container_id": "sim-1", "reason": "stopped",
                                        "stream_id": "stream-1"})
            self.assertEqual(set(orchestrator.keys), {b"k"})
            yield reservation.engine.stop(session)
            yield pool.stop()

    @inlineCallbacks
    def test_stop_while_the_orchestrator_does_not_answer(self) -> Any:
        """Stopping while the list request hangs cancels it and starts no other request (the reactor stays clean)."""
        hanging: List[Request] = []

        class Hang(Resource):
            isLeaf = True

            def render_GET(self, request: Request) -> Any:
                hanging.append(request)
                return NOT_DONE_YET

        listening = reactor.listenTCP(0, Site(Hang()), interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        url = f"http://127.0.0.1:{listening.getHost().port}"
        pool = make_pool(Settings.defaults(orchestrator=url, engines=()), reactor, MemoryCoordinator("w", reactor))
        pool.start()
        reserving = pool.reserve("id:1")
        yield self.until(lambda: len(hanging) == 1)
        yield pool.stop()
        yield self.assertFailure(reserving, EngineError)
        self.assertEqual(len(hanging), 1)
        self.assertEqual(pool.source_status()["reads"], 0)
