"""
Fuzz probe: sends every route malformed, oversized, duplicated and non-UTF-8
input (methods, paths, query parameters, headers, bodies, HTTP versions, and
seeded random mutations of them) over raw sockets to a proxy and an engine
simulator that it starts itself on loopback as twistd processes.

Prints the count of answers per status (and per kind of input), the engine
calls the invalid input caused (simulator counters and the proxy's own
count), the lines of the proxy's log that hold a traceback, and the proxy's
HTTP counters. Then checks that the proxy still serves a real stream. Exits
1 if any invalid input got a 5xx, reached the engine, or logged a traceback.
Reproducible: the same --seed sends the same requests. It reports; the test
suite asserts nothing about it.

    .venv/bin/python bench/fuzz.py --seed 1 --mutations 400
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from acetwist.sim.contents import DEFAULT_CONTENTS  # noqa: E402
from acetwist.testing import free_port, twistd_command  # noqa: E402

#: a valid content id the simulator serves (used only where no engine call can follow: HEAD, bad methods, bodies)
LIVE = DEFAULT_CONTENTS[0].content_id
#: never 40 hex characters, whatever a single mutation does to it
BAD_ID = "z" * 40
ROUTES = ["/ace/getstream", "/ace/status", "/status", "/metrics", "/healthz"]

Case = Tuple[str, bytes]  # (kind of input, the raw bytes sent)


def request(method: str = "GET", target: str = "/healthz", headers: Optional[List[Tuple[str, str]]] = None,
            version: str = "HTTP/1.1", body: bytes = b"", raw_headers: bytes = b"") -> bytes:
    lines = [f"{method} {target} {version}".encode("latin-1")]
    for name, value in headers if headers is not None else [("Host", "proxy")]:
        lines.append(f"{name}: {value}".encode("latin-1"))
    head = b"\r\n".join(lines) + b"\r\n" + raw_headers + b"\r\n"
    return head + body


def stream(query: str, method: str = "GET", **kw: Any) -> bytes:
    return request(method, f"/ace/getstream?{query}", **kw)


# ------------------------------------------------------------------ the corpus


def methods() -> List[Case]:
    out = []
    for route in ROUTES:
        target = f"{route}?id={LIVE}" if route.startswith("/ace/") else route
        for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT", "FOO", "get", "G@T",
                       "M" * 300, "PRI"):
            out.append(("method", request(method, target)))
        out.append(("method", request("HEAD", target)))  # allowed, and never calls the engine
    out.append(("method", b" /healthz HTTP/1.1\r\nHost: p\r\n\r\n"))
    return out


def paths() -> List[Case]:
    targets = ["/", "/nowhere", "/ace", "/ace/", "/ace/getstream/extra?id=" + LIVE, "//status", "/ace//status",
               "/status/", "/%ff%fe", "/%c3%28", "/%00", "/%2e%2e/%2e%2e/etc/passwd", "/ace/%67etstream?id=" + BAD_ID,
               "/ace//getstream?id=" + BAD_ID, "/ace/getstream%ff?id=" + BAD_ID, "/status%ff", "/" + "a" * 8000,
               "/" + "/" * 2000, "http://proxy/status", "http://proxy/ace/getstream?id=" + BAD_ID, "*",
               "/ace/status?id=%ff", "/metrics/%ff", "/healthz?%ff=%fe", "/ace/getstream/%ff%fe"]
    return [("path", request("GET", t)) for t in targets]


def queries() -> List[Case]:
    ih = "ab" * 20
    out = [stream(q) for q in (
        "", "id=", "id=%20", "id=" + LIVE[:39], "id=" + LIVE + "0", "id=" + BAD_ID, "id=" + LIVE.replace("a", "g"),
        f"id={LIVE}&id={'1' * 40}", f"id={LIVE}&infohash={ih}", f"id={LIVE}&content_id={'2' * 40}",
        f"content_id={LIVE}&infohash={ih}", "id=%ff%fe", "id=%00" + LIVE[1:], "id=" + "f" * 10_000,
        "infohash=" + "z" * 40, "infohash=", f"id[]={LIVE}", f"ID={LIVE}", f"id={LIVE[:20]}%00{LIVE[21:]}",
        "&".join(f"p{i}={i}" for i in range(1000)), f"id={LIVE}%ff", f"id=+{LIVE}+x", f"%ff={LIVE}",
        f"id={BAD_ID}&transcode_audio=%ff&_idx=" + "9" * 5000, f"id={LIVE};id={'4' * 40}", f"id={LIVE}&id={LIVE}x",
        "token=%ff&id=" + BAD_ID, "id=" + LIVE.upper() + "0",
    )]
    out += [request("GET", f"/ace/status?{q}") for q in (
        "id=" + BAD_ID, f"id={LIVE}&infohash={ih}", "id=%ff", "infohash=" + "y" * 40, f"id={LIVE}&id={'3' * 40}")]
    return [("query", raw) for raw in out]


def headers() -> List[Case]:
    bad = f"/ace/getstream?id={BAD_ID}"
    head = f"/ace/getstream?id={LIVE}"
    out = [
        request("GET", "/status", headers=[]),  # no Host
        request("GET", "/status", headers=[("Host", "a"), ("Host", "b")]),
        request("GET", "/status", headers=[("Host", "pr\xffxy")]),
        request("HEAD", head, headers=[("Host", "\xff\xfe")]),
        request("GET", "/status", headers=[("Host", "p"), ("X-Big", "a" * 20_000)]),
        request("GET", "/status", headers=[("Host", "p")] + [(f"X-{i}", "v") for i in range(600)]),
        request("GET", "/status", raw_headers=b"NoColonHere\r\n"),
        request("GET", "/status", raw_headers=b"X-Nul: a\x00b\r\n"),
        request("GET", "/status", raw_headers=b"X-Fold: a\r\n  continued\r\n"),
        request("GET", "/status", raw_headers=b": empty-name\r\n"),
        request("GET", "/status", raw_headers=b"Bad Name: x\r\n"),
        request("GET", "/status", headers=[("Host", "p"), ("Authorization", "Bearer \xff\xfe")]),
        request("GET", "/status", headers=[("Host", "p"), ("Authorization", "Basic Zm9vOmJhcg==")]),
        request("GET", "/status", headers=[("Host", "p"), ("Cookie", "a=\xff; =; ;;b")]),
        request("GET", bad, headers=[("Host", "p"), ("Range", "bytes=0-1,5-")]),
        request("GET", bad, headers=[("Host", "p"), ("X-Forwarded-For", "\xff, ::1, 999.1.1.1")]),
        request("HEAD", head, headers=[("Host", "p"), ("User-Agent", "\xff" * 3000)]),
        request("GET", "/status", headers=[("Host", "p"), ("Connection", "Upgrade, HTTP2-Settings"),
                                           ("Upgrade", "h2c"), ("HTTP2-Settings", "AAMAAABkAAQAAP__")]),
        request("GET", "/status", headers=[("Host", "p"), ("Connection", "upgrade"), ("Upgrade", "websocket")]),
        request("GET", "/status", headers=[("Host", "p"), ("Content-Length", "1"), ("Content-Length", "2")]),
        request("GET", "/status", headers=[("Host", "p"), ("Content-Length", "abc")]),
        request("GET", "/status", headers=[("Host", "p"), ("Content-Length", "-1")]),
        request("GET", "/status", headers=[("Host", "p"), ("Transfer-Encoding", "gzip")]),
        request("GET", "/status", headers=[("Host", "p"), ("Transfer-Encoding", "chunked"),
                                           ("Content-Length", "5")], body=b"0\r\n\r\n"),
        request("GET", "/status", headers=[("Host", "p"), ("Expect", "100-continue"), ("Content-Length", "10")]),
        request("GET", "/status", headers=[("Host", "p"), ("Connection", "close, " * 500)]),
    ]
    return [("header", raw) for raw in out]


def bodies() -> List[Case]:
    out = []
    for route in ROUTES + ["/nowhere"]:
        target = f"{route}?id={LIVE}" if route.startswith("/ace/") else route
        out.append(request("POST", target, headers=[("Host", "p"), ("Content-Length", "10000000")], body=b"x" * 65536))
        out.append(request("GET", target, headers=[("Host", "p"), ("Content-Length", "11")], body=b"hello world"))
        out.append(request("PUT", target, headers=[("Host", "p"), ("Transfer-Encoding", "chunked")],
                           body=b"5\r\nhello\r\n0\r\n\r\n"))
    out.append(request("POST", "/status", headers=[("Host", "p"), ("Content-Length", "0")]))
    out.append(request("POST", "/status", headers=[("Host", "p"), ("Transfer-Encoding", "chunked")],
                       body=b"zz\r\nnot hex\r\n"))
    return [("body", raw) for raw in out]


def versions() -> List[Case]:
    out = [request("GET", "/status", version=v) for v in ("HTTP/1.0", "HTTP/2.0", "HTTP/1.1x", "http/1.1",
                                                          "HTTP/9.9", "FOO/1.1", "HTTP/1")]
    out += [b"GET /status\r\n\r\n", b"GET\r\n\r\n", b"\r\n\r\n", b"GET /status HTTP/1.1\nHost: p\n\n",
            b"GET /status HTTP/1.1\rHost: p\r\r", b"GET  /status  HTTP/1.1\r\nHost: p\r\n\r\n",
            b"GET /st\xffus HTTP/1.1\r\nHost: p\r\n\r\n", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"GET /status HTTP/1.1\r\nHost: p\r\n",  # head never ends
            bytes(range(256)) * 4]
    return [("version", raw) for raw in out]


def mutations(rng: random.Random, count: int) -> List[Case]:
    """Seeded random damage to requests that are invalid to begin with (no mutation can make a valid stream id)."""
    seeds = [request("GET", f"/ace/getstream?id={BAD_ID}&transcode_audio=1"), request("POST", "/status"),
             request("GET", "/ace/status?id=" + BAD_ID), request("HEAD", "/metrics"), request("DELETE", "/healthz"),
             request("GET", "/ace/getstream?infohash=" + BAD_ID, headers=[("Host", "p"), ("User-Agent", "VLC")])]
    out: List[Case] = []
    for _ in range(count):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            if not data:
                break
            op = rng.randrange(6)
            pos = rng.randrange(len(data))
            if op == 0:
                data[pos] = rng.randrange(256)
            elif op == 1:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
            elif op == 2:
                del data[pos:pos + rng.randint(1, 16)]
            elif op == 3:  # duplicate a slice (duplicated headers and parameters)
                end = min(len(data), pos + rng.randint(1, 64))
                data[end:end] = data[pos:end]
            elif op == 4:
                data[pos:pos] = rng.choice([b"%ff", b"%00", b"&id=", b"\r\n", b"\r\nContent-Length: 9\r\n", b"//"])
            else:
                data = data[:pos]  # truncated
        out.append(("mutation", bytes(data)))
    return out


# ------------------------------------------------------------------ sending


def exchange(raw: bytes, port: int, timeout: float) -> str:
    """Send C{raw}; the answer's status code, or C{closed} (no answer) / C{silent} (no answer within C{timeout})."""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(raw)
        except OSError:
            pass  # the proxy closed while we were sending (an over-size request); read what it said
        received = b""
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                chunk = s.recv(65536)
            except socket.timeout:
                break
            except OSError:
                break
            if not chunk:
                break
            received += chunk
            if b"\r\n" in received:
                break
    if received.startswith(b"HTTP/1.") and len(received) >= 12 and received[9:12].isdigit():
        return received[9:12].decode()
    if received:
        return "garbage"
    return "closed" if time.monotonic() < deadline else "silent"


def get_json(port: int, path: str) -> Dict[str, Any]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    if b"Transfer-Encoding: chunked" in head:
        body = dechunk(body)
    return json.loads(body)


def dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, body = out + body[:size], body[size + 2:]
    return out


def stream_bytes(port: int, content_id: str, limit: int) -> Tuple[str, int]:
    """A real player: the status and how many bytes it read (up to C{limit})."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(f"GET /ace/getstream?id={content_id} HTTP/1.1\r\nHost: fuzz\r\n\r\n".encode())
        data = b""
        while len(data) < limit:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data[9:12].decode(errors="replace"), len(data)


# ------------------------------------------------------------------ processes


def twistd(log: Any, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.Popen(twistd_command(*args), env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_listening(port: int, process: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {seconds} s")


def stop(processes: List[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


# ------------------------------------------------------------------ main


def run(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    corpus = methods() + paths() + queries() + headers() + bodies() + versions() + mutations(rng, args.mutations)
    sim_port, proxy_port = free_port(), free_port()
    log = tempfile.NamedTemporaryFile(prefix="acetwist-fuzz-", suffix=".log", delete=False)
    processes: List[subprocess.Popen] = []
    started = time.monotonic()
    try:
        processes.append(twistd(log, "acestream-engine-sim", "--listen", f"tcp:{sim_port}:interface=127.0.0.1",
                                "--prebuffer", "0.2", "--burst", "1"))
        wait_listening(sim_port, processes[0])
        processes.append(twistd(log, "acestream-proxy", "--listen", f"tcp:{proxy_port}:interface=127.0.0.1",
                                "--engine", f"http://127.0.0.1:{sim_port}", "--header-timeout",
                                str(args.header_timeout), "--grace", "1"))
        wait_listening(proxy_port, processes[1])
        before_sim = get_json(sim_port, "/_sim/counters")
        before_proxy = get_json(proxy_port, "/status")["totals"]["engine_json_calls"]

        timeout = args.header_timeout + 3
        by_status: Dict[str, int] = collections.Counter()
        by_kind: Dict[str, Dict[str, int]] = collections.defaultdict(collections.Counter)
        fivexx: List[Tuple[str, bytes]] = []
        shown: List[Tuple[str, bytes]] = []
        send: Callable[[Case], str] = lambda case: exchange(case[1], proxy_port, timeout)
        with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
            for (kind, raw), status in zip(corpus, pool.map(send, corpus)):
                by_status[status] += 1
                by_kind[kind][status] += 1
                if status.startswith("5"):
                    fivexx.append((status, raw[:200]))
                if status in args.show:
                    shown.append((f"{kind} -> {status}", raw[:300]))
        fuzz_seconds = time.monotonic() - started

        after_sim = get_json(sim_port, "/_sim/counters")
        status_doc = get_json(proxy_port, "/status")
        sim_calls = sum(after_sim["json_calls"].values()) - sum(before_sim["json_calls"].values())
        proxy_calls = status_doc["totals"]["engine_json_calls"] - before_proxy
        healthy, streamed = stream_bytes(proxy_port, LIVE, 500_000)
    finally:
        stop(processes)
        log.close()
    with open(log.name, "rb") as f:
        proxy_log = f.read().decode("utf-8", "replace")
    tracebacks = [line for line in proxy_log.splitlines() if "Traceback" in line or "Unhandled" in line]

    print(f"fuzz probe: seed {args.seed}, {len(corpus)} requests ({args.mutations} mutations), "
          f"concurrency {args.concurrency}, header timeout {args.header_timeout:g} s, {fuzz_seconds:.1f} s")
    print("answers by status:  " + "  ".join(f"{k}: {v}" for k, v in sorted(by_status.items())))
    for kind, counts in by_kind.items():
        print(f"  {kind:<9} " + "  ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    for kind, raw in shown:
        print(f"  [{kind}] {raw!r}")
    print(f"5xx answers: {len(fivexx)}")
    for status, raw in fivexx[:10]:
        print(f"  {status} <- {raw!r}")
    print(f"engine calls caused: simulator json_calls {sim_calls}, proxy engine_json_calls {proxy_calls}")
    print(f"tracebacks in the proxy's log: {len(tracebacks)}")
    print(f"proxy http counters: {json.dumps(status_doc.get('http', {}))}")
    print(f"afterwards a player got {healthy} and {streamed} bytes")
    ok = not fivexx and sim_calls == 0 and proxy_calls == 0 and not tracebacks and healthy == "200"
    print("OK" if ok else f"PROBLEMS FOUND (the proxy's log: {log.name})")
    if ok:
        os.unlink(log.name)
    return 0 if ok else 1


def entry() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mutations", type=int, default=400, help="random mutations sent after the fixed corpus")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight (under the per-IP cap)")
    parser.add_argument("--header-timeout", type=float, default=2.0, help="the proxy's --header-timeout")
    parser.add_argument("--show", nargs="*", default=[], metavar="OUTCOME",
                        help="print the requests that got these outcomes (e.g. 200 closed silent)")
    sys.exit(run(parser.parse_args()))


if __name__ == "__main__":
    entry()
