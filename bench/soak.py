"""
Churn soak: the simulator and the proxy run as their own twistd processes on
free loopback ports; this process plays a changing audience for a fixed time
and samples the proxy process's memory and file descriptors from /proc.

- One steady channel stays on the whole time; a few validating players watch
  it from start to end and check every byte (acetwist.ts.TSChecker: sync
  losses, continuity errors) and the longest gap between data.
- --channels churn channels cycle: each starts (an anchor player opens
  it), lives --channel-on seconds on average, then every player on it
  leaves; once the proxy has ended it (the grace passed, it left /status) it
  starts again after --channel-off seconds.
- Churn players (raw TCP, reading and discarding) join running channels at
  --joins-per-minute and stay --mean-stay seconds on average
  (exponential), at most --max-clients at once; half hang up, half abort.

Every --sample-every seconds the proxy's VmRSS and open fds are sampled.
At the end it prints the samples, the least-squares RSS and fd slopes per
hour over the samples after the warm-up, the churn counts, the clients
served, the validating players' figures, and the proxy's RSS and fds once
every channel has ended. It reports; it asserts nothing. Only 127.0.0.1; it
ends only the two processes it started, by pid.

With --trace-memory the proxy runs with tracemalloc (through a
sitecustomize hook; slower, and each snapshot pauses it for a few seconds):
snapshots at the start, the warm-up end, the end and once every channel has
ended print the Python heap, the allocation sites that grew, the cyclic
garbage pending and the reactor's pending timers.

    .venv/bin/python bench/soak.py --minutes 15 --channels 4 --bitrate 3000000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from typing import IO, Any, Dict, List, Optional, Sequence, Set, Tuple

from twisted.internet import defer, protocol, reactor, task
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.python.failure import Failure

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from acetwist.sim.contents import Content, numbered_contents  # noqa: E402
from acetwist.testing import Player, fetch, free_port, percentile, twistd_command  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def now() -> float:
    return time.monotonic()


def sleep(seconds: float) -> defer.Deferred[None]:
    return task.deferLater(reactor, max(0.0, seconds), lambda: None)


# ------------------------------------------------------------------ /proc


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_kinds(pid: int) -> str:
    """The open fds by kind (socket, pipe, anon_inode, file), e.g. C{socket=7 pipe=2}."""
    kinds: Dict[str, int] = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        kind = target.split(":", 1)[0] if ":" in target and not target.startswith("/") else "file"
        kinds[kind] = kinds.get(kind, 0) + 1
    return " ".join(f"{k}={v}" for k, v in sorted(kinds.items()))


def socket_peers(pid: int, ports: Dict[int, str]) -> str:
    """The process's TCP sockets by role: C{ports} names local or remote ports (e.g. {6878: "engine"})."""
    inodes = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    roles: Dict[str, int] = {}
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[9] not in inodes:
                continue
            local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
            role = "listening" if fields[3] == "0A" else ports.get(remote) or ports.get(local) or "other"
            roles[role] = roles.get(role, 0) + 1
    return " ".join(f"{k}={v}" for k, v in sorted(roles.items()))


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def slope_per_hour(points: Sequence[Tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, in value per hour."""
    if len(points) < 2:
        return float("nan")
    mean_t = statistics.fmean(t for t, _ in points)
    mean_v = statistics.fmean(v for _, v in points)
    sxx = sum((t - mean_t) ** 2 for t, _ in points)
    sxy = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return 3600 * sxy / sxx if sxx else float("nan")


# ---------------------------------------------------------- memory trace

#: Written as sitecustomize.py into a directory put first on the proxy's
#: PYTHONPATH when --trace-memory is given: the proxy traces allocations and,
#: on SIGUSR1, writes a tracemalloc snapshot and gc figures next to it.
TRACE_HOOK = """
import os

if os.environ.get("ACETWIST_SOAK_TRACE"):
    import gc, json, signal, tracemalloc

    tracemalloc.start(int(os.environ.get("ACETWIST_SOAK_FRAMES", "6")))
    _taken = [0]

    def _dump(signum, frame):
        _taken[0] += 1
        base = os.path.join(os.environ["ACETWIST_SOAK_TRACE"], "snapshot-%d" % _taken[0])
        tracemalloc.take_snapshot().dump(base + ".tracemalloc")
        # the cyclic garbage pending now (unreachable, waiting for the collector), by type
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        cyclic = {}
        for o in gc.garbage:
            name = "%s.%s" % (getattr(type(o), "__module__", "?"), getattr(type(o), "__qualname__", "?"))
            cyclic[name] = cyclic.get(name, 0) + 1
        del gc.garbage[:]
        gc.set_debug(0)
        types = {}
        for o in gc.get_objects():
            name = "%s.%s" % (getattr(type(o), "__module__", "?"), getattr(type(o), "__qualname__", "?"))
            types[name] = types.get(name, 0) + 1
        from twisted.internet import reactor

        timers = {}
        for call in reactor.getDelayedCalls():
            func = call.func
            name = getattr(func, "__qualname__", None) or type(func).__qualname__
            name = "%s.%s" % (getattr(func, "__module__", "?"), name)
            count, latest = timers.get(name, (0, 0.0))
            timers[name] = (count + 1, max(latest, call.getTime() - reactor.seconds()))
        figures = {"traced": tracemalloc.get_traced_memory(), "gc_count": gc.get_count(), "cyclic": cyclic,
                   "timers": timers,
                   "gc_collections": [g["collections"] for g in gc.get_stats()],
                   "gc_collected": [g["collected"] for g in gc.get_stats()],
                   "garbage": len(gc.garbage), "objects": types}
        with open(base + ".tmp", "w") as f:
            json.dump(figures, f)
        os.rename(base + ".tmp", base + ".json")

    signal.signal(signal.SIGUSR1, _dump)
"""


class MemoryTrace:
    """Snapshots of the proxy's Python heap (tracemalloc, gc), taken on SIGUSR1 by TRACE_HOOK."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "sitecustomize.py"), "w") as f:
            f.write(TRACE_HOOK)
        self.taken: List[Tuple[str, str]] = []  # (label, path without extension)

    def env(self) -> Dict[str, str]:
        return {"ACETWIST_SOAK_TRACE": self.directory}

    async def snapshot(self, child: "Child", label: str) -> None:
        base = os.path.join(self.directory, f"snapshot-{len(self.taken) + 1}")
        child.transport.signalProcess(signal.SIGUSR1)
        deadline = now() + 120
        while not os.path.exists(base + ".json") and now() < deadline:
            await sleep(0.5)
        if os.path.exists(base + ".json"):
            self.taken.append((label, base))
            print(f"memory trace: snapshot '{label}' in {base}.*", flush=True)

    def report(self) -> None:
        import tracemalloc

        if not self.taken:
            return
        figures = []
        for label, base in self.taken:
            with open(base + ".json") as f:
                figures.append((label, json.load(f)))
        print("memory trace (the proxy's Python heap, tracemalloc):")
        for label, fig in figures:
            print(f"  {label}: traced {fig['traced'][0] / 1e6:.2f} MB (peak {fig['traced'][1] / 1e6:.2f}),"
                  f" gc objects {sum(fig['objects'].values())}, collections per generation"
                  f" {fig['gc_collections']}, collected {fig['gc_collected']}, gc.garbage {fig['garbage']}")
            cyclic = sorted(((n, name) for name, n in fig["cyclic"].items()), reverse=True)
            print(f"    cyclic garbage pending: {sum(fig['cyclic'].values())} objects: "
                  + ", ".join(f"{name} {n}" for n, name in cyclic[:8]))
            timers = sorted(((n, name, due) for name, (n, due) in fig["timers"].items()), reverse=True)
            print(f"    pending reactor timers: {sum(n for n, _, _ in timers)}: "
                  + ", ".join(f"{name} {n} (last due in {due:.0f} s)" for n, name, due in timers[:8]))
        ignore = [tracemalloc.Filter(False, tracemalloc.__file__),
                  tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
                  tracemalloc.Filter(False, "<unknown>")]
        labels = [label for label, _ in self.taken]
        pairs = [(a, b) for a, b in (("warm-up end", "end"), ("start", "all channels ended"))
                 if a in labels and b in labels]
        for first_label, label in pairs:
            i, j = labels.index(first_label), labels.index(label)
            old = tracemalloc.Snapshot.load(self.taken[i][1] + ".tracemalloc").filter_traces(ignore)
            new = tracemalloc.Snapshot.load(self.taken[j][1] + ".tracemalloc").filter_traces(ignore)
            fig = figures[j][1]
            print(f"  largest growths, '{first_label}' -> '{label}' (by allocation site):")
            for stat in new.compare_to(old, "lineno")[:12]:
                frame = stat.traceback[0]
                print(f"    {stat.size_diff / 1e3:+9.1f} kB {stat.count_diff:+7d} blocks"
                      f"  {os.path.relpath(frame.filename, ROOT)}:{frame.lineno}")
            print(f"  largest growths, '{first_label}' -> '{label}' (by call stack, innermost first):")
            for stat in new.compare_to(old, "traceback")[:5]:
                where = " < ".join(f"{os.path.relpath(f.filename, ROOT)}:{f.lineno}"
                                   for f in reversed(stat.traceback))
                print(f"    {stat.size_diff / 1e3:+9.1f} kB {stat.count_diff:+7d} blocks  {where}")
            before = figures[i][1]["objects"]
            grown = sorted(((n - before.get(name, 0), name) for name, n in fig["objects"].items()),
                           reverse=True)
            print("    object counts grown: " + ", ".join(f"{name} {d:+d}" for d, name in grown[:8] if d > 0))


# ------------------------------------------------------------- processes


class Child(protocol.ProcessProtocol):
    """A twistd process of ours: its output goes to a log file; stopped by its pid."""

    #: every child started, so an interrupted soak still ends them (SIGTERM, by pid)
    started: List["Child"] = []

    transport: Any

    def __init__(self, name: str, log_path: str) -> None:
        self.name = name
        self.log_path = log_path
        self.log: IO[bytes] = open(log_path, "wb")
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.pid = 0

    def start(self, *args: str, trace: Optional[MemoryTrace] = None,
              env_items: Sequence[str] = ()) -> "Child":
        argv = twistd_command(*args)
        path = [trace.directory] if trace is not None else []
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([*path, ROOT, os.environ.get("PYTHONPATH", "")]))
        if trace is not None:
            env.update(trace.env())
        for item in env_items:
            name, _, value = item.partition("=")
            env[name] = value
        transport = reactor.spawnProcess(self, argv[0], argv, env=env, path=ROOT)
        self.pid = int(transport.pid)
        Child.started.append(self)
        return self

    def outReceived(self, data: bytes) -> None:
        self.log.write(data)

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        self.log.close()
        self.ended.callback(None)

    @property
    def running(self) -> bool:
        return not self.ended.called

    async def stop(self) -> None:
        """SIGTERM to our pid, SIGKILL if it has not ended within 15 s."""
        if not self.running:
            return
        self.transport.signalProcess("TERM")
        deadline = now() + 15
        while self.running and now() < deadline:
            await sleep(0.1)
        if self.running:
            self.transport.signalProcess("KILL")
            await self.ended


async def wait_http(url: str, timeout: float = 30.0) -> None:
    """Poll C{url} until it answers anything over HTTP, bounded by C{timeout}."""
    deadline = now() + timeout
    while True:
        try:
            await fetch(reactor, url)
            return
        except Exception:
            if now() > deadline:
                raise RuntimeError(f"{url} did not answer within {timeout:g} s")
            await sleep(0.2)


# --------------------------------------------------------------- players


class Viewer(protocol.Protocol):
    """A player over raw TCP: one GET, reads and discards the body, counts it."""

    transport: Any

    def __init__(self, soak: "Soak", channel: "Channel", role: str) -> None:
        self.soak = soak
        self.channel = channel
        self.role = role  # "anchor" opens a churn channel; "churn" joins a running one
        self.status = b""
        self.bytes = 0
        self.header_done = False
        self.head = b""
        self.created_at = now()
        self.first_byte_at: Optional[float] = None
        self.leaving = False
        self.abort = False
        self.leave_call: Any = None
        self.gone = False

    def connectionMade(self) -> None:
        if self.leaving:
            self.transport.abortConnection()
            return
        self.transport.write(f"GET {self.channel.path} HTTP/1.1\r\nHost: soak\r\n"
                             f"User-Agent: acetwist-soak-{self.role}\r\n\r\n".encode())

    def dataReceived(self, data: bytes) -> None:
        if not self.header_done:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status = self.head.split(b"\r\n", 1)[0]
            data = self.head[end + 4:]
            self.header_done = True
            self.head = b""
        if data and self.first_byte_at is None:
            self.first_byte_at = now()
            self.soak.first_byte(self)
        self.bytes += len(data)

    def leave(self) -> None:
        if self.leaving:
            return
        self.leaving = True
        if self.leave_call is not None and self.leave_call.active():
            self.leave_call.cancel()
        if self.transport is not None:
            if self.abort:
                self.transport.abortConnection()
            else:
                self.transport.loseConnection()

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.soak.viewer_gone(self)


class Validator(Player):
    """A long-lived checking player (TSChecker on every byte) recording the longest gap between data."""

    def __init__(self, url: str) -> None:
        super().__init__(reactor, url, limit=1 << 62, user_agent="acetwist-soak-validator")
        self.last_data_at: Optional[float] = None
        self.longest_gap = 0.0
        self.gaps_over_1s = 0

    def _data(self, data: bytes) -> None:
        at = self.reactor.seconds()
        if self.last_data_at is not None:
            gap = at - self.last_data_at
            self.longest_gap = max(self.longest_gap, gap)
            self.gaps_over_1s += gap > 1.0
        self.last_data_at = at
        super()._data(data)

    def figures(self, until: float) -> Dict[str, Any]:
        c = self.checker
        ttfb = self.time_to_first_byte
        seconds = until - self.first_byte_at if self.first_byte_at is not None else 0.0
        return {
            "status": self.status,
            "mbytes": round(self.received / 1e6, 1),
            "mbit_s": round(8 * self.received / seconds / 1e6, 2) if seconds > 0 else 0.0,
            "ttfb_ms": round(1000 * ttfb, 1) if ttfb is not None else None,
            "aligned_at_start": c.aligned_at_start,
            "resyncs": c.resyncs,
            "skipped_bytes": c.skipped_bytes,
            "cc_errors": c.cc_errors,
            "longest_gap_s": round(max(self.longest_gap, until - (self.last_data_at or until)), 3),
            "gaps_over_1s": self.gaps_over_1s,
            "ended_early": self.end_reason,
        }


# -------------------------------------------------------------- the soak


class Channel:
    """One simulated content as the soak drives it: the steady one, or a churn one that starts and ends."""

    def __init__(self, content: Content, steady: bool) -> None:
        self.content = content
        self.path = f"/ace/getstream?id={content.content_id}"
        self.key = f"id:{content.content_id}"
        self.steady = steady
        self.on = steady
        self.viewers: Set[Viewer] = set()
        self.starts = 0
        self.start_failures = 0
        self.ends = 0
        self.end_timeouts = 0
        self.end_delays: List[float] = []


class Soak:
    """The audience: churn players, channel cycles, and what they saw."""

    def __init__(self, args: argparse.Namespace, proxy_port: int) -> None:
        self.args = args
        self.port = proxy_port
        self.url = f"http://127.0.0.1:{proxy_port}"
        self.rng = random.Random(args.seed)
        contents = numbered_contents(args.channels + 1)
        self.channels = [Channel(c, steady=i == 0) for i, c in enumerate(contents)]
        self.running = True
        self.churn_now = 0
        self.joins = 0
        self.joins_skipped = 0
        self.connect_failures = 0
        self.served = 0
        self.not_served: Dict[str, int] = {}
        self.dropped = 0  # ended by the proxy, not by us
        self.join_ttfb: List[float] = []
        self.start_ttfb: List[float] = []
        self.delivered = 0

    # viewers

    def join(self, channel: Channel, role: str) -> Viewer:
        viewer = Viewer(self, channel, role)
        viewer.abort = self.rng.random() < 0.5
        channel.viewers.add(viewer)
        if role == "churn":
            self.churn_now += 1
            self.joins += 1
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port, timeout=5)

        def failed(failure: Failure) -> None:
            self.connect_failures += 1
            self.viewer_gone(viewer)

        connectProtocol(endpoint, viewer).addErrback(failed)
        return viewer

    def first_byte(self, viewer: Viewer) -> None:
        assert viewer.first_byte_at is not None
        ttfb = viewer.first_byte_at - viewer.created_at
        if viewer.role == "anchor":
            viewer.channel.starts += 1
            self.start_ttfb.append(ttfb)
        else:
            self.join_ttfb.append(ttfb)

    def viewer_gone(self, viewer: Viewer) -> None:
        if viewer.gone:
            return
        viewer.gone = True
        viewer.channel.viewers.discard(viewer)
        if viewer.leave_call is not None and viewer.leave_call.active():
            viewer.leave_call.cancel()
        if viewer.role == "churn":
            self.churn_now -= 1
        self.delivered += viewer.bytes
        if viewer.first_byte_at is not None and viewer.status.startswith(b"HTTP/1.1 200"):
            self.served += 1
        else:
            why = viewer.status.decode(errors="replace")
            why = why or ("left before an answer" if viewer.leaving else "no answer")
            self.not_served[why] = self.not_served.get(why, 0) + 1
            if viewer.role == "anchor":
                viewer.channel.start_failures += 1
        if not viewer.leaving:
            self.dropped += 1

    # loops

    async def nap(self, seconds: float) -> None:
        """Sleep up to C{seconds}, in steps of at most 1 s, returning early once the soak stops."""
        deadline = now() + seconds
        while self.running and now() < deadline:
            await sleep(min(1.0, deadline - now()))

    async def status(self) -> Dict[str, Any]:
        code, _, body = await fetch(reactor, f"{self.url}/status")
        if code != 200:
            raise RuntimeError(f"/status answered {code}")
        return json.loads(body)

    async def wait_ended(self, channel: Channel, timeout: float) -> bool:
        deadline = now() + timeout
        while now() < deadline:
            try:
                document = await self.status()
                if not any(c["key"] == channel.key for c in document["channels"]):
                    return True
            except Exception:
                pass
            await sleep(0.5)
        return False

    async def cycle(self, channel: Channel) -> None:
        a = self.args
        await self.nap(self.rng.uniform(0, a.channel_on))  # stagger the channels
        while self.running:
            channel.on = True
            self.join(channel, "anchor")
            await self.nap(self.rng.uniform(0.5, 1.5) * a.channel_on)
            channel.on = False
            for viewer in list(channel.viewers):
                viewer.leave()
            if not self.running:
                return
            left_at = now()
            if await self.wait_ended(channel, a.grace + 30):
                channel.ends += 1
                channel.end_delays.append(now() - left_at)
            else:
                channel.end_timeouts += 1
            await self.nap(a.channel_off)

    async def churn(self) -> None:
        a = self.args
        while self.running:
            await self.nap(self.rng.expovariate(a.joins_per_minute / 60))
            if not self.running:
                return
            if self.churn_now >= a.max_clients:
                self.joins_skipped += 1
                continue
            channel = self.rng.choice([c for c in self.channels if c.on])
            viewer = self.join(channel, "churn")
            viewer.leave_call = reactor.callLater(self.rng.expovariate(1 / a.mean_stay), viewer.leave)

    def leave_all(self) -> None:
        for channel in self.channels:
            channel.on = False
            for viewer in list(channel.viewers):
                viewer.leave()


async def sample(pid: int, soak: Soak, t: float) -> Dict[str, Any]:
    row: Dict[str, Any] = {"t": round(t), "rss_mb": round(rss_mb(pid), 1), "fds": open_fds(pid),
                           "cpu_s": round(cpu_seconds(pid), 1), "load": round(os.getloadavg()[0], 2)}
    try:
        document = await soak.status()
        row["channels"] = document["totals"]["channels"]
        row["clients"] = document["totals"]["clients"]
        # what is neither a player's socket nor a channel's engine stream: flat unless something leaks
        row["other_fds"] = row["fds"] - row["clients"] - row["channels"]
    except Exception as e:
        row["channels"] = row["clients"] = row["other_fds"] = f"? ({e})"
    return row


async def run(args: argparse.Namespace) -> None:
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="acetwist-soak-")
    os.makedirs(log_dir, exist_ok=True)
    sim_port, proxy_port = free_port(), free_port()
    duration = args.minutes * 60
    warmup = args.warmup if args.warmup is not None else min(180.0, duration / 3)
    print(f"churn soak: {os.cpu_count()} cores, {args.minutes:g} min,"
          f" {args.channels} churn channels + 1 steady, {args.bitrate / 1e6:g} Mbit/s,"
          f" {args.joins_per_minute:g} joins/min, mean stay {args.mean_stay:g} s,"
          f" at most {args.max_clients} churn players, channels on {args.channel_on:g} s on average then off,"
          f" grace {args.grace:g} s, {args.validators} validating players, warm-up {warmup:g} s,"
          f" proxy options {' '.join(args.proxy_args) or '(none)'},"
          f" proxy environment {' '.join(args.proxy_env) or '(inherited)'}, logs in {log_dir}", flush=True)
    sim = Child("simulator", os.path.join(log_dir, "simulator.log")).start(
        "acestream-engine-sim", "--listen", f"tcp:{sim_port}:interface=127.0.0.1",
        "--bitrate", str(args.bitrate),
        "--prebuffer", "0.5", "--burst", "1", "--contents", str(args.channels + 1))
    trace = MemoryTrace(os.path.join(log_dir, "trace")) if args.trace_memory else None
    proxy = Child("proxy", os.path.join(log_dir, "proxy.log")).start(
        "acestream-proxy", "--listen", f"tcp:{proxy_port}:interface=127.0.0.1", "--engine",
        f"http://127.0.0.1:{sim_port}", "--grace", str(args.grace), *args.proxy_args, trace=trace,
        env_items=args.proxy_env)
    soak = Soak(args, proxy_port)
    validators: List[Validator] = []
    try:
        await wait_http(f"http://127.0.0.1:{sim_port}/")
        await wait_http(f"{soak.url}/healthz")
        idle = f"{rss_mb(proxy.pid):.1f} MB, {open_fds(proxy.pid)} fds ({fd_kinds(proxy.pid)})"
        print(f"simulator pid {sim.pid}, proxy pid {proxy.pid}; idle proxy: {idle}", flush=True)
        if trace is not None:
            await trace.snapshot(proxy, "start")
        steady = soak.channels[0]
        validators = [Validator(f"{soak.url}{steady.path}") for _ in range(args.validators)]
        for validator in validators:
            validator.start()
        loops = [defer.ensureDeferred(soak.cycle(c)) for c in soak.channels[1:]]
        loops.append(defer.ensureDeferred(soak.churn()))
        started = now()
        samples: List[Dict[str, Any]] = []
        print("samples: t (s), proxy RSS (MB), open fds, fds other than players' and engine streams,"
              " proxy CPU (s), channels, players, 1-min load", flush=True)
        traced_warm = False
        for k in range(int(duration // args.sample_every) + 1):
            await sleep(started + k * args.sample_every - now())
            if trace is not None and not traced_warm and now() - started >= warmup:
                traced_warm = True
                await trace.snapshot(proxy, "warm-up end")
            row = await sample(proxy.pid, soak, now() - started)
            samples.append(row)
            columns = ("t", "rss_mb", "fds", "other_fds", "cpu_s", "channels", "clients", "load")
            print("  " + "  ".join(str(row[n]) for n in columns), flush=True)
        await sleep(started + duration - now())
        ended_at = now()
        if trace is not None:
            await trace.snapshot(proxy, "end")
        soak.running = False
        validator_figures = [v.figures(reactor.seconds()) for v in validators]
        for v in validators:
            v.hang_up()
        soak.leave_all()
        await defer.DeferredList(loops)
        # every channel ends once its players are gone and the grace passes
        drain_deadline = now() + args.grace + 30
        channels_left: Any = "?"
        while now() < drain_deadline:
            try:
                channels_left = len((await soak.status())["channels"])
            except Exception:
                channels_left = "?"
            if channels_left == 0:
                break
            await sleep(0.5)
        await sleep(1.0)
        drained = {"after_s": round(now() - ended_at, 1), "channels": channels_left,
                   "rss_mb": round(rss_mb(proxy.pid), 1), "fds": open_fds(proxy.pid),
                   "fd_kinds": fd_kinds(proxy.pid),
                   "tcp": socket_peers(proxy.pid, {sim_port: "to-engine", proxy_port: "from-players"})}
        totals = (await soak.status())["totals"]
        if trace is not None:
            await trace.snapshot(proxy, "all channels ended")
    finally:
        for v in validators:
            v.hang_up()
        soak.running = False
        soak.leave_all()
        await proxy.stop()
        await sim.stop()
    report(args, soak, samples, warmup, drained, totals, validator_figures, proxy.log_path)
    if trace is not None:
        trace.report()


def report(args: argparse.Namespace, soak: Soak, samples: List[Dict[str, Any]], warmup: float,
           drained: Dict[str, Any], totals: Dict[str, Any], validators: List[Dict[str, Any]],
           proxy_log: str) -> None:
    after = [s for s in samples if s["t"] >= warmup]
    first = after[0] if after else samples[0]
    last = samples[-1]
    churn = soak.channels[1:]
    delays = [d for c in churn for d in c.end_delays]
    failures = sum(c.start_failures for c in churn)
    other_t = [s["t"] for s in after if isinstance(s["other_fds"], int)]
    others = [s["other_fds"] for s in after if isinstance(s["other_fds"], int)]
    timeouts = sum(c.end_timeouts for c in churn)
    with open(proxy_log, "rb") as f:
        log = f.read()
    print("summary:")
    lines = {
        "rss_mb": f"warm-up end (t={first['t']} s) {first['rss_mb']}, end (t={last['t']} s) {last['rss_mb']},"
                  f" min/max after warm-up {min(s['rss_mb'] for s in after or samples)}/"
                  f"{max(s['rss_mb'] for s in after or samples)},"
                  f" all channels ended ({drained['after_s']} s after the end, {drained['channels']} left)"
                  f" {drained['rss_mb']}",
        "rss_slope_mb_per_h": f"{slope_per_hour([(s['t'], s['rss_mb']) for s in after]):.2f}"
                              f" (least squares over {len(after)} samples, t >= {warmup:g} s)",
        "fds": f"warm-up end {first['fds']}, end {last['fds']}, all channels ended {drained['fds']}"
               f" ({drained['fd_kinds']}; TCP {drained['tcp']}),"
               f" slope {slope_per_hour([(s['t'], s['fds']) for s in after]):.2f} per hour; fds other than"
               f" players' and engine streams: min/max after warm-up {min(others, default='?')}/"
               f"{max(others, default='?')}, slope {slope_per_hour(list(zip(other_t, others))):.2f} per hour",
        "channel_starts": f"{sum(c.starts for c in churn)} (start failures {failures});"
                          f" proxy engine getstream calls {totals['engine_json_calls']}",
        "channel_ends": f"{sum(c.ends for c in churn)} seen leaving /status"
                        f" {percentile(delays, 0.5):.1f}/{max(delays, default=float('nan')):.1f} s"
                        f" (median/max) after their last player, {timeouts} not within grace + 30 s"
                        f" (the channels on at the end end in the drain); proxy engine stop calls"
                        f" {totals['engine_stop_calls']} (drain included)",
        "players": f"{soak.joins} churn joins ({soak.joins_skipped} skipped at the cap), served {soak.served}"
                   f" (first byte and 200), not served {soak.not_served or 0}, connect failures"
                   f" {soak.connect_failures}, dropped by the proxy {soak.dropped};"
                   f" delivered {soak.delivered / 1e9:.2f} GB; proxy requests {totals['requests']},"
                   f" errors {totals['errors'] or 0}",
        "time_to_first_byte_ms": f"joins p50/p99 {1000 * percentile(soak.join_ttfb, 0.5):.1f}/"
                                 f"{1000 * percentile(soak.join_ttfb, 0.99):.1f},"
                                 f" channel starts p50/p99 {1000 * percentile(soak.start_ttfb, 0.5):.0f}/"
                                 f"{1000 * percentile(soak.start_ttfb, 0.99):.0f}",
        "proxy_log": f"{log.count(b'Traceback')} tracebacks, {log.count(b'Unhandled')} 'Unhandled'"
                     f" ({proxy_log})",
    }
    for name, text in lines.items():
        print(f"  {name}: {text}")
    for i, v in enumerate(validators, 1):
        print(f"  validator {i}: " + "  ".join(f"{k}={val}" for k, val in v.items()))


def entry() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=15.0)
    parser.add_argument("--channels", type=int, default=4, help="churn channels (one steady channel more)")
    parser.add_argument("--bitrate", type=int, default=3_000_000)
    parser.add_argument("--joins-per-minute", type=float, default=60.0,
                        help="churn players joining, all channels together")
    parser.add_argument("--mean-stay", type=float, default=20.0, help="mean seconds a churn player stays")
    parser.add_argument("--max-clients", type=int, default=40, help="most churn players at once")
    parser.add_argument("--channel-on", type=float, default=60.0, help="mean seconds a churn channel runs")
    parser.add_argument("--channel-off", type=float, default=3.0,
                        help="seconds between a channel's end and its restart")
    parser.add_argument("--grace", type=float, default=2.0, help="the proxy's --grace")
    parser.add_argument("--validators", type=int, default=3)
    parser.add_argument("--sample-every", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds excluded from the slopes (default: 180, or a third of a shorter run)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--proxy-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the proxy only (e.g. MALLOC_ARENA_MAX=2)")
    parser.add_argument("--trace-memory", action="store_true",
                        help="trace the proxy's allocations (tracemalloc; slower), print where its heap grew")
    parser.add_argument("--log-dir", default=None,
                        help="where the simulator's and proxy's output go (default: a temp dir)")
    parser.add_argument("proxy_args", nargs="*", help="extra proxy options after --")
    args = parser.parse_args()
    outcome: List[Any] = []

    def done(result: Any) -> None:
        outcome.append(result)
        reactor.stop()

    def interrupted() -> None:
        for child in Child.started:
            if child.running:
                child.transport.signalProcess("TERM")

    reactor.addSystemEventTrigger("before", "shutdown", interrupted)
    reactor.callWhenRunning(lambda: defer.ensureDeferred(run(args)).addBoth(done))
    reactor.run()
    if outcome and isinstance(outcome[0], Failure):
        outcome[0].printTraceback(file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    entry()
