"""
Fan-out benchmark: the simulator and the proxy run as their own twistd
processes; this process runs N players over raw TCP and measures.

Prints, per client count: proxy CPU seconds per GB delivered, proxy peak RSS,
per-player min/median throughput, join time-to-first-byte p50/p99, and what
the players saw wrong: chunked framing errors and misplaced sync bytes over
every player's body, and continuity errors of a few players checked packet by
packet (L{TSChecker}). It reports; it asserts nothing.

    .venv/bin/python bench/fanout.py --clients 50 200 --bitrate 8000000 --seconds 20

A/B: C{--proxy-root} names source trees to run the proxy from (each with its
own C{.venv}; the simulator and the players always come from this tree). The
runs alternate between them for C{--rounds} rounds, and a closing table gives
each tree's median CPU-s/GB and its difference to the first tree's:

    git worktree add ../base <commit> && (cd ../base && bash scripts/test.sh tests.test_sink)
    .venv/bin/python bench/fanout.py --clients 200 --rounds 4 --proxy-root . --proxy-root ../base

A variant may add proxy options after a colon, so one tree can be compared
with itself: C{--proxy-root . --proxy-root ".:--direct-send off"}.

C{--profile DIR} samples the proxy with py-spy (the C{bench} extra) over each
measured window and prints the functions that hold most samples.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple

from twisted.internet import defer, protocol, reactor, task
from twisted.python.failure import Failure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from acetwist.sim.contents import DEFAULT_CONTENTS  # noqa: E402
from acetwist.testing import twistd_command  # noqa: E402
from acetwist.ts import TSChecker  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_times(pid: int) -> tuple:
    """User and system CPU seconds of C{pid}."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def context_switches(pid: int) -> Tuple[int, int]:
    """Voluntary (it waited for I/O) and involuntary (preempted) context switches of C{pid}."""
    counts = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                name, value = line.split(":")
                counts[name] = int(value)
    return counts.get("voluntary_ctxt_switches", 0), counts.get("nonvoluntary_ctxt_switches", 0)


def steal_seconds() -> float:
    """CPU time the hypervisor gave to others while this VM wanted it (all CPUs; 0 on bare metal)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    return int(fields[8]) / CLOCK_TICKS if len(fields) > 8 else 0.0


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def stop_processes(processes: Sequence["subprocess.Popen[Any]"]) -> None:
    """SIGTERM to every child still running, then wait up to 10 s for each; kill what does not end."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_to_end(main: Callable[[], Awaitable[Any]]) -> Any:
    """Run C{main()} on the reactor until it ends; its result, or its traceback and exit status 1."""
    outcome: List[Any] = []

    def done(result: Any) -> None:
        outcome.append(result)
        reactor.stop()

    reactor.callWhenRunning(lambda: defer.ensureDeferred(main()).addBoth(done))
    reactor.run()
    result = outcome[0] if outcome else None
    if isinstance(result, Failure):
        result.printTraceback()
        sys.exit(1)
    return result


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def twistd(*args: str, root: str = ROOT) -> subprocess.Popen:
    """A twistd process running the code of source tree C{root} (with its own .venv when it has one)."""
    env = dict(os.environ, PYTHONPATH=root)
    argv = twistd_command(*args)
    python = os.path.join(root, ".venv", "bin", "python")
    if os.path.exists(python):
        argv[0] = python
    # run in the tree itself: "python -c" puts the working directory first on sys.path
    return subprocess.Popen(argv, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class Client(protocol.Protocol):
    """
    A player over raw TCP: sends one GET, undoes the chunked framing, counts
    body bytes, and checks that a sync byte starts every 188 bytes of the
    body (cheap enough for hundreds of players); with C{check}, it also runs
    the body through L{TSChecker} (continuity, packet by packet).
    """

    def __init__(self, path: str, check: bool = False) -> None:
        self.path = path
        self.bytes = 0
        self.header_done = False
        self.buffer = b""
        self.connected_at = 0.0
        self.first_byte_at: Optional[float] = None
        self.status = b""
        self.chunked = False
        self.chunk_left = 0  # body bytes left in the current chunk
        self.framing_errors = 0
        self.chunks = 0
        self.sync_errors = 0
        self.ts_offset = 0  # body bytes received, modulo 188
        self.checker: Optional[TSChecker] = TSChecker() if check else None

    def connectionMade(self) -> None:
        self.connected_at = time.monotonic()
        self.transport.write(f"GET {self.path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\n\r\n".encode())

    def dataReceived(self, data: bytes) -> None:
        if not self.header_done:
            self.buffer += data
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            self.status = self.buffer.split(b"\r\n", 1)[0]
            self.chunked = b"transfer-encoding: chunked" in head
            data = self.buffer[end + 4 :]
            self.header_done = True
            self.buffer = b""
        if not self.chunked:
            self.body(data)
            return
        view = memoryview(self.buffer + data if self.buffer else data)
        self.buffer = b""
        offset, size = 0, len(view)
        while offset < size:
            if self.chunk_left > 0:
                take = min(self.chunk_left, size - offset)
                self.body(view[offset : offset + take])
                offset += take
                self.chunk_left -= take
                if not self.chunk_left:
                    self.chunk_left = -2  # the CRLF that closes the chunk
                continue
            if self.chunk_left < 0:
                if size - offset < 2:
                    self.buffer = bytes(view[offset:])
                    return
                if view[offset : offset + 2] != b"\r\n":
                    self.framing_errors += 1
                offset += 2
                self.chunk_left = 0
                continue
            line_end = bytes(view[offset : offset + 20]).find(b"\r\n")
            if line_end < 0:
                if size - offset >= 20:
                    self.framing_errors += 1
                    self.transport.abortConnection()
                    return
                self.buffer = bytes(view[offset:])
                return
            self.chunk_left = int(bytes(view[offset : offset + line_end]), 16)
            self.chunks += 1
            offset += line_end + 2
            if not self.chunk_left:
                return  # the last chunk: the response has ended

    def body(self, data: Any) -> None:
        if not data:
            return
        if self.first_byte_at is None:
            self.first_byte_at = time.monotonic()
        piece = bytes(data)
        first = (-self.ts_offset) % 188
        syncs = piece[first::188]
        self.sync_errors += len(syncs) - syncs.count(b"\x47")
        self.ts_offset = (self.ts_offset + len(piece)) % 188
        self.bytes += len(piece)
        if self.checker is not None:
            self.checker.feed(piece)


async def connect(port: int, path: str, check: bool = False) -> Client:
    return await protocol.ClientCreator(reactor, Client, path, check).connectTCP("127.0.0.1", port)


def sleep(seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, seconds, lambda: None)


def start_profiler(pid: int, seconds: float, path: str) -> subprocess.Popen:
    """py-spy sampling C{pid} for C{seconds} into C{path} (collapsed stacks, one per line)."""
    py_spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    return subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200",
         "--format", "raw", "--output", path, "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def summarise_profile(path: str, top: int = 25) -> str:
    """The functions holding most samples (anywhere on the stack, and at its top) in py-spy's collapsed stacks."""
    total = 0
    inclusive: Dict[str, int] = collections.Counter()
    own: Dict[str, int] = collections.Counter()
    with open(path) as f:
        for line in f:
            stack, _, count_text = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            count = int(count_text)
            total += count
            frames = stack.split(";")
            for frame in set(frames):
                inclusive[frame] += count
            own[frames[-1]] += count
    lines = [f"  profile {path}: {total} samples"]
    for title, table in (("on the stack", inclusive), ("at the top", own)):
        lines.append(f"  -- {title}:")
        for frame, count in sorted(table.items(), key=lambda item: -item[1])[:top]:
            lines.append(f"  {100 * count / max(total, 1):5.1f}%  {frame}")
    return "\n".join(lines)


async def run_one(clients: int, bitrate: int, seconds: float, joiners: int, proxy_args: List[str],
                  root: str = ROOT, profile: Optional[str] = None, checked: int = 2) -> Dict[str, Any]:
    sim_port, proxy_port = free_port(), free_port()
    sim = twistd("acestream-engine-sim", "--listen", f"tcp:{sim_port}:interface=127.0.0.1",
                 "--bitrate", str(bitrate), "--prebuffer", "0.5", "--burst", "1")
    proxy = twistd("acestream-proxy", "--listen", f"tcp:{proxy_port}:interface=127.0.0.1",
                   "--engine", f"http://127.0.0.1:{sim_port}", "--grace", "2",
                   "--max-connections-per-ip", "0",  # every player comes from 127.0.0.1
                   *proxy_args, root=root)
    try:
        await sleep(3.0)
        path = f"/ace/getstream?id={DEFAULT_CONTENTS[0].content_id}"
        players: List[Client] = []
        for index in range(clients):
            players.append(await connect(proxy_port, path, check=index < checked))
        await sleep(3.0)  # let the burst pass; measure steady state
        profiler = start_profiler(proxy.pid, seconds, profile) if profile else None
        start_bytes = [p.bytes for p in players]
        start_chunks = sum(p.chunks for p in players)
        start_user, start_system = cpu_times(proxy.pid)
        start_own, start_steal = sum(os.times()[:2]), steal_seconds()
        start_switches = context_switches(proxy.pid)
        started = time.monotonic()
        await sleep(seconds)
        elapsed = time.monotonic() - started
        end_user, end_system = cpu_times(proxy.pid)
        own, steal = sum(os.times()[:2]) - start_own, steal_seconds() - start_steal
        switches = [b - a for a, b in zip(start_switches, context_switches(proxy.pid))]
        user, system = end_user - start_user, end_system - start_system
        cpu = user + system
        if profiler is not None:
            for _ in range(100):
                if profiler.poll() is not None:
                    break
                await sleep(0.1)
        delivered = [p.bytes - b for p, b in zip(players, start_bytes)]
        chunks = sum(p.chunks for p in players) - start_chunks
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
        checkers = [p.checker for p in players if p.checker is not None]
        return {
            "proxy": os.path.relpath(root),
            "clients": clients,
            "bitrate_mbit": bitrate / 1e6,
            "seconds": round(elapsed, 1),
            "delivered_gb": round(total / 1e9, 3),
            "mean_write_kib": round(sum(delivered) / chunks / 1024, 1) if chunks else None,
            "proxy_cpu_s": round(cpu, 2),
            "user_s": round(user, 2),
            "system_s": round(system, 2),
            "cpu_s_per_gb": round(cpu / (total / 1e9), 3) if total else float("nan"),
            "players_cpu_s": round(own, 2),
            "steal_s": round(steal, 2),
            "proxy_switches_vol_invol": f"{switches[0]}/{switches[1]}",
            "proxy_peak_rss_mb": round(rss, 1),
            "client_min_mbit": round(rates[0], 2),
            "client_median_mbit": round(statistics.median(rates), 2),
            "join_ttfb_p50_ms": round(1000 * ttfb[len(ttfb) // 2], 1) if ttfb else None,
            "join_ttfb_p99_ms": round(1000 * ttfb[min(len(ttfb) - 1, int(0.99 * len(ttfb)))], 1) if ttfb else None,
            "not_200": sum(1 for p in players if not p.status.startswith(b"HTTP/1.1 200")),
            "framing_errors": sum(p.framing_errors for p in players),
            "sync_errors": sum(p.sync_errors for p in players),
            "cc_errors_checked": sum(c.cc_errors for c in checkers),
            "resyncs_checked": sum(c.resyncs for c in checkers),
        }
    finally:
        stop_processes((proxy, sim))


def commit_of(root: str) -> str:
    try:
        return subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def parse_variant(text: str) -> Tuple[str, List[str]]:
    """C{ROOT} or C{ROOT:OPTIONS}: a source tree and extra proxy options for it (space-separated)."""
    root, _, options = text.partition(":")
    return os.path.abspath(root or "."), options.split()


async def main(args: argparse.Namespace) -> None:
    variants = [parse_variant(v) for v in args.proxy_root] or [(ROOT, [])]
    names = [os.path.relpath(root) + (" " + " ".join(options) if options else "") for root, options in variants]
    print(f"fan-out benchmark: {os.cpu_count()} cores, bitrate {args.bitrate / 1e6:g} Mbit/s, {args.seconds:g} s,"
          f" proxy options {' '.join(args.proxy_args) or '(defaults)'}")
    for (root, _), name in zip(variants, names):
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        print(f"  proxy [{name}]: commit {commit_of(root)}{' (with changes)' if dirty else ''}")
    if args.profile:
        os.makedirs(args.profile, exist_ok=True)
    figures: Dict[Tuple[int, int], List[float]] = collections.defaultdict(list)
    for round_ in range(args.rounds):
        # alternate the order each round, so no variant always runs first
        order = list(range(len(variants)))
        if round_ % 2:
            order.reverse()
        for clients in args.clients:
            for index in order:
                root, options = variants[index]
                profile = None
                if args.profile:
                    profile = os.path.join(args.profile, f"variant{index + 1}-{clients}-r{round_ + 1}.txt")
                result = await run_one(clients, args.bitrate, args.seconds, args.joiners, args.proxy_args + options,
                                       root=root, profile=profile, checked=args.checked_players)
                result["proxy"] = f"[{names[index]}]"
                figures[(index, clients)].append(result["cpu_s_per_gb"])
                print(f"round={round_ + 1}  " + "  ".join(f"{k}={v}" for k, v in result.items()), flush=True)
                if profile and os.path.exists(profile):
                    print(summarise_profile(profile), flush=True)
    if len(variants) > 1 or args.rounds > 1:
        print("summary: median CPU-s/GB over the rounds (each round's figure in brackets)")
        for clients in args.clients:
            reference = statistics.median(figures[(0, clients)])
            for index, name in enumerate(names):
                values = figures[(index, clients)]
                median = statistics.median(values)
                change = f"  {100 * (median - reference) / reference:+.1f}% vs [{names[0]}]" if index else ""
                print(f"  clients={clients}  [{name}] ({commit_of(variants[index][0])})  cpu_s_per_gb={median:.3f}"
                      f"  [{', '.join(f'{v:.3f}' for v in values)}]{change}", flush=True)


def entry() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--bitrate", type=int, default=8_000_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--joiners", type=int, default=20)
    parser.add_argument("--proxy-root", action="append", default=[],
                        help="ROOT or ROOT:OPTIONS, a source tree to run the proxy from (with its .venv) and extra proxy"
                             " options for it; repeat for an A/B (default: this tree)")
    parser.add_argument("--rounds", type=int, default=1, help="runs per tree and client count, alternating trees")
    parser.add_argument("--profile", metavar="DIR", help="sample the proxy with py-spy into DIR and print the top")
    parser.add_argument("--checked-players", type=int, default=2,
                        help="players whose stream is checked packet by packet (continuity)")
    parser.add_argument("proxy_args", nargs="*", help="extra proxy options after --, e.g. -- --block-size 128KiB")
    args = parser.parse_args()
    run_to_end(lambda: main(args))


if __name__ == "__main__":
    entry()
