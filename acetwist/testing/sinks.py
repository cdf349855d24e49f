"""A player's sink that records what the channel asks of it, and TS that tests feed channels."""

from __future__ import annotations

from typing import Any, Callable, List, Optional

from twisted.internet.defer import Deferred
from zope.interface import implementer

from acetwist import ts
from acetwist.interfaces import ISink

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


@implementer(ISink)
class FakeSink:
    """Records what the channel asks of a player's sink; L{leave} is the player hanging up."""

    def __init__(self) -> None:
        self.events: List[str] = []
        self.error: Optional[Exception] = None
        self.started = False
        self.bytes_sent = 0
        self.skips = 0
        self.lag_bytes = 0
        self.paused = False
        self.done: "Deferred[None]" = Deferred()
        self.on_close: Optional[Callable[[Any, str], None]] = None
        self.ring: Any = None

    def start(self) -> None:
        self.events.append("start")

    def wake(self) -> None:
        self.started = True
        self.events.append("wake")

    def fail(self, error: Exception) -> None:
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
