"""
Test doubles for channel unit tests: sinks and a coordinator driven by hand.
The engine fakes live in L{acetwist.testing} and are re-exported here.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from acetwist import ts
from acetwist.interfaces import ICoordinator, Lease
from acetwist.testing import FakeEngine, FakeReader
from acetwist.upstream import EngineError

__all__ = ["FakeCoordinator", "FakeEngine", "FakeFollower", "FakeReader", "FakeSink", "gop"]

VIDEO, AUDIO, PMT = 0x100, 0x101, 0x1000


def gop(index: int, packets: int = 40) -> bytes:
    """One GOP of valid TS whose counters continue from GOP C{index - 1}."""
    out = [ts.make_pat(PMT, cc=index & 0x0F), ts.make_pmt(PMT, VIDEO, [(0x1B, VIDEO), (0x0F, AUDIO)], cc=index & 0x0F)]
    out.append(ts.make_packet(VIDEO, b"\0" * 100, cc=(index * 16) & 0x0F, pusi=True, random_access=True,
                              pcr=index * 27_000_000))
    for i in range(15):
        out.append(ts.make_packet(VIDEO, b"\x11" * 184, cc=(i + 1) & 0x0F))
    for i in range(16):
        out.append(ts.make_packet(AUDIO, b"\x22" * 184, cc=i))
    return b"".join(out)


class FakeSink:
    """Records what the channel asks of a player's sink."""

    def __init__(self) -> None:
        self.events: List[str] = []
        self.error: Optional[EngineError] = None
        self.started = False
        self.bytes_sent = 0
        self.skips = 0
        self.lag_bytes = 0
        self.paused = False
        self.on_close: Optional[Callable[[Any, str], None]] = None
        self.ring: Any = None

    def start(self) -> None:
        self.events.append("start")

    def wake(self) -> None:
        self.started = True
        self.events.append("wake")

    def fail(self, error: EngineError) -> None:
        self.error = error
        self.events.append("fail")
        if self.on_close:
            self.on_close(self, "failed")

    def finish(self) -> None:
        self.events.append("finish")
        if self.on_close:
            self.on_close(self, "finished")

    def rebind(self, ring: Any, on_close: Callable[[Any, str], None]) -> None:
        self.ring = ring
        self.on_close = on_close
        self.events.append("rebind")

    def leave(self) -> None:
        assert self.on_close is not None
        self.on_close(self, "gone")


class FakeFollower:
    def __init__(self, on_block: Callable[[Any, int], None]) -> None:
        self.on_block = on_block
        self.stopped = False

    def stop(self) -> None:
        self.stopped = True


@implementer(ICoordinator)
class FakeCoordinator:
    """
    A programmable coordinator: C{other_owner} simulates another worker
    holding the lease, C{renew_ok} whether renewals succeed, C{cluster_clients}
    the players other workers report. It records what the channel tells it.
    """

    worker_id = "test-worker"
    reclaim_margin = 2.5

    def __init__(self) -> None:
        self.epoch = 0
        self.other_owner: Optional[Lease] = None
        self.renew_ok = True
        self.cluster_clients = 0
        self.claims = 0
        self.published: List[Any] = []
        self.joined: List[Any] = []
        self.progress: List[Any] = []
        self.left: List[Any] = []
        self.released: List[str] = []
        self.gone: List[str] = []
        self.followers: List[FakeFollower] = []
        self.metadata: List[Any] = []

    def start(self) -> None:
        pass

    def stop(self) -> Deferred[None]:
        return succeed(None)

    def claim(self, key: str) -> Deferred[Any]:
        self.claims += 1
        if self.other_owner is not None:
            return succeed(None)
        self.epoch += 1
        return succeed(Lease(self.worker_id, self.epoch))

    def renew(self, key: str, lease: Any) -> Deferred[bool]:
        return succeed(self.renew_ok and self.other_owner is None)

    def release(self, key: str, lease: Any) -> Deferred[None]:
        self.released.append(key)
        return succeed(None)

    def owner(self, key: str) -> Deferred[Any]:
        return succeed(self.other_owner)

    def publish(self, key: str, lease: Any, block: Any) -> None:
        self.published.append((lease.epoch, block))

    def follow(self, key: str, on_block: Callable[[Any, int], None], from_start: bool = False) -> FakeFollower:
        follower = FakeFollower(on_block)
        self.followers.append(follower)
        return follower

    def client_joined(self, record: Any) -> None:
        self.joined.append(record)

    def client_progress(self, record: Any) -> None:
        self.progress.append(record)

    def client_left(self, record: Any) -> None:
        self.left.append(record)

    def client_count(self, key: str) -> Deferred[int]:
        return succeed(self.cluster_clients)

    def update_stream(self, key: str, fields: Any) -> None:
        self.metadata.append(fields)

    def stream_gone(self, key: str) -> None:
        self.gone.append(key)

    def cluster_view(self) -> Deferred[Any]:
        return succeed({"workers": [self.worker_id], "streams": {}})
