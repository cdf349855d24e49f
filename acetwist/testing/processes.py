"""Real twistd processes (workers, simulators) on free loopback ports."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IProcessTransport
from twisted.python.failure import Failure


from acetwist.testing.proxy import fetch, wait_for

if TYPE_CHECKING:
    from acetwist.reactor import IReactor

#: how a L{ProcessWorker} ended: (exit code, signal), one of them None
ExitStatus = Tuple[Optional[int], Optional[int]]


def repo_root() -> str:
    """The directory holding the acetwist package (and twisted/plugins)."""
    import os

    import acetwist

    return os.path.dirname(os.path.dirname(os.path.abspath(acetwist.__file__)))


def twistd_command(*args: str) -> List[str]:
    """argv running twistd with this interpreter (its module has no __main__ guard)."""
    import sys

    return [sys.executable, "-c", "from twisted.scripts.twistd import run; run()", "-n", "--pidfile=", *args]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProcessWorker:
    """
    A real C{twistd acestream-proxy} process on 127.0.0.1 (for multi-worker
    tests and benchmarks). L{start} fires once it listens; L{ended} fires
    with C{(exit code, signal)}.
    """

    def __init__(self, reactor: IReactor, name: str, *options: str, env: Optional[Dict[str, str]] = None) -> None:
        self.reactor = reactor
        self.name = name
        #: environment variables added to this process's own (e.g. C{SSL_CERT_FILE})
        self.env = dict(env or {})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.options = options
        self.output = b""
        self.ended: Deferred[ExitStatus] = Deferred()
        self.process: Optional[IProcessTransport] = None

    def start(self) -> Deferred[None]:
        import os

        from twisted.internet import protocol

        worker = self

        class Watch(protocol.ProcessProtocol):
            def outReceived(self, data: bytes) -> None:
                worker.output += data

            errReceived = outReceived

            def processEnded(self, reason: Failure) -> None:
                status = reason.value
                assert isinstance(status, (ProcessDone, ProcessTerminated))
                worker.ended.callback((status.exitCode, status.signal))

        env = dict(os.environ, PYTHONPATH=repo_root() + os.pathsep + os.environ.get("PYTHONPATH", ""), **self.env)
        argv = twistd_command("acestream-proxy", "--listen", f"tcp:{self.port}:interface=127.0.0.1",
                              "--worker-id", self.name, *self.options)
        self.process = self.reactor.spawnProcess(Watch(), argv[0], argv, env=env, path=repo_root())
        marker = f"Site starting on {self.port}".encode()

        def listening(_: None) -> None:
            if self.ended.called:
                raise RuntimeError(f"worker {self.name} exited: {self.output[-2000:]!r}")

        d = wait_for(self.reactor, lambda: marker in self.output or self.ended.called, timeout=30)
        return d.addCallback(listening)

    @property
    def running(self) -> bool:
        return self.process is not None and not self.ended.called

    def signal(self, name: str) -> None:
        if self.process is not None and self.running:
            self.process.signalProcess(name)

    def stop(self) -> Deferred[ExitStatus] | Deferred[None]:
        """SIGTERM, then SIGKILL if it has not ended within 15 s; fires with how it ended (None if it never started)."""
        if not self.running:
            return self.ended if self.ended.called else succeed(None)
        self.signal("TERM")
        timer = self.reactor.callLater(15, self.signal, "KILL")

        def ended(result: ExitStatus) -> ExitStatus:
            if timer.active():
                timer.cancel()
            return result

        return self.ended.addBoth(ended)

    def status(self) -> Deferred[Dict[str, Any]]:
        return fetch(self.reactor, f"{self.url}/status").addCallback(lambda r: json.loads(r[2]))
