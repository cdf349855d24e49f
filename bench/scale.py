"""
Scale curve: how the proxy's cost grows with players and with channels.

Prints one table: for N players on one channel (50 / 200 / 400 by default)
and for C channels x 5 players (1 / 10 / 40), the proxy's CPU seconds per GB
delivered, its peak RSS, the slowest (and median) player's rate, and join
time-to-first-byte p50 / p99, with how busy the machine's cores were.

Each case starts its own simulator and proxy (twistd processes, started as
bench/fanout.py starts them) and one process of cheap players
(bench/readers.py: one epoll loop, no Twisted), so the players' reading
neither shares the proxy's interpreter nor costs much CPU. The CPU columns
are measured over the same window from /proc: the proxy's share of one core,
and the simulator's and players' together. It reports; it asserts nothing.

    .venv/bin/python bench/scale.py                       # the whole table, about 2-3 minutes
    .venv/bin/python bench/scale.py --players 200 --channels 10 --seconds 20
    .venv/bin/python bench/scale.py -- --block-size 128KiB   # proxy options after --
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import time
from typing import Any, Dict, Optional

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from acetwist.sim.contents import numbered_contents  # noqa: E402
from bench.fanout import free_port, peak_rss_mb, stop_processes, twistd  # noqa: E402

READERS = os.path.join(ROOT, "bench", "readers.py")
#: how long a case may take to come up (proxy listening, engine probed healthy)
READY_DEADLINE = 30.0


def get_json(port: int, path: str) -> Optional[Dict[str, Any]]:
    """GET a JSON document from 127.0.0.1:port (None while it cannot be had)."""
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
        finally:
            connection.close()
    except OSError:
        return None
    if response.status != 200:
        return None
    document = json.loads(body)
    return document if isinstance(document, dict) else None


def wait_ready(proxy_port: int, process: subprocess.Popen) -> None:
    """Poll the proxy's /status until its engine is probed healthy (bounded by READY_DEADLINE)."""
    deadline = time.monotonic() + READY_DEADLINE
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the proxy exited with {process.returncode}")
        status = get_json(proxy_port, "/status")
        engines = (status or {}).get("engines") or []
        if engines and all(engine.get("healthy") for engine in engines):
            return
        time.sleep(0.1)
    raise RuntimeError(f"the proxy was not ready within {READY_DEADLINE:g} s")


def commit() -> str:
    """This tree's commit, with +dirty when it has uncommitted changes."""
    try:
        head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def run_case(channels: int, per_channel: int, args: argparse.Namespace) -> Dict[str, Any]:
    contents = numbered_contents(max(3, channels))
    sim_port, proxy_port = free_port(), free_port()
    sim = twistd("acestream-engine-sim", "--listen", f"tcp:{sim_port}:interface=127.0.0.1",
                 "--bitrate", str(args.bitrate), "--prebuffer", "0.5", "--burst", "1",
                 "--contents", str(len(contents)))
    proxy = twistd("acestream-proxy", "--listen", f"tcp:{proxy_port}:interface=127.0.0.1",
                   "--engine", f"http://127.0.0.1:{sim_port}", "--grace", "2",
                   "--max-connections-per-ip", "0",  # every player comes from 127.0.0.1
                   *args.proxy_args)
    try:
        wait_ready(proxy_port, proxy)
        paths = [f"/ace/getstream?id={c.content_id}" for c in contents[:channels] for _ in range(per_channel)]
        spec = {"port": proxy_port, "paths": paths, "warmup": args.warmup, "seconds": args.seconds,
                "joins": args.joins, "join_path": paths[0], "watch": {"proxy": proxy.pid, "sim": sim.pid}}
        limit = args.warmup + args.seconds + args.joins * 6 + 30
        done = subprocess.run([sys.executable, READERS, json.dumps(spec)], capture_output=True, text=True,
                              timeout=limit)
        if done.returncode != 0:
            raise RuntimeError(f"the players failed: {done.stderr[-2000:]}")
        result: Dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        result["peak_rss_mb"] = peak_rss_mb(proxy.pid)
        result["channels"] = channels
        result["per_channel"] = per_channel
        return result
    finally:
        stop_processes((proxy, sim))


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _ms(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.1f}"


def row(result: Dict[str, Any]) -> str:
    gb = result["delivered_bytes"] / 1e9
    seconds = result["seconds"]
    cpu = result["cpu"]
    per_gb = f"{cpu['proxy'] / gb:.2f}" if gb else "-"
    notes = []
    if result["ended_players"]:
        notes.append(f"{result['ended_players']} players cut")
    if result["failed_joins"]:
        notes.append(f"{result['failed_joins']} joins failed")
    if any(not s.endswith(" 200 OK") for s in result["statuses"]):
        notes.append("statuses " + ", ".join(result["statuses"]))
    cells = [
        f"{result['channels']} x {result['per_channel']}",
        f"{gb:.2f}",
        per_gb,
        f"{100 * cpu['proxy'] / seconds:.0f} %",
        f"{result['peak_rss_mb']:.1f} MB",
        f"{result['min_mbit']:.2f} / {result['median_mbit']:.2f}",
        f"{_ms(result['join_ttfb_p50_ms'])} / {_ms(result['join_ttfb_p99_ms'])}",
        f"{100 * cpu['sim'] / seconds:.0f} % + {100 * cpu['readers'] / seconds:.0f} %",
        "; ".join(notes) or "",
    ]
    return "| " + " | ".join(cells) + " |"


HEADER = ("| channels x players | GB delivered | proxy CPU-s per GB | proxy CPU (of one core) | proxy peak RSS "
          "| slowest / median player (Mbit/s) | join time-to-first-byte p50 / p99 (ms) "
          "| simulator + players CPU | notes |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--players", type=int, nargs="*", default=[50, 200, 400],
                        help="players on one channel, one case each")
    parser.add_argument("--channels", type=int, nargs="*", default=[1, 10, 40],
                        help="channels with --per-channel players each, one case each")
    parser.add_argument("--per-channel", type=int, default=5)
    parser.add_argument("--bitrate", type=int, default=8_000_000)
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of reading before the measured window")
    parser.add_argument("--seconds", type=float, default=10.0, help="the measured window")
    parser.add_argument("--joins", type=int, default=20, help="joiners, one after another, after the window")
    parser.add_argument("proxy_args", nargs="*", help="extra proxy options after --, e.g. -- --block-size 128KiB")
    args = parser.parse_args()
    cases = [(1, n) for n in args.players] + [(c, args.per_channel) for c in args.channels]
    print(f"scale curve: commit {commit()}, {os.cpu_count()} cores, {args.bitrate / 1e6:g} Mbit/s per channel, "
          f"{args.seconds:g} s measured after {args.warmup:g} s, {args.joins} joins per case, "
          f"proxy options {' '.join(args.proxy_args) or '(defaults)'}; load average {_load()} before", flush=True)
    rows = []
    for channels, per_channel in cases:
        print(f"  running {channels} x {per_channel} ...", file=sys.stderr, flush=True)
        rows.append(row(run_case(channels, per_channel, args)))
    print(HEADER)
    print("\n".join(rows))
    print(f"load average {_load()} after (other work on the machine shows here)", flush=True)


if __name__ == "__main__":
    main()
