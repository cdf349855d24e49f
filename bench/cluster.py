"""
Two-worker benchmark: a real redis-server, the simulator and two proxy
workers as their own processes; players split evenly across the workers on
one channel (the first worker owns it, the second follows the mirror).

Prints Redis traffic per channel (bytes in and out per second, from INFO),
CPU seconds of each worker per GB it delivered, each worker's peak RSS, and
per-player min/median throughput on each worker. It reports; it asserts
nothing.

    .venv/bin/python bench/cluster.py --clients 100 --bitrate 8000000 --seconds 20
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from acetwist.sim.contents import DEFAULT_CONTENTS  # noqa: E402
from acetwist.testing import twistd_command  # noqa: E402
from bench.fanout import (Client, connect, cpu_seconds, free_port, peak_rss_mb, run_to_end, sleep,  # noqa: E402
                          stop_processes)
from tests.redis_server import RedisServer  # noqa: E402


def spawn(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.Popen(twistd_command(*args), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def redis_bytes(server: RedisServer) -> Dict[str, int]:
    info = server.command("INFO", "stats")
    text = info.decode() if isinstance(info, bytes) else str(info)
    values = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {"in": int(values["total_net_input_bytes"]), "out": int(values["total_net_output_bytes"])}


async def run(clients: int, bitrate: int, seconds: float) -> Dict[str, Any]:
    redis = RedisServer()
    redis.start()
    sim_port = free_port()
    ports = [free_port(), free_port()]
    sim = spawn("acestream-engine-sim", "--listen", f"tcp:{sim_port}:interface=127.0.0.1",
                "--bitrate", str(bitrate), "--prebuffer", "0.5", "--burst", "1")
    workers = [
        spawn("acestream-proxy", "--listen", f"tcp:{port}:interface=127.0.0.1", "--engine",
              f"http://127.0.0.1:{sim_port}", "--redis", redis.url, "--worker-id", f"w{i + 1}", "--grace", "2",
              "--max-connections-per-ip", "0")  # every player comes from 127.0.0.1
        for i, port in enumerate(ports)
    ]
    try:
        await sleep(3.0)
        path = f"/ace/getstream?id={DEFAULT_CONTENTS[0].content_id}"
        per_worker: List[List[Client]] = [[], []]
        per_worker[0].append(await connect(ports[0], path))  # w1 becomes the owner
        await sleep(1.0)
        for i in range(1, clients):
            side = i % 2
            per_worker[side].append(await connect(ports[side], path))
        await sleep(3.0)
        marks = [[c.bytes for c in group] for group in per_worker]
        cpu0 = [cpu_seconds(w.pid) for w in workers]
        redis0 = redis_bytes(redis)
        started = time.monotonic()
        await sleep(seconds)
        elapsed = time.monotonic() - started
        cpu = [cpu_seconds(w.pid) - c for w, c in zip(workers, cpu0)]
        redis1 = redis_bytes(redis)
        result: Dict[str, Any] = {
            "clients": clients,
            "bitrate_mbit": bitrate / 1e6,
            "seconds": round(elapsed, 1),
            "redis_in_mb_s_per_channel": round((redis1["in"] - redis0["in"]) / elapsed / 1e6, 2),
            "redis_out_mb_s_per_channel": round((redis1["out"] - redis0["out"]) / elapsed / 1e6, 2),
        }
        for i, (group, mark) in enumerate(zip(per_worker, marks)):
            delivered = [c.bytes - m for c, m in zip(group, mark)]
            rates = sorted(8 * d / elapsed / 1e6 for d in delivered)
            gb = sum(delivered) / 1e9
            name = f"w{i + 1}"
            result[f"{name}_players"] = len(group)
            result[f"{name}_cpu_s"] = round(cpu[i], 2)
            result[f"{name}_cpu_s_per_gb"] = round(cpu[i] / gb, 3) if gb else None
            result[f"{name}_peak_rss_mb"] = round(peak_rss_mb(workers[i].pid), 1)
            result[f"{name}_client_min_mbit"] = round(rates[0], 2)
            result[f"{name}_client_median_mbit"] = round(statistics.median(rates), 2)
        for group in per_worker:
            for c in group:
                c.transport.loseConnection()
        return result
    finally:
        stop_processes(workers + [sim])
        redis.cleanup()


def entry() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--bitrate", type=int, default=8_000_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    result = run_to_end(lambda: run(args.clients, args.bitrate, args.seconds))
    print(f"cluster benchmark: {os.cpu_count()} cores, two workers, one channel")
    print("  ".join(f"{k}={v}" for k, v in (result or {}).items()))


if __name__ == "__main__":
    entry()
