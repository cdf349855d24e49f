"""Tests for the twistd plugin: options from flags and environment, the service, and the real twistd process."""

import os
import socket
import sys
from typing import Any, List

from twisted.application.service import IService
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.testing import MemoryReactorClock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from acetwist.sim import tap
from acetwist.sim.config import OPTIONS
from acetwist.sim.contents import DEFAULT_CONTENTS
from acetwist.sim.service import SimulatorService
from acetwist.ts import TSChecker
from tests.test_sim_loopback import RawClient, sleep, wait_until

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(args: List[str], environ: Any = None) -> tap.Options:
    options = tap.Options(environ or {})
    options.parseOptions(args)
    return options


class OptionTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """With no flag and no variable, every option has its documented default."""
        config = parse([])["config"]
        self.assertEqual((config.listen, config.bitrate, config.prebuffer, config.burst, config.gop),
                         ("tcp:6878", 4_000_000, 2.0, 2.0, 1.0))
        self.assertEqual((config.idle_timeout, config.stat_keeps_alive), (60.0, True))
        self.assertEqual(config.contents, tuple(DEFAULT_CONTENTS))
        self.assertEqual(config.faults, ())

    def test_flag_beats_environment_beats_default(self) -> None:
        """A flag wins over ACETWIST_SIM_<NAME>, which wins over the default."""
        environ = {"ACETWIST_SIM_BITRATE": "8M", "ACETWIST_SIM_PREBUFFER": "500ms",
                   "ACETWIST_SIM_STAT_KEEPS_ALIVE": "no", "ACETWIST_SIM_CONTENTS": "5"}
        config = parse(["--bitrate", "2000000"], environ)["config"]
        self.assertEqual(config.bitrate, 2_000_000)
        self.assertEqual(config.prebuffer, 0.5)
        self.assertFalse(config.stat_keeps_alive)
        self.assertEqual(len(config.contents), 5)

    def test_every_option_has_a_flag_and_an_env_name(self) -> None:
        """Each option is a flag whose help names its variable and default."""
        help_text = str(tap.Options({}))
        for option in OPTIONS:
            self.assertIn(f"--{option.name}", help_text)
            self.assertIn(option.env, help_text)
        self.assertIn("--fault", help_text)

    def test_faults_from_flags_and_environment(self) -> None:
        """--fault repeats; ACETWIST_SIM_FAULT takes ';'-separated specs when no flag is given."""
        config = parse(["--fault", "cut:after_bytes=5@channel-1", "--fault", "down:mode=503"])["config"]
        self.assertEqual([(n, c) for n, c, _ in config.faults], [("cut", "channel-1"), ("down", None)])
        config = parse([], {"ACETWIST_SIM_FAULT": "stall;gap:ms=100"})["config"]
        self.assertEqual([n for n, _, _ in config.faults], ["stall", "gap"])

    def test_encrypted_contents(self) -> None:
        """--encrypted takes names, content ids or infohashes (or * for all); the variable works too."""
        first, second, third = DEFAULT_CONTENTS[:3]
        config = parse(["--encrypted", f"channel-1,{second.infohash}"])["config"]
        self.assertEqual(config.encrypted_contents(), (first, second))
        config = parse([], {"ACETWIST_SIM_ENCRYPTED": "*"})["config"]
        self.assertEqual(config.encrypted_contents(), tuple(DEFAULT_CONTENTS))
        self.assertEqual(parse([])["config"].encrypted_contents(), ())
        self.assertEqual(parse(["--encrypted", third.content_id])["config"].encrypted_contents(), (third,))

    def test_bad_values_are_usage_errors(self) -> None:
        """Bad flags or variables are UsageErrors that name the option."""
        cases = [
            (["--bitrate", "fast"], {}, "--bitrate"),
            (["--bitrate", "50k"], {}, "bitrate"),
            (["--prebuffer", "-1"], {}, "--prebuffer"),
            (["--gop", "0"], {}, "--gop"),
            (["--stat-keeps-alive", "maybe"], {}, "--stat-keeps-alive"),
            (["--contents", "0"], {}, "--contents"),
            (["--fault", "nope"], {}, "--fault"),
            (["--fault", "cut"], {}, "after_bytes"),
            (["--fault", "stall@channel-9"], {}, "no such content"),
            (["--fault", "down:mode=refuse@channel-1"], {}, "engine-wide only"),
            ([], {"ACETWIST_SIM_IDLE_TIMEOUT": "soon"}, "ACETWIST_SIM_IDLE_TIMEOUT"),
            ([], {"ACETWIST_SIM_FAULT": "gap"}, "ACETWIST_SIM_FAULT"),
            (["--listen", "nowhere"], {}, "--listen"),
            (["--encrypted", "channel-9"], {}, "encrypted: no content"),
            (["--encrypted", "*,channel-1"], {}, "stands alone"),
        ]
        for args, environ, text in cases:
            error = self.assertRaises(usage.UsageError, parse, args, environ)
            self.assertIn(text, str(error), args or environ)

    def test_make_service_listens_where_told(self) -> None:
        """makeService returns a MultiService that listens on --listen when started, and stops cleanly."""
        memory = MemoryReactorClock()
        service = tap.makeService(parse(["--listen", "tcp:7777:interface=127.0.0.1"]), reactor=memory)
        self.assertTrue(IService.providedBy(service))
        self.assertIsInstance(service, SimulatorService)
        service.privilegedStartService()
        service.startService()
        [(port, factory, _, interface)] = memory.tcpServers
        self.assertEqual((port, interface), (7777, "127.0.0.1"))
        self.assertIs(factory, service.simulator.site)
        self.successResultOf(service.stopService())


class _Process(ProcessProtocol):
    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[Any] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.signal = reason.value.signal
        self.ended.callback(reason.value.exitCode)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProcessTests(TestCase):
    timeout = 40

    def spawn(self, *args: str) -> Any:
        process = _Process()
        env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
        argv = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=",
                "acestream-engine-sim", *args]
        transport = reactor.spawnProcess(process, sys.executable, argv, env=env, path=REPO)

        def kill() -> Any:
            if not process.ended.called:
                transport.signalProcess("KILL")
            return process.ended

        self.addCleanup(kill)
        return process, transport

    @inlineCallbacks
    def test_twistd_plugin_serves_valid_ts(self) -> Any:
        """The real twistd plugin, started on a free port, serves valid TS through getstream, and stops on SIGTERM."""
        port = free_port()
        process, transport = self.spawn("--listen", f"tcp:{port}:interface=127.0.0.1", "--prebuffer", "0.2",
                                        "--burst", "0.5")
        # the contents are logged after the site starts, perhaps in a later chunk of output
        content_id = DEFAULT_CONTENTS[0].content_id.encode()
        yield wait_until(lambda: (b"Site starting on" in process.output and content_id in process.output)
                         or process.ended.called, timeout=20)
        self.assertFalse(process.ended.called, process.output[-2000:])
        self.assertIn(content_id, process.output)
        client = RawClient(f"GET /ace/getstream?id={DEFAULT_CONTENTS[0].content_id}&format=json HTTP/1.0\r\n"
                           f"Host: 127.0.0.1:{port}\r\n\r\n".encode())
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5), client)
        yield client.ended.addTimeout(10, reactor)
        self.assertIn(b'"error": null', bytes(client.data))
        session = bytes(client.data).split(b"/ace/r/", 1)[1].split(b'"', 1)[0].decode()
        reader = RawClient(f"GET /ace/r/{session} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5), reader)
        yield reader.ended.addTimeout(10, reactor)
        location = bytes(reader.data).split(b"\r\nLocation: ", 1)[1].split(b"\r\n", 1)[0].decode()
        body = RawClient(f"GET /{location.split('/', 3)[3]} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5), body)
        yield wait_until(lambda: len(body.data) > 600_000 or body.ended.called, timeout=10)
        body.transport.abortConnection()
        head, _, payload = bytes(body.data).partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.0 200"), head)
        checker = TSChecker()
        checker.feed(payload)  # HTTP/1.0 request: the body is not chunked
        self.assertTrue(checker.aligned_at_start)
        self.assertEqual(checker.cc_errors, 0)
        self.assertGreaterEqual(len(checker.random_access_points), 2)
        transport.signalProcess("TERM")
        code = yield process.ended.addTimeout(10, reactor)
        # twistd re-raises the signal that stopped it, so the exit status is "killed by SIGTERM" (or 0)
        self.assertIn((code, process.signal), [(0, None), (None, 15)], process.output[-2000:])
        self.assertIn(b"Server Shut Down", process.output)

    @inlineCallbacks
    def test_busy_port_makes_twistd_exit_non_zero(self) -> Any:
        """twistd exits with a non-zero code when the port is taken."""
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            port = taken.getsockname()[1]
            process, _ = self.spawn("--listen", f"tcp:{port}:interface=127.0.0.1")
            code = yield process.ended.addTimeout(20, reactor)
        self.assertNotEqual(code, 0)
        yield sleep(0)
