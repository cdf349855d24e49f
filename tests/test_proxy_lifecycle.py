"""Sessions are released: one stop after the grace period, reuse during it, and a clean SIGTERM."""

import os
import signal
import sys
from typing import Any

from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.trial.unittest import TestCase

from acetwist.testing import Player, wait_for
from tests.integration import SimulatorProxyTestCase


class GraceTests(SimulatorProxyTestCase):
    proxy_config = dict(SimulatorProxyTestCase.proxy_config, grace=1.0, stop_timeout=1.0)

    @inlineCallbacks
    def test_last_player_leaving_stops_the_session_once_after_grace(self) -> Any:
        """The engine session is stopped exactly once, after the grace period, when the last player leaves."""
        players = [self.play(limit=300_000) for _ in range(3)]
        yield DeferredList([p.done for p in players])
        self.assertEqual(self.counters()["stop_calls"], 0)
        yield wait_for(self.reactor, lambda: self.counters()["stop_calls"] >= 1, timeout=5)
        yield wait_for(self.reactor, lambda: not self.proxy.registry.channels(), timeout=5)
        counters = self.counters()
        self.assertEqual(counters["stop_calls"], 1)
        self.assertEqual(counters["sessions_stopped"], 1)
        self.assertEqual(counters["stops_unknown"], 0)

    @inlineCallbacks
    def test_player_arriving_during_grace_reuses_the_session(self) -> Any:
        """A player arriving during the grace period gets the same engine session and no stop is sent."""
        first = self.play(limit=300_000)
        yield first.done
        second = self.play(limit=300_000)
        yield second.done
        self.assertCleanTS(second)
        self.assertEqual(self.sessions_opened(), 1)
        self.assertEqual(self.counters()["stop_calls"], 0)

    @inlineCallbacks
    def test_hanging_stop_does_not_block_other_channels(self) -> Any:
        """While one channel's stop hangs in a stalled engine call, another channel starts and streams."""
        first = self.play(limit=200_000)
        yield first.done
        self.fault("stall", self.content)
        other = self.play(self.stream_url(self.other_content), limit=400_000)
        yield other.done
        self.assertCleanTS(other)
        yield wait_for(self.reactor, lambda: self.counters()["stop_calls"] >= 1 or
                       self.proxy.service.pool.stop_calls >= 1, timeout=5)


class _ProcessWatcher(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred[Any] = Deferred()
        self.output = b""

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback((reason.value.exitCode, reason.value.signal))


class ShutdownTests(SimulatorProxyTestCase):
    timeout = 60

    @inlineCallbacks
    def test_sigterm_stops_every_session_and_closes_players(self) -> Any:
        """SIGTERM to a twistd proxy stops each engine session once and closes its players before the process exits."""
        from acetwist.testing import free_port, repo_root, twistd_command

        port = free_port()
        watcher = _ProcessWatcher()
        env = dict(os.environ, PYTHONPATH=repo_root() + os.pathsep + os.environ.get("PYTHONPATH", ""))
        args = twistd_command("acestream-proxy", "--listen", f"tcp:{port}:interface=127.0.0.1",
                              "--engine", self.sim.url, "--grace", "30")
        process = self.reactor.spawnProcess(watcher, sys.executable, args, env=env, path=repo_root())
        self.addCleanup(lambda: watcher.ended if watcher.ended.called else _kill(process, watcher))
        base = f"http://127.0.0.1:{port}"
        yield wait_for(self.reactor, lambda: f"Site starting on {port}".encode() in watcher.output, timeout=20)
        players = [Player(self.reactor, f"{base}/ace/getstream?id={c.content_id}", limit=10**9).start()
                   for c in (self.content, self.other_content)]
        self.players.extend(players)
        yield wait_for(self.reactor, lambda: all(p.received > 100_000 for p in players), timeout=15)
        process.signalProcess("TERM")
        code, sig = yield watcher.ended
        # twistd re-raises the signal that stopped it: "killed by SIGTERM" is its clean exit
        self.assertTrue(code == 0 or sig == signal.SIGTERM, (code, sig, watcher.output[-2000:]))
        self.assertIn(b"Server Shut Down", watcher.output)
        for player in players:
            yield player.done
            self.assertTrue(player.clean_end, player.end_reason)
        counters = self.counters()
        self.assertEqual(counters["stop_calls"], 2)
        self.assertEqual(counters["sessions_stopped"], 2)


def _kill(process: Any, watcher: _ProcessWatcher) -> Deferred[Any]:
    try:
        process.signalProcess("KILL")
    except Exception:
        pass
    return watcher.ended


class StartupTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_busy_port_makes_twistd_exit_non_zero(self) -> Any:
        """A proxy whose listening port is taken exits with a non-zero status instead of running deaf."""
        import socket

        from acetwist.testing import ProcessWorker

        blocker = socket.socket()
        blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(1)
        self.addCleanup(blocker.close)
        worker = ProcessWorker(reactor, "busy")
        worker.port = blocker.getsockname()[1]
        worker.url = f"http://127.0.0.1:{worker.port}"
        self.addCleanup(worker.stop)
        with self.assertRaises(RuntimeError):
            yield worker.start()
        code, sig = yield worker.ended
        self.assertNotEqual(code, 0)
        self.assertIn(b"Address already in use", worker.output)

    @inlineCallbacks
    def test_bad_option_is_a_usage_error(self) -> Any:
        """A bad option value stops twistd at start with a message naming the option."""
        from acetwist.testing import ProcessWorker

        worker = ProcessWorker(reactor, "bad", "--grace", "soon")
        self.addCleanup(worker.stop)
        with self.assertRaises(RuntimeError):
            yield worker.start()
        code, _ = yield worker.ended
        self.assertNotEqual(code, 0)
        self.assertIn(b"--grace", worker.output)
