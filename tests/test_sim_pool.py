"""Tests for several simulated engines in one process and the orchestrator look-alike beside them: options, twistd service, loopback, real twistd."""

import json
import os
import re
import sys
from io import BytesIO
from typing import Any, Dict, Optional

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectError
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from acetwist.config import ConfigError
from acetwist.sim import tap
from acetwist.sim.config import SimConfig, engine_endpoints, with_port
from acetwist.sim.contents import DEFAULT_CONTENTS
from acetwist.sim.listening import ListenSwitch
from acetwist.sim.pool import EnginePool
from acetwist.sim.testing import RunningSimulator, start_simulator
from tests.test_sim_loopback import WAIT, wait_until
from tests.test_sim_tap import REPO, _Process, parse

A, B = DEFAULT_CONTENTS[:2]


class OptionTests(SynchronousTestCase):
    def test_engine_endpoints_are_consecutive(self) -> None:
        """--engines N listens on N consecutive ports from --listen's, keeping the other endpoint arguments."""
        self.assertEqual(engine_endpoints("tcp:6878", 1), ["tcp:6878"])
        self.assertEqual(engine_endpoints("tcp:6878:interface=127.0.0.1", 3),
                         ["tcp:6878:interface=127.0.0.1", "tcp:6879:interface=127.0.0.1",
                          "tcp:6880:interface=127.0.0.1"])
        self.assertEqual(engine_endpoints("tcp:port=7000:interface=\\:\\:1", 2)[1], "tcp:port=7001:interface=\\:\\:1")
        self.assertEqual(engine_endpoints("tcp:0:interface=127.0.0.1", 2), ["tcp:0:interface=127.0.0.1"] * 2)
        self.assertEqual(with_port("tcp6:interface=\\:\\:1", 9), "tcp6:9:interface=\\:\\:1")

    def test_pool_options_from_flags_and_environment(self) -> None:
        """--engines, --orchestrator-listen, --orchestrator-key, --max-streams-per-engine and --engine-host parse, also from the environment."""
        config = parse(["--engines", "3", "--orchestrator-listen", ":8000", "--orchestrator-key", "k",
                        "--max-streams-per-engine", "0", "--engine-host", "sim"])["config"]
        self.assertEqual((config.engines, config.orchestrator_listen, config.orchestrator_key,
                          config.max_streams_per_engine, config.engine_host), (3, "tcp:8000", "k", 0, "sim"))
        config = parse([], {"ACETWIST_SIM_ENGINES": "2", "ACETWIST_SIM_ORCHESTRATOR_LISTEN": "tcp:8001"})["config"]
        self.assertEqual((config.engines, config.orchestrator_listen, config.orchestrator_key), (2, "tcp:8001", None))
        defaults = parse([])["config"]
        self.assertEqual((defaults.engines, defaults.orchestrator_listen, defaults.max_streams_per_engine),
                         (1, None, 2))

    def test_bad_pool_options(self) -> None:
        """Bad pool options are errors that name the option."""
        cases = [
            (["--engines", "0"], "--engines"),
            (["--engines", "65"], "--engines"),
            (["--engines", "two"], "--engines"),
            (["--engines", "2", "--listen", "unix:/tmp/x.sock"], "tcp"),
            (["--engines", "3", "--listen", "tcp:65534"], "65535"),
            (["--orchestrator-listen", "nowhere"], "--orchestrator-listen"),
            (["--orchestrator-listen", "tcp:8000", "--listen", "unix:/tmp/x.sock"], "host and port"),
            (["--orchestrator-key", "has space"], "--orchestrator-key"),
            (["--max-streams-per-engine", "-1"], "--max-streams-per-engine"),
            (["--engine-host", "a/b"], "--engine-host"),
        ]
        for args, text in cases:
            error = self.assertRaises(usage.UsageError, parse, args)
            self.assertIn(text, str(error), args)
        self.assertRaises(ConfigError, SimConfig.from_values, {"engines": 0})
        self.assertRaises(ConfigError, SimConfig.from_values, {"engines": True})


class ServiceTests(SynchronousTestCase):
    def test_make_service_listens_on_consecutive_ports_and_the_orchestrator_lists_them(self) -> None:
        """The twistd service listens for each engine on consecutive ports and the orchestrator on its own; records carry the ports."""
        memory = MemoryReactorClock()
        service = tap.makeService(parse(["--listen", "tcp:7777:interface=127.0.0.1", "--engines", "3",
                                         "--orchestrator-listen", "tcp:8000:interface=127.0.0.1"]), reactor=memory)
        service.privilegedStartService()
        service.startService()
        servers = [(port, factory) for port, factory, _, _ in memory.tcpServers]
        self.assertEqual([port for port, _ in servers], [7777, 7778, 7779, 8000])
        self.assertEqual([factory for _, factory in servers[:3]], [s.site for s in service.simulators])
        orchestrator = service.orchestrator
        self.assertEqual(orchestrator.url, "http://127.0.0.1:8000")
        self.assertEqual([(r["container_id"], r["host"], r["port"]) for r in orchestrator.listing()],
                         [("sim-engine-1", "127.0.0.1", 7777), ("sim-engine-2", "127.0.0.1", 7778),
                          ("sim-engine-3", "127.0.0.1", 7779)])
        self.successResultOf(service.stopService())

    def test_refuse_closes_only_that_engines_port(self) -> None:
        """down:mode=refuse on one engine stops only its listener; clearing it listens again on the same port."""
        memory = MemoryReactorClock()
        service = tap.makeService(parse(["--listen", "tcp:7777", "--engines", "2"]), reactor=memory)
        service.privilegedStartService()
        service.startService()
        second = service.simulators[1]
        second.engine.set_fault("down", mode="refuse")
        self.assertIsNone(service.listeners[1].service)
        self.assertIsNotNone(service.listeners[0].service)
        second.engine.clear_faults("down")
        self.assertIsNotNone(service.listeners[1].service)
        self.assertEqual([port for port, _, _, _ in memory.tcpServers], [7777, 7778, 7778])
        self.successResultOf(service.stopService())

    def test_engines_have_their_own_state(self) -> None:
        """Each engine of a pool has its own sessions, faults and counters, and the same contents."""
        pool = EnginePool(SimConfig.from_values({"engines": 2}), Clock())
        first, second = (s.engine for s in pool.simulators)
        first.set_fault("stall")
        first.start_session(A)
        self.assertEqual((len(first.sessions), len(second.sessions)), (1, 0))
        self.assertEqual(second.faults, [])
        self.assertEqual(second.counters.snapshot()["sessions_opened"], 0)
        self.assertEqual(list(first.catalog), list(second.catalog))
        self.assertEqual((first.name, second.name), ("sim-engine-1", "sim-engine-2"))
        self.successResultOf(pool.shutdown())

    def test_listen_switch_retries_a_busy_port(self) -> None:
        """When listening again fails, the switch retries on the clock until it succeeds."""
        clock, wanted, attempts = Clock(), [True], []

        def resume() -> None:
            attempts.append(clock.seconds())
            if len(attempts) < 3:
                raise OSError("busy")

        switch = ListenSwitch(clock, lambda: wanted[0], Logger())
        switch.set_listener(lambda: None, resume)
        wanted[0] = False
        switch.reconcile()
        self.assertFalse(switch.listening)
        wanted[0] = True
        switch.reconcile()
        clock.advance(0.5)
        clock.advance(0.5)
        self.assertEqual((len(attempts), switch.listening), (3, True))


class PoolLoopbackTests(TestCase):
    timeout = 30
    key = "k3y"

    @inlineCallbacks
    def setUp(self) -> Any:
        self.sim: RunningSimulator = yield start_simulator(reactor, engines=3, orchestrator=True,
                                                           orchestrator_key=self.key, max_streams_per_engine=1,
                                                           prebuffer=0.2, burst=0.5, bitrate=2_000_000)
        self.addCleanup(self.sim.stop)
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent(reactor, pool=pool)

    @inlineCallbacks
    def fetch(self, method: str, url: str, body: Any = None, headers: Optional[Dict[str, str]] = None) -> Any:
        producer = None if body is None else FileBodyProducer(BytesIO(json.dumps(body).encode()))
        head = Headers({k.encode(): [v.encode()] for k, v in (headers or {}).items()})
        response = yield self.agent.request(method.encode(), url.encode(), head, producer).addTimeout(WAIT, reactor)
        data = yield readBody(response).addTimeout(WAIT, reactor)
        return response.code, json.loads(data) if data else None

    def api(self, method: str, path: str, body: Any = None) -> Any:
        return self.fetch(method, self.sim.orchestrator.url + path, body, {"X-API-Key": self.key})

    @inlineCallbacks
    def start(self, url: str, content: Any = A) -> Any:
        status, document = yield self.fetch("GET", f"{url}/ace/getstream?id={content.content_id}&format=json")
        self.assertEqual(status, 200)
        return document

    @inlineCallbacks
    def test_engines_are_independent(self) -> Any:
        """Three engines on their own ports: a session, a fault or a stop on one leaves the others untouched."""
        first, second, third = self.sim.engines
        self.assertEqual(len({e.port_number for e in self.sim.engines}), 3)
        self.assertEqual((self.sim.url, self.sim.engine), (first.url, first.engine))
        document = yield self.start(second.url, B)  # every engine serves every content
        self.assertIsNone(document["error"])
        self.assertTrue(document["response"]["playback_url"].startswith(second.url))
        self.assertEqual([e.engine.counters.snapshot()["sessions_opened"] for e in self.sim.engines], [0, 1, 0])
        first.engine.set_fault("failed_content")
        self.assertEqual((yield self.start(first.url))["error"], "failed to load content")
        self.assertIsNone((yield self.start(third.url))["error"])
        second.down()
        yield wait_until(lambda: second.port is None)
        yield self.assertFailure(connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", second.port_number,
                                                                    timeout=5), Protocol()), ConnectError)
        self.assertIsNone((yield self.start(third.url, B))["error"])
        self.assertEqual(second.up(), 1)
        yield wait_until(lambda: second.port is not None)
        yield third.stop()
        yield self.assertFailure(self.start(third.url), ConnectError)
        self.assertIsNone((yield self.start(second.url))["error"])
        self.assertIs(self.sim.engine_by_id("sim-engine-2"), second)

    @inlineCallbacks
    def test_orchestrator_lists_the_engines_with_the_key(self) -> Any:
        """Over HTTP the orchestrator lists every engine (wrapped and bare), gives the proxy config, and wants its key."""
        status, wrapped = yield self.api("GET", "/api/v1/engines")
        self.assertEqual((status, wrapped["total"]), (200, 3))
        self.assertEqual([(r["container_id"], r["host"], r["port"]) for r in wrapped["engines"]],
                         [(e.container_id, "127.0.0.1", e.port_number) for e in self.sim.engines])
        status, bare = yield self.api("GET", "/engines")
        self.assertEqual(bare, wrapped["engines"])
        self.assertEqual((yield self.api("GET", "/api/v1/proxy/config"))[1]["max_streams_per_engine"], 1)
        self.assertEqual((yield self.fetch("GET", self.sim.orchestrator.url + "/engines"))[0], 401)
        self.sim.orchestrator.configure(v1_engines="404")
        self.assertEqual((yield self.api("GET", "/api/v1/engines"))[0], 404)
        self.sim.orchestrator.set_engine(self.sim.engines[2].container_id, draining=True, forwarded=True)
        records = (yield self.api("GET", "/engines"))[1]
        self.assertEqual((records[2]["draining"], records[2]["forwarded"]), (True, True))

    @inlineCallbacks
    def test_events_are_recorded_and_counted(self) -> Any:
        """Events posted over HTTP are kept in order and make the engine's stream_count."""
        engine = self.sim.engines[1].container_id
        body = {"content_id": A.content_id, "container_id": engine, "engine_id": engine,
                "stream": {"key_type": "content_id", "key": A.content_id}}
        self.assertEqual((yield self.api("POST", "/api/v1/events/stream_started", body))[0], 200)
        records = (yield self.api("GET", "/engines"))[1]
        self.assertEqual([r["stream_count"] for r in records], [0, 1, 0])
        ended = {"content_id": A.content_id, "container_id": engine, "reason": "stopped"}
        self.assertEqual((yield self.api("POST", "/api/v1/events/stream_ended", ended))[1]["updated"], True)
        self.assertEqual(self.sim.orchestrator.events_of(), [body, ended])
        status, events = yield self.fetch("GET", self.sim.orchestrator.url + "/_sim/orchestrator/events")
        self.assertEqual([e["kind"] for e in events["events"]], ["stream_started", "stream_ended"])
        self.assertEqual(self.sim.orchestrator.stream_count(engine), 0)

    @inlineCallbacks
    def test_refuse_outage_closes_the_orchestrator_port(self) -> Any:
        """A refuse outage closes the orchestrator's port (engines stay up); it reopens on the same port."""
        url = self.sim.orchestrator.url
        self.sim.orchestrator.set_outage("refuse")
        listener = self.sim.orchestrator_listener
        yield wait_until(lambda: listener.port is None)
        yield self.assertFailure(self.api("GET", "/engines"), ConnectError)
        self.assertIsNone((yield self.start(self.sim.url))["error"])
        self.sim.orchestrator.clear_outage()
        yield wait_until(lambda: listener.port is not None)
        self.assertEqual(self.sim.orchestrator.url, url)
        self.assertEqual((yield self.api("GET", "/engines"))[0], 200)


class SingleEngineTests(TestCase):
    @inlineCallbacks
    def test_defaults_are_one_engine_and_no_orchestrator(self) -> Any:
        """By default start_simulator runs one engine and no orchestrator; the single-engine attributes still work."""
        sim = yield start_simulator(reactor)
        self.addCleanup(sim.stop)
        self.assertEqual(len(sim.engines), 1)
        self.assertIsNone(sim.orchestrator)
        self.assertEqual((sim.url, sim.port_number, sim.engine), (sim.engines[0].url, sim.engines[0].port_number,
                                                                  sim.engines[0].engine))
        self.assertEqual(sim.urls, [sim.url])


class ProcessTests(TestCase):
    timeout = 40

    @inlineCallbacks
    def test_twistd_runs_several_engines_and_the_orchestrator(self) -> Any:
        """The real twistd plugin with --engines 2 and an orchestrator on free ports: the list names both engines, and both serve."""
        process = _Process()
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
                "acestream-engine-sim", "--listen", "tcp:0:interface=127.0.0.1", "--engines", "2",
                "--orchestrator-listen", "tcp:0:interface=127.0.0.1", "--prebuffer", "0.2"]
        transport = reactor.spawnProcess(process, sys.executable, argv, env=env, path=REPO)

        def kill() -> Any:
            if not process.ended.called:
                transport.signalProcess("KILL")
            return process.ended

        self.addCleanup(kill)
        pattern = re.compile(rb"orchestrator look-alike on http://127\.0\.0\.1:(\d+)")
        yield wait_until(lambda: pattern.search(process.output) or process.ended.called, timeout=20)
        self.assertFalse(process.ended.called, process.output[-2000:])
        ports = [int(p) for p in re.findall(rb"engine sim-engine-\d on \S+ \(port (\d+)\)", process.output)]
        self.assertEqual(len(ports), 2, process.output[-2000:])
        orchestrator = int(pattern.search(process.output).group(1))
        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        response = yield agent.request(b"GET", f"http://127.0.0.1:{orchestrator}/api/v1/engines".encode())
        document = json.loads((yield readBody(response)))
        self.assertEqual([r["port"] for r in document["engines"]], ports)
        for port in ports:
            response = yield agent.request(
                b"GET", f"http://127.0.0.1:{port}/ace/getstream?id={A.content_id}&format=json".encode())
            self.assertIsNone(json.loads((yield readBody(response)))["error"])
        transport.signalProcess("TERM")
        yield process.ended.addTimeout(10, reactor)
        self.assertIn(b"Server Shut Down", process.output)

