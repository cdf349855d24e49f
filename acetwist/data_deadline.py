# -*- test-case-name: tests.test_upstream,tests.test_engine_hls -*-
"""
L{DataDeadline}: the two deadlines of a read from the engine, one timer at a
time: the first byte must come within C{first_byte_timeout}, then no silence
may last C{idle_limit()}. The progressive TS reader and the HLS reader share it.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet.interfaces import IDelayedCall, IReactorTime


class DataDeadline:
    """
    @ivar last_data_at: clock time of the latest data, or None before any.
    """

    def __init__(self, clock: IReactorTime, first_byte_timeout: float, idle_limit: Callable[[], float], *,
                 on_no_first_byte: Callable[[], None], on_idle: Callable[[float], None]) -> None:
        self.clock = clock
        self.first_byte_timeout = first_byte_timeout
        self.idle_limit = idle_limit
        self.on_no_first_byte = on_no_first_byte
        self.on_idle = on_idle
        self.last_data_at: Optional[float] = None
        self._timer: Optional[IDelayedCall] = None

    def start(self) -> None:
        """The read began: the first byte is due within C{first_byte_timeout}."""
        self._timer = self.clock.callLater(self.first_byte_timeout, self._first_byte_missed)

    def data(self) -> None:
        """Data came: from the first byte on, the idle watchdog runs."""
        first = self.last_data_at is None
        self.last_data_at = self.clock.seconds()
        if first:
            self.stop()
            self._timer = self.clock.callLater(self.idle_limit(), self._check_idle)

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _first_byte_missed(self) -> None:
        self._timer = None
        self.on_no_first_byte()

    def _check_idle(self) -> None:
        self._timer = None
        assert self.last_data_at is not None
        quiet = self.clock.seconds() - self.last_data_at
        limit = self.idle_limit()
        if quiet >= limit:
            self.on_idle(quiet)
        else:
            self._timer = self.clock.callLater(limit - quiet, self._check_idle)
