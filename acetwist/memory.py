# -*- test-case-name: tests.test_memory -*-
"""
Giving freed memory back to the operating system.

A channel's ring holds its blocks (tens of KB each) on the C allocator's
heap. When a channel ends its blocks are freed at once (see
L{acetwist.ring.TSRing.close}), but glibc keeps freed heap memory for reuse,
so a proxy whose channels come and go keeps the RSS of its busiest moment.
L{MemoryReleaser} asks glibc (C{malloc_trim}) to return free memory after a
channel ended, at most every C{interval} seconds. Elsewhere (no glibc) it
does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Callable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger()


def glibc_malloc_trim() -> Optional[Callable[[], int]]:
    """C{malloc_trim(0)} of the C library, when it is glibc's; else None."""
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: int(trim(0))


class MemoryReleaser:
    """Returns freed memory to the OS after channels end, at most once per C{interval}."""

    def __init__(self, clock: IReactorTime, interval: float = 10.0,
                 trim: Optional[Callable[[], int]] = None) -> None:
        self.clock = clock
        self.interval = interval
        self.trim = trim
        self.trims = 0
        self._last: Optional[float] = None
        self._call: Optional[IDelayedCall] = None
        self._stopped = False

    @classmethod
    def for_this_process(cls, clock: IReactorTime, interval: float = 10.0) -> "MemoryReleaser":
        return cls(clock, interval, glibc_malloc_trim())

    def channel_ended(self) -> None:
        """A channel released its blocks: trim now, or once the interval since the last trim has passed."""
        if self.trim is None or self._call is not None or self._stopped:
            return
        now = self.clock.seconds()
        wait = 0.0 if self._last is None else self._last + self.interval - now
        self._call = self.clock.callLater(max(wait, 0.0), self._run)

    def stop(self) -> None:
        """The proxy is stopping: cancel a pending trim; later channel ends schedule nothing."""
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _run(self) -> None:
        self._call = None
        self._last = self.clock.seconds()
        assert self.trim is not None
        try:
            self.trim()
            self.trims += 1
        except Exception:
            log.failure("malloc_trim failed")
