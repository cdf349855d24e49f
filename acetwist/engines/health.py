# -*- test-case-name: tests.test_engine_pool -*-
"""
L{Health}: what probes and real calls say of one engine. A new engine is
C{unknown} (not eligible) until its first probe answers; two failed probes
in a row, or one real call that could not connect, make it C{unhealthy}
until a probe succeeds.
"""

from __future__ import annotations

from typing import Optional

UNKNOWN = "unknown"
HEALTHY = "healthy"
UNHEALTHY = "unhealthy"

#: failed probes in a row that make an engine unhealthy
FAILURES_TO_UNHEALTHY = 2

#: where engines answer the probe
PROBE_PATH = "/webui/api/service?method=get_version"


class Health:
    """
    One engine's health as the probes see it.

    @ivar state: L{UNKNOWN}, L{HEALTHY} or L{UNHEALTHY}.
    @ivar failures: failed probes in a row.
    @ivar last_probe: when (clock seconds) the last probe ended, or None.
    @ivar last_error: the last failure (probe or real call), or None.
    """

    def __init__(self) -> None:
        self.state = UNKNOWN
        self.failures = 0
        self.last_probe: Optional[float] = None
        self.last_error: Optional[str] = None

    @property
    def healthy(self) -> bool:
        return self.state == HEALTHY

    def probe_ok(self, now: float) -> bool:
        """A probe answered; True if the state changed."""
        self.last_probe = now
        self.failures = 0
        return self._set(HEALTHY)

    def probe_failed(self, now: float, why: str) -> bool:
        """A probe failed; True if the state changed (the second failure in a row makes it unhealthy)."""
        self.last_probe = now
        self.last_error = f"probe: {why}"
        self.failures += 1
        if self.failures >= FAILURES_TO_UNHEALTHY:
            return self._set(UNHEALTHY)
        return False

    def connection_failed(self, why: str) -> bool:
        """A real call could not connect: unhealthy at once; True if the state changed."""
        self.last_error = why
        return self._set(UNHEALTHY)

    def _set(self, state: str) -> bool:
        changed = state != self.state
        self.state = state
        return changed
