# -*- test-case-name: tests.test_hls_viewer -*-
"""
L{HlsViewer}: an HLS viewer as one of a channel's players.

An HLS viewer has no connection to follow: it is a run of playlist and
segment requests from one address and user agent. It keeps the channel alive
while it fetches, counts the bytes it was served, and has left once
C{idle_timeout} passes without a request (none pending); then the channel's
normal grace applies. Requests that must wait (the first playlist before the
channel has a segment, a segment not cut yet) wait on the viewer, which the
channel wakes after every block and fails when the channel ends.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional, Tuple

import attr
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from acetwist.errors import EngineError, ErrorKind
from acetwist.interfaces import ISink


@attr.s(auto_attribs=True, eq=False)
class _Waiter:
    ready: Callable[[], bool]
    deferred: "Deferred[None]"
    deadline: IDelayedCall


@implementer(ISink)
class HlsViewer:
    """
    One HLS viewer of one channel.

    @ivar last_request: clock time of the viewer's latest request.
    @ivar requests: requests served or waiting.
    """

    kind = "hls"
    log = Logger()

    def __init__(self, clock: IReactorTime, idle_timeout: float, on_close: Callable[[Any, str], None]) -> None:
        self.clock = clock
        self.idle_timeout = idle_timeout
        self.on_close = on_close
        self.bytes_sent = 0
        self.skips = 0
        self.lag_bytes = 0
        self.paused = False
        self.requests = 0
        self.last_request = clock.seconds()
        self.first_byte_at: Optional[float] = None
        self.closed = False
        self.close_reason: Optional[str] = None
        #: why the viewer ended, for requests that arrive after
        self.error: Optional[Exception] = None
        #: fires None when the viewer has left or the channel ended (never fails: nobody waits on it)
        self.done: Deferred[None] = Deferred()
        self._waiters: List[_Waiter] = []
        self._idle: Optional[IDelayedCall] = None

    @property
    def started(self) -> bool:
        return self.first_byte_at is not None

    # ------------------------------------------------------------ the channel's side

    def start(self) -> None:
        """The channel took the viewer: the idle clock runs from its first request."""
        self._arm()

    def wake(self) -> None:
        """A block was cut: answer the requests whose segment or playlist is ready now."""
        for waiter in [w for w in self._waiters if w.ready()]:
            self._settle(waiter)
            waiter.deferred.callback(None)

    def finish(self) -> None:
        """The channel stopped: waiting requests get a 503, as a getstream player would."""
        self._end("finished", EngineError(503, "channel stopped", retry_after=1))

    def fail(self, error: Exception) -> None:
        """The channel failed: waiting requests get its error."""
        self._end("failed", error)

    def rebind(self, ring: Any, on_close: Callable[[Any, str], None]) -> None:
        """The viewer now belongs to another channel (a handover); it reports its end there."""
        self.on_close = on_close

    def leave(self, reason: str) -> None:
        """The viewer is gone (its idle time passed, or the proxy let it go)."""
        self._end(reason, EngineError(503, "the HLS viewer has left", retry_after=1))

    # ------------------------------------------------------------ the requests' side

    def touch(self) -> None:
        """A request arrived: the viewer is here now."""
        self.requests += 1
        self.last_request = self.clock.seconds()
        self._arm()

    def served(self, size: int) -> None:
        """C{size} bytes (a playlist or a segment) were handed to the viewer."""
        self.bytes_sent += size
        if self.first_byte_at is None:
            self.first_byte_at = self.clock.seconds()

    def wait(self, ready: Callable[[], bool], timeout: float, what: str) -> "Deferred[None]":
        """
        Fire when C{ready()} holds (checked now and after each block), or fail:
        with a 504 after C{timeout}, with the channel's error if it ends first.
        The viewer does not idle out while a request waits.
        """
        if self.closed:
            error = self.error
            raise error.copy() if isinstance(error, EngineError) else EngineError(503, "channel stopped", retry_after=1)
        if ready():
            return succeed(None)
        d: Deferred[None] = Deferred(lambda _: self._forget(d))
        deadline = self.clock.callLater(timeout, self._timed_out, d, timeout, what)
        self._waiters.append(_Waiter(ready, d, deadline))
        self._disarm()
        return d

    # ------------------------------------------------------------ internals

    def _timed_out(self, d: "Deferred[None]", timeout: float, what: str) -> None:
        waiter = self._find(d)
        if waiter is None:
            return
        self._waiters.remove(waiter)
        self._arm()
        d.errback(EngineError(504, f"no {what} within {timeout:g} s", retry_after=2, kind=ErrorKind.TIMEOUT))

    def _forget(self, d: "Deferred[None]") -> None:
        """The request went away before its answer."""
        waiter = self._find(d)
        if waiter is not None:
            self._settle(waiter)

    def _find(self, d: "Deferred[None]") -> Optional[_Waiter]:
        return next((w for w in self._waiters if w.deferred is d), None)

    def _settle(self, waiter: _Waiter) -> None:
        self._waiters.remove(waiter)
        if waiter.deadline.active():
            waiter.deadline.cancel()
        self._arm()

    def _arm(self) -> None:
        """(Re)start the idle clock, unless a request is waiting."""
        self._disarm()
        if not self.closed and not self._waiters:
            self._idle = self.clock.callLater(self.idle_timeout, self.leave, "idle")

    def _disarm(self) -> None:
        if self._idle is not None and self._idle.active():
            self._idle.cancel()
        self._idle = None

    def _end(self, reason: str, error: Exception) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.error = error
        self._disarm()
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if waiter.deadline.active():
                waiter.deadline.cancel()
            waiter.deferred.errback(error.copy() if isinstance(error, EngineError) else error)
        self.log.info("HLS viewer left ({reason}): {requests} requests, {size} bytes", reason=reason,
                      requests=self.requests, size=self.bytes_sent)
        try:
            self.on_close(self, reason)
        except Exception:
            self.log.failure("on_close raised")
        self.done.callback(None)


def viewer_key(ip: str, user_agent: str) -> Tuple[str, str]:
    """Who an HLS viewer is: its address and user agent (its requests carry nothing else)."""
    return (ip, user_agent)
