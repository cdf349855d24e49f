"""
Fan-out benchmark: the simulator and the proxy run as their own twistd
processes; this process runs N players over raw TCP and measures.

Prints, per client count: proxy CPU seconds per GB delivered, proxy peak RSS,
per-player min/median throughput, and join time-to-first-byte p50/p99.
It reports; it asserts nothing.

    .venv/bin/python bench/fanout.py --clients 50 200 --bitrate 8000000 --seconds 20
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

from twisted.internet import defer, protocol, reactor, task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from acetwist.sim.contents import DEFAULT_CONTENTS  # noqa: E402
from acetwist.testing import twistd_command  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def twistd(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.Popen(
        twistd_command(*args),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


class Client(protocol.Protocol):
    """A player over raw TCP: sends one GET and counts body bytes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.bytes = 0
        self.header_done = False
        self.buffer = b""
        self.connected_at = 0.0
        self.first_byte_at: Optional[float] = None
        self.status = b""

    def connectionMade(self) -> None:
        self.connected_at = time.monotonic()
        self.transport.write(f"GET {self.path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\n\r\n".encode())

    def dataReceived(self, data: bytes) -> None:
        if not self.header_done:
            self.buffer += data
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status = self.buffer.split(b"\r\n", 1)[0]
            data = self.buffer[end + 4 :]
            self.header_done = True
            self.buffer = b""
        if data and self.first_byte_at is None:
            self.first_byte_at = time.monotonic()
        self.bytes += len(data)


async def connect(port: int, path: str) -> Client:
    return await protocol.ClientCreator(reactor, Client, path).connectTCP("127.0.0.1", port)


def sleep(seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


async def run_one(clients: int, bitrate: int, seconds: float, joiners: int, proxy_args: List[str]) -> Dict[str, Any]:
    sim_port, proxy_port = free_port(), free_port()
    sim = twistd("acestream-engine-sim", "--listen", f"tcp:{sim_port}:interface=127.0.0.1",
                 "--bitrate", str(bitrate), "--prebuffer", "0.5", "--burst", "1")
    proxy = twistd("acestream-proxy", "--listen", f"tcp:{proxy_port}:interface=127.0.0.1",
                   "--engine", f"http://127.0.0.1:{sim_port}", "--grace", "2",
                   "--max-connections-per-ip", "0",  # every player comes from 127.0.0.1
                   *proxy_args)
    try:
        await sleep(3.0)
        path = f"/ace/getstream?id={DEFAULT_CONTENTS[0].content_id}"
        players: List[Client] = []
        for _ in range(clients):
            players.append(await connect(proxy_port, path))
        await sleep(3.0)  # let the burst pass; measure steady state
        start_bytes = [p.bytes for p in players]
        start_cpu = cpu_seconds(proxy.pid)
        started = time.monotonic()
        await sleep(seconds)
        elapsed = time.monotonic() - started
        cpu = cpu_seconds(proxy.pid) - start_cpu
        delivered = [p.bytes - b for p, b in zip(players, start_bytes)]
        # joiners on the live channel, one at a time
        ttfb: List[float] = []
        for _ in range(joiners):
            joiner = await connect(proxy_port, path)
            for _ in range(200):
                if joiner.first_byte_at is not None:
                    break
                await sleep(0.005)
            if joiner.first_byte_at is not None:
                ttfb.append(joiner.first_byte_at - joiner.connected_at)
            joiner.transport.loseConnection()
            await sleep(0.05)
        rss = peak_rss_mb(proxy.pid)
        for p in players:
            p.transport.loseConnection()
        total = sum(delivered)
        rates = sorted(8 * d / elapsed / 1e6 for d in delivered)
        ttfb.sort()
        return {
            "clients": clients,
            "bitrate_mbit": bitrate / 1e6,
            "seconds": round(elapsed, 1),
            "delivered_gb": round(total / 1e9, 3),
            "proxy_cpu_s": round(cpu, 2),
            "cpu_s_per_gb": round(cpu / (total / 1e9), 3) if total else float("nan"),
            "proxy_peak_rss_mb": round(rss, 1),
            "client_min_mbit": round(rates[0], 2),
            "client_median_mbit": round(statistics.median(rates), 2),
            "join_ttfb_p50_ms": round(1000 * ttfb[len(ttfb) // 2], 1) if ttfb else None,
            "join_ttfb_p99_ms": round(1000 * ttfb[min(len(ttfb) - 1, int(0.99 * len(ttfb)))], 1) if ttfb else None,
        }
    finally:
        for process in (proxy, sim):
            process.send_signal(signal.SIGTERM)
        for process in (proxy, sim):
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


async def main(args: argparse.Namespace) -> None:
    print(f"fan-out benchmark: {os.cpu_count()} cores, bitrate {args.bitrate / 1e6:g} Mbit/s, {args.seconds:g} s,"
          f" proxy options {' '.join(args.proxy_args) or '(defaults)'}")
    for clients in args.clients:
        result = await run_one(clients, args.bitrate, args.seconds, args.joiners, args.proxy_args)
        print("  ".join(f"{k}={v}" for k, v in result.items()), flush=True)


def entry() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--bitrate", type=int, default=8_000_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--joiners", type=int, default=20)
    parser.add_argument("proxy_args", nargs="*", help="extra proxy options after --, e.g. -- --block-size 128KiB")
    args = parser.parse_args()
    failure: List[Any] = []

    def done(result: Any) -> None:
        if isinstance(result, Exception) or hasattr(result, "printTraceback"):
            failure.append(result)
        reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(main(args)).addBoth(done))
    reactor.run()
    if failure:
        failure[0].printTraceback()
        sys.exit(1)


if __name__ == "__main__":
    entry()
