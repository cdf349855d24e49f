# -*- test-case-name: tests.test_sink -*-
"""
One player connection's view of a channel: an C{IPushProducer} registered on
the player's request that reads the channel's L{TSRing} through a cursor.

The sink holds no copy of the stream. Its cursor is the seq of the next block
to send, so what it "queues" while Twisted has it paused is just its lag in
the ring, which the ring bounds and which L{ClientSink} caps further with
C{max_lag_bytes} by skipping ahead to the newest keyframe. Nothing a sink does
slows the ring or any other sink.

Lifecycle: L{ClientSink.start} registers the producer and positions the cursor
at the newest keyframe at least C{join_backlog} seconds old (or the oldest
kept; or waits for the first one), so that a player's demuxer gets that much
stream at link speed and starts at once; the channel calls
L{ClientSink.wake} after every new block; the route returns
L{ClientSink.done}, which fires C{None} on L{ClientSink.finish}, errbacks on
L{ClientSink.fail} before the first byte, and whose cancellation (Klein's
reaction to a lost client) closes the sink. Every way out goes through
L{ClientSink.close}, which runs once and calls C{on_close} once.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Protocol, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from acetwist.bodywriter import BodyWriter
from acetwist.interfaces import ISink
from acetwist.ring import TSRing

_MISSING = object()

#: most blocks in one write (a block can be a single packet at low bitrates;
#: a write's buffers go to one C{sendmsg})
MAX_BLOCKS_PER_WRITE = 128


class PlayerRequest(Protocol):
    """
    What a sink needs of the player's request: C{twisted.web.server.Request}
    (Klein's request) has it, C{IRequest} alone does not (no producer, no
    C{notifyFinish}). A C{channel} of None (read with C{getattr}) means the
    player has gone; a C{transport} is aborted when present.
    """

    def write(self, data: bytes) -> None: ...

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...

    def notifyFinish(self) -> Deferred[None]: ...


def _ignore(sink: "ClientSink", reason: str) -> None:
    """The default C{on_close}: nobody to tell."""


@implementer(IPushProducer, ISink)
class ClientSink:
    """
    Streams a channel's ring to one player with per-client backpressure.

    @ivar done: fires None on a clean end, errbacks before the first byte on
        L{fail}; cancelling it closes the sink.
    @ivar bytes_sent: body bytes written to the player (L{BodyWriter}).
    @ivar skips: times the sink fell too far behind and jumped to the newest keyframe.
    @ivar paused: Twisted asked us to pause (the player's socket is full).
    @ivar connected_at: clock time the sink was made.
    @ivar first_byte_at: clock time of the first write, or None.
    @ivar closed: the sink has ended; C{close_reason} says why.
    """

    kind = "ts"
    log = Logger()

    def __init__(
        self,
        request: PlayerRequest,
        ring: TSRing,
        clock: IReactorTime,
        *,
        max_lag_bytes: int = 16 * 1024 * 1024,
        stall_timeout: float = 20.0,
        write_batch: int = 256 * 1024,
        join_backlog: float = 0.0,
        on_close: Callable[["ClientSink", str], None] = _ignore,
        direct_send: bool = True,
        write_delay: float = 0.0,
    ) -> None:
        self.request = request
        self.ring = ring
        self.clock = clock
        self.max_lag_bytes = max_lag_bytes
        self.stall_timeout = stall_timeout
        self.write_batch = write_batch
        self.join_backlog = join_backlog
        self.write_delay = write_delay
        self.on_close = on_close
        self.writer = BodyWriter(request, direct=direct_send)
        self.done: Deferred[None] = Deferred(self._cancelled)

        self.bytes_sent = 0
        self.skips = 0
        self.paused = False
        self.connected_at = clock.seconds()
        self.first_byte_at: Optional[float] = None
        self.closed = False
        self.close_reason: Optional[str] = None

        self._cursor: Optional[int] = None  # next seq to send; None until start()
        self._want_keyframe = True  # the next thing sent must be a keyframe block with its psi
        # what the sink was placed behind the newest block (its backlog), less what it has caught up
        # since: not lag (the lag bound counts only what comes on top of it)
        self._allowance = 0
        self._segment: Optional[int] = None  # segment of the last block sent
        self._registered = False
        self._watching = False
        self._stall: Optional[IDelayedCall] = None
        self._flush: Optional[IDelayedCall] = None  # writes what --write-delay held once it is due
        self._draining = False

    # ------------------------------------------------------------ stats

    @property
    def started(self) -> bool:
        """The player has received at least one byte."""
        return self.first_byte_at is not None

    @property
    def lag_bytes(self) -> int:
        """Bytes in the ring between the cursor and the newest block."""
        if self._cursor is None or self.closed:
            return 0
        return self.ring.bytes_from(self._cursor)

    # ------------------------------------------------------------ the channel's side

    def start(self) -> None:
        """
        Register as the request's streaming producer and begin at the newest
        keyframe block at least C{join_backlog} old (see L{_position}), or at
        the first keyframe block still to come. Calling it again (after
        L{rebind}) re-positions without registering twice.
        """
        if self.closed:
            return
        if getattr(self.request, "channel", _MISSING) is None:
            self.close("gone")  # the player left before we began
            return
        if not self._registered:
            self.request.registerProducer(self, True)
            self._registered = True
        if not self._watching:
            self._watching = True
            self.request.notifyFinish().addErrback(self._connection_lost)
        self._position()
        self._drain()

    def rebind(self, ring: TSRing, on_close: Callable[["ClientSink", str], None]) -> None:
        """
        Follow another channel's ring from now on, reporting the close there:
        at its newest keyframe once the player has data (no backlog twice),
        else as a new player.
        """
        self.ring = ring
        self.on_close = on_close
        if self._cursor is not None:
            self._position()

    def wake(self) -> None:
        """A new block is in the ring: send what we can, or keep the lag bounded while paused."""
        if self.closed or self._cursor is None:
            return
        if self.paused:
            self._check_lag()
        else:
            self._drain()

    def finish(self) -> None:
        """End cleanly: unregister and fire C{done} (the route's caller then finishes the response)."""
        if self.closed:
            return
        if not self.paused:
            self._drain(hold=False)  # what a held write was waiting for
            if self.closed:
                return
        self.close("finished")
        self.done.callback(None)

    def fail(self, error: Exception) -> None:
        """
        End with C{error}: before the first byte C{done} errbacks with it (an
        HTTP error for the player); after it the connection is aborted, since
        nothing may be written into a TS body but TS.
        """
        if self.closed:
            return
        if self.started:
            self.log.info("aborting a player mid-stream: {error}", error=error)
            self.abort("failed")
            return
        self.close("failed")
        self.done.errback(error)

    def abort(self, reason: str) -> None:
        """Drop the player's connection now (no lingering flush) and close."""
        if self.closed:
            return
        transport = getattr(self.request, "transport", None)
        if transport is not None:
            transport.abortConnection()
        self.close(reason)

    def close(self, reason: str) -> None:
        """Stop for good: cancel the stall timer, unregister, and call C{on_close} (all once)."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._cancel_stall()
        if self._flush is not None:
            if self._flush.active():
                self._flush.cancel()
            self._flush = None
        self._unregister()
        self.log.info(
            "player sink closed ({reason}): {bytes_sent} bytes, {skips} skips",
            reason=reason,
            bytes_sent=self.bytes_sent,
            skips=self.skips,
        )
        try:
            self.on_close(self, reason)
        except Exception:
            self.log.failure("on_close raised")

    # ------------------------------------------------------------ IPushProducer

    def pauseProducing(self) -> None:
        """The player's socket is full: stop writing and start the stall clock."""
        if self.closed:
            return
        self.paused = True
        if self._stall is None:
            self._stall = self.clock.callLater(self.stall_timeout, self._stalled)

    def resumeProducing(self) -> None:
        """The player's socket drained: catch up from the cursor."""
        if self.closed:
            return
        self.paused = False
        self._cancel_stall()
        self._drain()

    def stopProducing(self) -> None:
        """The connection is gone."""
        self.close("gone")

    # ------------------------------------------------------------ internals

    def _position(self) -> None:
        """
        A player without data starts C{join_backlog} back (L{TSRing.keyframe_back});
        one with data (a rebind) at the newest keyframe, since the backlog would
        repeat what it has had. A backlog (what lies between the cursor and the
        newest block then) is the player's allowance, not lag.
        """
        ring = self.ring
        backlog = self.join_backlog > 0 and not self.started
        if backlog:
            keyframe = ring.keyframe_back(self.clock.seconds() - self.join_backlog)
        else:
            keyframe = ring.latest_keyframe()
        self._cursor = keyframe.seq if keyframe is not None else ring.next_seq
        self._want_keyframe = True
        self._allowance = ring.bytes_from(self._cursor) if backlog else 0

    def _check_lag(self) -> None:
        """
        Past the lag bound (on top of the backlog still being caught up), or
        evicted, jump to the newest keyframe (a counted skip once the player
        has data).
        """
        assert self._cursor is not None
        ring = self.ring
        cursor = self._cursor
        evicted = cursor < ring.first_seq
        lag = ring.bytes_from(cursor)
        if lag < self._allowance:
            self._allowance = lag  # caught up that far: falling back again is lag
        if not evicted and lag <= self.max_lag_bytes + self._allowance:
            return
        if self._want_keyframe and ring.next_keyframe(cursor) is None:
            return  # waiting for a keyframe anyway: everything before it is skipped, nothing is lost
        keyframe = ring.latest_keyframe()
        if keyframe is not None and keyframe.seq > cursor:
            target = keyframe.seq
        elif evicted:
            target = ring.next_seq  # nothing to restart from yet: wait for the next keyframe
        else:
            return  # behind, but no newer keyframe to jump to
        lost = lag - ring.bytes_from(target)
        self._cursor = target
        self._want_keyframe = True
        self._allowance = 0
        if self.started:
            self.skips += 1
            self.log.info(
                "player fell {lost} bytes behind; skipping to seq {seq} (skip {skips})",
                lost=lost,
                seq=target,
                skips=self.skips,
            )

    def _drain(self, hold: bool = True) -> None:
        """Write batches from the cursor to the newest block while unpaused (unless L{_hold_for} says to wait)."""
        if self._draining or self._cursor is None:
            return
        self._draining = True
        try:
            while not self.paused and not self.closed:
                self._check_lag()
                if hold:
                    wait = self._hold_for()
                    if wait > 0:
                        # normally the next block writes what is due; the timer is for a quiet upstream,
                        # late enough not to cut the steady state's writes short
                        self._flush_later(wait + self.write_delay)
                        break
                parts, size = self._collect()
                if not parts:
                    break
                self.bytes_sent += size
                if self.first_byte_at is None:
                    self.first_byte_at = self.clock.seconds()
                # may call pauseProducing (or even stopProducing) before it returns
                self.writer.write(parts)
        finally:
            self._draining = False

    def _hold_for(self) -> float:
        """
        How long a player that has its start and is at the live edge waits
        for a fuller write (0: write now): until the oldest block it has not
        been sent is C{write_delay} old, or half a C{write_batch} is waiting
        (fewer, larger writes cost less CPU per byte). Joiners, skips and
        catching up are never held, nor players whose writes go through
        Twisted's transport (TLS, C{--direct-send off}), for which large
        writes cost more.
        """
        if self.write_delay <= 0 or self._want_keyframe or not self.writer.direct_ready:
            return 0.0
        assert self._cursor is not None
        block = self.ring.get(self._cursor)
        if block is None or self.ring.bytes_from(self._cursor) >= self.write_batch // 2:
            return 0.0
        return max(0.0, self.write_delay - (self.clock.seconds() - block.created))

    def _flush_later(self, wait: float) -> None:
        """Write what is held after C{wait} even if no block comes (the upstream went quiet): at most 2 x C{write_delay}."""
        if self._flush is None:
            self._flush = self.clock.callLater(wait, self._flush_due)

    def _flush_due(self) -> None:
        self._flush = None
        self._drain()

    def _collect(self) -> Tuple[List[bytes], int]:
        """
        Take consecutive blocks from the cursor, up to C{write_batch} bytes (at
        least one block) and L{MAX_BLOCKS_PER_WRITE} blocks: their PSI and data
        as they are in the ring (no copy), and their size.
        """
        ring = self.ring
        assert self._cursor is not None
        cursor, want, segment = self._cursor, self._want_keyframe, self._segment
        end = ring.next_seq
        parts: List[bytes] = []
        size = blocks = 0
        while cursor < end:
            if want:
                block = ring.next_keyframe(cursor)
                if block is None:
                    cursor = end  # wait for the next keyframe block to arrive
                    break
                length = len(block.psi) + len(block.data)
            else:
                candidate = ring.get(cursor)
                if candidate is None:
                    break
                block = candidate
                if block.segment != segment:
                    want = True  # the upstream was replaced: restart cleanly at its first keyframe
                    continue
                length = len(block.data)
            if parts and (size + length > self.write_batch or blocks >= MAX_BLOCKS_PER_WRITE):
                break
            if want:
                if block.psi:
                    parts.append(block.psi)
                want = False
            parts.append(block.data)
            size += length
            blocks += 1
            segment = block.segment
            cursor = block.seq + 1
        self._cursor, self._want_keyframe, self._segment = cursor, want, segment
        return parts, size

    def _stalled(self) -> None:
        self._stall = None
        self.log.info("player made no progress for {timeout} s; aborting", timeout=self.stall_timeout)
        self.abort("stalled")

    def _cancel_stall(self) -> None:
        if self._stall is not None:
            if self._stall.active():
                self._stall.cancel()
            self._stall = None

    def _unregister(self) -> None:
        if not self._registered:
            return
        self._registered = False
        if getattr(self.request, "channel", _MISSING) is None:
            return  # disconnected: the request has no channel to unregister from
        self.request.unregisterProducer()

    def _connection_lost(self, failure: Failure) -> None:
        self.close("gone")

    def _cancelled(self, d: Deferred[None]) -> None:
        self.close("cancelled")
