"""
Cheap players for bench/scale.py, in a process of their own: one epoll loop
over raw sockets, each read a C{recv_into} of one reused buffer (no
allocation per read, no Twisted), so hundreds of players at full rate cost
this process little and never share an interpreter with the proxy.

Run by bench/scale.py with one JSON argument:

    {"port": 8080, "paths": ["/ace/getstream?id=...", ...], "warmup": 3, "seconds": 10,
     "joins": 20, "join_path": "/ace/getstream?id=...", "watch": {"proxy": pid, "sim": pid}}

It connects every player at once, lets them read for C{warmup} seconds,
measures C{seconds} (bytes each player received, and the CPU seconds of the
watched processes and of itself over exactly that window), then opens
C{joins} joiners one after another on C{join_path} while the players go on
reading, and prints one JSON line with the figures. It reports; it asserts
nothing. Loopback only.
"""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import sys
import time
from typing import Any, Dict, List, Optional

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
READ_SIZE = 1 << 20
#: a joiner that has no body byte after this long counts as failed
JOIN_DEADLINE = 5.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (same reading as bench/fanout.py's)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Conn:
    """One player connection: its request, its header, the body bytes it got."""

    __slots__ = ("sock", "request", "sent", "head", "status", "body", "first_byte_at", "started_at", "closed")

    def __init__(self, port: int, path: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)
        self.request = f"GET {path} HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench-scale\r\n\r\n".encode()
        self.sent = False
        self.head = b""
        self.status = b""
        self.body = 0
        self.first_byte_at: Optional[float] = None
        self.closed = False
        self.started_at = time.monotonic()
        code = self.sock.connect_ex(("127.0.0.1", port))
        if code not in (0, errno.EINPROGRESS):
            raise OSError(code, os.strerror(code))

    def fileno(self) -> int:
        return self.sock.fileno()

    def took(self, view: memoryview, count: int) -> None:
        """Account C{count} bytes just read into C{view}: the header first, then body bytes."""
        if not self.status:
            self.head += bytes(view[:count])
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.status = self.head.split(b"\r\n", 1)[0]
            count = len(self.head) - end - 4
            self.head = b""
        if count and self.first_byte_at is None:
            self.first_byte_at = time.monotonic()
        self.body += count


class Loop:
    """The epoll loop every connection is served from."""

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.conns: Dict[int, Conn] = {}
        self.buffer = bytearray(READ_SIZE)
        self.view = memoryview(self.buffer)
        self.ended = 0

    def add(self, conn: Conn) -> Conn:
        self.conns[conn.fileno()] = conn
        self.epoll.register(conn.fileno(), select.EPOLLOUT | select.EPOLLIN)
        return conn

    def close(self, conn: Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        fd = conn.fileno()
        self.epoll.unregister(fd)
        del self.conns[fd]
        conn.sock.close()

    def run_until(self, deadline: float, done: Any = None) -> None:
        """Serve every connection until C{deadline} (monotonic), or until C{done()} is true."""
        while True:
            now = time.monotonic()
            if now >= deadline or (done is not None and done()):
                return
            for fd, events in self.epoll.poll(min(0.05, deadline - now)):
                conn = self.conns.get(fd)
                if conn is None:
                    continue
                if events & select.EPOLLOUT and not conn.sent:
                    try:
                        conn.sock.send(conn.request)  # a few dozen bytes: always fits
                    except OSError:
                        self.ended += 1
                        self.close(conn)
                        continue
                    conn.sent = True
                    self.epoll.modify(fd, select.EPOLLIN)
                    continue
                if events & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                    try:
                        count = conn.sock.recv_into(self.buffer, READ_SIZE)
                    except BlockingIOError:
                        continue
                    except OSError:
                        count = 0
                    if not count:
                        self.ended += 1
                        self.close(conn)
                        continue
                    conn.took(self.view, count)


def percentile(values: List[float], fraction: float) -> Optional[float]:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(spec: Dict[str, Any]) -> Dict[str, Any]:
    port = int(spec["port"])
    watch: Dict[str, int] = {k: int(v) for k, v in spec.get("watch", {}).items()}
    loop = Loop()
    players = [loop.add(Conn(port, path)) for path in spec["paths"]]
    loop.run_until(time.monotonic() + float(spec["warmup"]))
    before = [p.body for p in players]
    cpu_before = {name: cpu_seconds(pid) for name, pid in watch.items()}
    own_before = sum(os.times()[:2])
    started = time.monotonic()
    loop.run_until(started + float(spec["seconds"]))
    elapsed = time.monotonic() - started
    cpu = {name: cpu_seconds(pid) - cpu_before[name] for name, pid in watch.items()}
    cpu["readers"] = sum(os.times()[:2]) - own_before
    delivered = [p.body - b for p, b in zip(players, before)]
    ended_in_window = loop.ended
    ttfb: List[float] = []
    failed_joins = 0
    for _ in range(int(spec.get("joins", 0))):
        joiner = loop.add(Conn(port, spec["join_path"]))
        loop.run_until(time.monotonic() + JOIN_DEADLINE, lambda: joiner.first_byte_at is not None or joiner.closed)
        if joiner.first_byte_at is not None:
            ttfb.append(joiner.first_byte_at - joiner.started_at)
        else:
            failed_joins += 1
        loop.close(joiner)
        loop.run_until(time.monotonic() + 0.05)
    statuses = sorted({p.status.decode("latin-1") for p in players})
    for conn in list(loop.conns.values()):
        loop.close(conn)
    rates = [8 * d / elapsed / 1e6 for d in delivered]
    return {
        "players": len(players),
        "seconds": elapsed,
        "delivered_bytes": sum(delivered),
        "cpu": cpu,
        "min_mbit": min(rates) if rates else None,
        "median_mbit": percentile(rates, 0.5),
        "ended_players": ended_in_window,
        "statuses": statuses,
        "join_ttfb_p50_ms": None if not ttfb else 1000 * (percentile(ttfb, 0.5) or 0.0),
        "join_ttfb_p99_ms": None if not ttfb else 1000 * (percentile(ttfb, 0.99) or 0.0),
        "joins": len(ttfb),
        "failed_joins": failed_joins,
    }


if __name__ == "__main__":
    print(json.dumps(run(json.loads(sys.argv[1]))), flush=True)
