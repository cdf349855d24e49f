"""
Fast-start benchmark: how soon a real decoder can use a live channel it joins.

The simulator and the proxy run as their own twistd processes; one player
keeps the channel live. Then, one at a time, ffmpeg (the imageio-ffmpeg
wheel's, see acetwist/testing/decoder.py) joins the channel:

- probing as ffprobe does (``ffmpeg -i URL`` until the stream info is
  printed): the time until it has found h264 and aac;
- decoding (``ffmpeg -i URL -t 2 -vf showinfo -f null -``): the time until
  its first decoded video frame, and the decode errors it reported.

Times are from ffmpeg's spawn. Each --join-backlog given is measured on a
fresh simulator and proxy. It reports; it asserts nothing.

    .venv/bin/python bench/faststart.py --backlogs 0 5 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from typing import Any, Dict, List, Optional

from twisted.internet import reactor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from acetwist.sim.contents import DEFAULT_CONTENTS  # noqa: E402
from acetwist.testing import free_port, twistd_command  # noqa: E402
from acetwist.testing.decoder import DecodeResult, decode, decoder_unavailable, probe  # noqa: E402
from bench.fanout import Client, connect, run_to_end, sleep, stop_processes  # noqa: E402


def twistd(*args: str) -> subprocess.Popen:
    return subprocess.Popen(twistd_command(*args), env=dict(os.environ, PYTHONPATH=ROOT),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def summary(values: List[Optional[float]]) -> str:
    """median / max in seconds, or what is missing."""
    got = [v for v in values if v is not None]
    if not got:
        return "none"
    text = f"{statistics.median(got):.2f} / {max(got):.2f} s"
    return text if len(got) == len(values) else f"{text} ({len(values) - len(got)} missing)"


async def run_one(backlog: float, args: argparse.Namespace) -> Dict[str, Any]:
    sim_port, proxy_port = free_port(), free_port()
    sim = twistd("acestream-engine-sim", "--listen", f"tcp:{sim_port}:interface=127.0.0.1",
                 "--bitrate", str(args.bitrate), "--gop", str(args.gop), "--prebuffer", "0.5", "--burst", "1")
    proxy = twistd("acestream-proxy", "--listen", f"tcp:{proxy_port}:interface=127.0.0.1",
                   "--engine", f"http://127.0.0.1:{sim_port}", "--grace", "2", "--max-connections-per-ip", "0",
                   "--join-backlog", f"{backlog:g}", *args.proxy_args)
    keeper: Optional[Client] = None
    try:
        await sleep(3.0)
        path = f"/ace/getstream?id={DEFAULT_CONTENTS[0].content_id}"
        url = f"http://127.0.0.1:{proxy_port}{path}"
        keeper = await connect(proxy_port, path)
        await sleep(args.warmup)  # the ring holds more than the backlog and a GOP
        probes: List[DecodeResult] = []
        decodes: List[DecodeResult] = []
        for _ in range(args.rounds):
            probes.append(await probe(reactor, url, deadline=30))
            await sleep(0.3)
            decodes.append(await decode(reactor, url, 2, deadline=30))
            await sleep(0.3)
        return {
            "join_backlog_s": f"{backlog:g}",
            "probe_h264_aac": summary([r.stream_info_after if r.found_h264_and_aac else None for r in probes]),
            "first_frame": summary([r.first_frame_after for r in decodes]),
            "decode_errors": sum(len(r.errors) for r in probes + decodes),
            "frames_per_2s_decode": min(r.frames for r in decodes),
        }
    finally:
        if keeper is not None and keeper.transport is not None:
            keeper.transport.loseConnection()
        stop_processes((proxy, sim))


async def main(args: argparse.Namespace) -> None:
    unavailable = decoder_unavailable()
    if unavailable:
        raise SystemExit(unavailable)
    print(f"fast-start benchmark: {os.cpu_count()} cores, bitrate {args.bitrate / 1e6:g} Mbit/s, GOP {args.gop:g} s,"
          f" {args.rounds} probes and {args.rounds} decodes per backlog (median / max, from ffmpeg's spawn),"
          f" proxy options {' '.join(args.proxy_args) or '(defaults)'}")
    for backlog in args.backlogs:
        result = await run_one(backlog, args)
        print("  ".join(f"{k}={v}" for k, v in result.items()), flush=True)


def entry() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlogs", type=float, nargs="+", default=[0.0, 5.0], help="--join-backlog values")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bitrate", type=int, default=4_000_000)
    parser.add_argument("--gop", type=float, default=1.0, help="the simulator's GOP in seconds")
    parser.add_argument("--warmup", type=float, default=8.0, help="seconds the channel runs before the first join")
    parser.add_argument("proxy_args", nargs="*", help="extra proxy options after --, e.g. -- --ring-seconds 20")
    args = parser.parse_args()
    run_to_end(lambda: main(args))


if __name__ == "__main__":
    entry()
