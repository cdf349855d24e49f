# -*- test-case-name: tests.test_sim_stream -*-
"""
Sending a session's TS to one reader: a push producer that writes the burst
at link speed while the transport accepts it, then paces in real time on a
timer, and applies the stream faults (cut, gap, silence, stall, misaligned).

The sender writes whole packets from the shared GOP template, at most
C{CHUNK_PACKETS} per write, so Python never holds more than one chunk beyond
what the transport buffers, and the transport pauses us when it is full.
"""

from __future__ import annotations

import math
from typing import Dict, Optional, Protocol, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from acetwist import ts
from acetwist.sim.engine import Engine
from acetwist.sim.session import Session
from acetwist.sim.tsgen import junk

CHUNK_PACKETS = 348  # 65,424 bytes per write


class Sink(Protocol):
    """Where a sender writes: an HTTP response in production, a fake in tests."""

    def register_producer(self, producer: IPushProducer) -> None: ...

    def write(self, data: bytes) -> None: ...

    def finish(self, close: bool) -> None:
        """End the body cleanly; with C{close}, also close the connection."""

    def abort(self) -> None:
        """Drop the connection with a reset."""


@implementer(IPushProducer)
class StreamSender:
    """
    One reader's stream. A progressive sender starts at the GOP that lies
    C{burst} seconds behind the session's live edge and never ends by itself;
    a segment sender (C{progressive=False}) sends packets C{first} to C{end}
    as fast as the reader takes them.

    @ivar done: fires with the reason the stream ended (C{"finished"},
        C{"cut"}, C{"lost"}, or a session end reason).
    """

    log = Logger()

    def __init__(self, engine: Engine, session: Session, sink: Sink, *, progressive: bool = True,
                 first: int = 0, end: Optional[int] = None) -> None:
        self.engine = engine
        self.session = session
        self.content = session.content
        self.sink = sink
        self.progressive = progressive
        self.template = engine.template
        self.clock = engine.clock
        self.position = first
        self.end = end
        self.sent = 0
        self.done: Deferred[str] = Deferred()
        self.finished = False
        self.paused = False
        self._pumping = False
        self._tick: Optional[IDelayedCall] = None
        self._prefix = b""
        self._skip = 0
        self._silence_seen: Optional[int] = None
        self._cut_base: Dict[int, Tuple[int, float]] = {}

    # -- start

    def start(self) -> None:
        """Send the response headers and begin streaming."""
        now = self.clock.seconds()
        if self.progressive:
            media = self.session.media_seconds(now)
            first_gop = max(0, math.floor((media - self.engine.config.burst) / self.template.gop + 1e-9))
            self.position = first_gop * self.template.packets
            misaligned = self.engine.fault("misaligned", self.content)
            if misaligned is not None:
                self.engine.trigger(misaligned)
                if misaligned.params["mode"] == "junk":
                    self._prefix = junk(misaligned.params["bytes"])
                else:
                    self._skip = misaligned.params["bytes"]
            if self.session.first_byte_at is None:
                self.session.first_byte_at = now
        self.sink.register_producer(self)
        self.sink.write(b"")  # the headers go out now
        self._pump()

    # -- IPushProducer

    def pauseProducing(self) -> None:
        self.paused = True
        self._cancel_tick()

    def resumeProducing(self) -> None:
        if self.finished:
            return
        self.paused = False
        self._pump()

    def stopProducing(self) -> None:
        self.connection_lost()

    # -- ending

    def connection_lost(self) -> None:
        """The reader went away."""
        self._done("lost")

    def session_ended(self, reason: str) -> None:
        """Stopped or expired: end the body cleanly. Superseded, forgotten or shut down: reset."""
        if self.finished:
            return
        if reason in ("stopped", "expired"):
            self._done(reason)
            self.sink.finish(close=True)
        else:
            self._done(reason)
            self.sink.abort()

    def _done(self, reason: str) -> None:
        if self.finished:
            return
        self.finished = True
        self._cancel_tick()
        if not self.done.called:
            self.done.callback(reason)

    # -- pumping

    def _cancel_tick(self) -> None:
        if self._tick is not None and self._tick.active():
            self._tick.cancel()
        self._tick = None

    def _schedule(self) -> None:
        if not self.finished and not self.paused and self._tick is None:
            self._tick = self.clock.callLater(self.engine.config.tick, self._on_tick)

    def _on_tick(self) -> None:
        self._tick = None
        self._pump()

    def _pump(self) -> None:
        if self._pumping or self.finished:
            return
        self._pumping = True
        try:
            self._pump_once()
        finally:
            self._pumping = False

    def _pump_once(self) -> None:
        self._cancel_tick()
        if self.paused or self.finished:
            return
        now = self.clock.seconds()
        if self.progressive:
            if self._cut_by_time(now):
                return
            self._maybe_gap(now)
            if self._held():
                self._schedule()
                return
            limit = self.template.packets_at(self.session.media_seconds(now))
        else:
            assert self.end is not None
            limit = self.end
        while not self.paused and not self.finished and self.position < limit:
            count = min(limit - self.position, CHUNK_PACKETS)
            data = self.template.read(self.position, count)
            self.position += count
            if self._prefix:
                data, self._prefix = self._prefix + data, b""
            elif self._skip:
                data, self._skip = data[self._skip :], 0
            left = self._cut_bytes_left(now) if self.progressive else None
            if left is not None and len(data) >= left:
                self._send(data[:left])
                self._cut(now)
                return
            self._send(data)
        if self.finished:
            return
        if not self.progressive and self.position >= limit:
            self._done("finished")
            self.sink.finish(close=False)
            return
        self._schedule()

    def _send(self, data: bytes) -> None:
        if not data:
            return
        self.sent += len(data)
        self.engine.counters.add("bytes_sent" if self.progressive else "hls_bytes_sent", len(data))
        self.sink.write(data)

    # -- faults

    def _held(self) -> bool:
        if self.engine.stalled(self.content):
            return True
        silence = self.engine.fault("silence", self.content)
        if silence is None:
            return False
        if self._silence_seen != silence.id:
            self._silence_seen = silence.id
            self.engine.trigger(silence)
        return True

    def _cut_fault(self, now: float):  # type: ignore[no-untyped-def]
        fault = self.engine.fault("cut", self.content)
        if fault is not None and fault.id not in self._cut_base:
            self._cut_base[fault.id] = (self.sent, now)
        return fault

    def _cut_bytes_left(self, now: float) -> Optional[int]:
        fault = self._cut_fault(now)
        if fault is None or "after_bytes" not in fault.params:
            return None
        return max(0, self._cut_base[fault.id][0] + fault.params["after_bytes"] - self.sent)

    def _cut_by_time(self, now: float) -> bool:
        fault = self._cut_fault(now)
        if fault is None:
            return False
        after_ms = fault.params.get("after_ms")
        left = self._cut_bytes_left(now)
        if (after_ms is not None and now - self._cut_base[fault.id][1] >= after_ms / 1000 - 1e-9) or left == 0:
            self._cut(now)
            return True
        return False

    def _cut(self, now: float) -> None:
        fault = self.engine.fault("cut", self.content)
        how = "reset"
        if fault is not None:
            how = fault.params["how"]
            self.engine.trigger(fault)
        self.log.info("cut: {content} after {sent} bytes ({how})", content=self.content.name, sent=self.sent, how=how)
        self._done("cut")
        if how == "close":
            self.sink.finish(close=True)
        else:
            self.sink.abort()

    def _maybe_gap(self, now: float) -> None:
        fault = self.engine.fault("gap", self.content)
        if fault is None or fault.id in self.session.gaps_done:
            return
        since = max(fault.created, self.session.first_byte_at if self.session.first_byte_at is not None else now)
        if now >= since + fault.params["after_ms"] / 1000 - 1e-9:
            self.session.gaps_done.add(fault.id)
            self.engine.trigger(fault)
            self.log.info("gap: {content} starves for {ms} ms", content=self.content.name, ms=fault.params["ms"])
            self.session.start_gap(fault.params["ms"] / 1000)


assert CHUNK_PACKETS * ts.PACKET_SIZE <= 65536
