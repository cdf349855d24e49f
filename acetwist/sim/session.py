# -*- test-case-name: tests.test_sim_engine -*-
"""
One playback session: its tokens, its timeline (prebuffer, media clock,
starvation), its readers and its idle expiry. The L{Engine} owns sessions;
nothing here knows about HTTP.

The media clock: once the session is ready it holds C{burst} seconds of
stream, and the live edge then advances in real time, except while the
session starves (a C{gap} or C{no_peers}), when it stands still.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Dict, Optional, Protocol, Set

from twisted.internet.interfaces import IDelayedCall

from acetwist.sim.contents import Content

if TYPE_CHECKING:  # pragma: no cover
    from acetwist.sim.engine import Engine

PIECE = 16 * 1024
LIVE_WINDOW = 1800  # seconds between livepos first and last


class Hold(Protocol):
    """A request the engine may have to end: a reader, a waiting call, a long-poll."""

    content: Optional[Content]
    session: Optional["Session"]

    def abort(self) -> None:
        """Drop the connection with a reset."""

    def session_ended(self, reason: str) -> None:
        """The session this request belongs to ended (stopped, expired, superseded, forgotten)."""


class Session:
    """
    @ivar token: 32 hex, the last path segment of the session's URLs.
    @ivar playback_session_id: 40 hex, reported in the JSON reply and in stat.
    @ivar content_key: the C{0.NNNNNNNNNNNN} segment of the C{/content/} URL.
    @ivar ended: None while live, else why it ended.
    """

    def __init__(self, engine: "Engine", content: Content, *, kind: str, token: str, playback_session_id: str,
                 content_key: str, pid: Optional[str], client_session_id: int, events: bool) -> None:
        self.engine = engine
        self.clock = engine.clock
        self.content = content
        self.kind = kind
        self.token = token
        self.playback_session_id = playback_session_id
        self.content_key = content_key
        self.pid = pid
        self.client_session_id = client_session_id
        self.events = events
        now = self.clock.seconds()
        self.created = now
        self.ready_at = now + engine.config.prebuffer
        self.ready_since: Optional[float] = None
        self.idle_timeout = engine.config.idle_timeout
        self.last_activity = now
        self.holds: Set[Hold] = set()
        self.stream_reader: Optional[Hold] = None  # the one reader of the progressive body
        self.ended: Optional[str] = None
        self.first_byte_at: Optional[float] = None
        self.gaps_done: Set[int] = set()
        self.selected_stream_index = 0
        self.seek_position: Optional[int] = None
        self._frozen: Set[str] = set()
        self._frozen_since = 0.0
        self._frozen_total = 0.0
        self._blocked = engine.fault("no_peers", content) is not None
        self._unblocked_at = now
        self._idle_call: Optional[IDelayedCall] = None
        self._gap_call: Optional[IDelayedCall] = None
        self._arm_idle()

    def __repr__(self) -> str:
        return f"<Session {self.content.name} {self.token[:8]} {self.ended or 'live'}>"

    # -- readiness and the media clock

    def refresh(self, now: float) -> None:
        """Bring readiness and starvation up to date with the current faults."""
        blocked = self.engine.fault("no_peers", self.content) is not None
        if self.ready_since is None:
            if self._blocked and not blocked:
                self._unblocked_at = now
            self._blocked = blocked
            if not blocked and now >= self.ready_at:
                self.ready_since = max(self.ready_at, self._unblocked_at)
        else:
            self._blocked = blocked
            if blocked:
                self._freeze("no_peers", now)
            else:
                self._thaw("no_peers", now)

    def is_ready(self, now: float) -> bool:
        if self.ended:
            return False
        self.refresh(now)
        return self.ready_since is not None

    def starving(self) -> bool:
        return bool(self._frozen)

    def media_seconds(self, now: float) -> float:
        """Seconds of stream the engine holds for this session (0 before it is ready)."""
        if self.ready_since is None:
            if not self.ended:
                self.refresh(now)
            if self.ready_since is None:
                return 0.0
        frozen = self._frozen_total + (now - self._frozen_since if self._frozen else 0.0)
        return self.engine.config.burst + max(0.0, now - self.ready_since - frozen)

    def _freeze(self, reason: str, now: float) -> None:
        if not self._frozen:
            self._frozen_since = now
        self._frozen.add(reason)

    def _thaw(self, reason: str, now: float) -> None:
        if reason in self._frozen:
            self._frozen.discard(reason)
            if not self._frozen:
                self._frozen_total += now - self._frozen_since

    def start_gap(self, seconds: float) -> None:
        """Starve for C{seconds}, then resume."""
        now = self.clock.seconds()
        self.refresh(now)
        self._freeze("gap", now)
        if self._gap_call is not None and self._gap_call.active():
            self._gap_call.cancel()

        until = now + seconds

        def resume() -> None:
            self._gap_call = None
            self._thaw("gap", min(until, self.clock.seconds()))

        self._gap_call = self.clock.callLater(seconds, resume)

    # -- readers and idle expiry

    def add_hold(self, hold: Hold) -> None:
        self.holds.add(hold)
        self._cancel_idle()

    def remove_hold(self, hold: Hold) -> None:
        if hold in self.holds:
            self.holds.discard(hold)
            if not self.holds and not self.ended:
                self.last_activity = self.clock.seconds()
                self._arm_idle()

    def touch(self) -> None:
        """Player activity (a stat poll, a playlist or segment fetch)."""
        self.last_activity = self.clock.seconds()

    def set_idle_timeout(self, seconds: float) -> None:
        self.idle_timeout = seconds
        self.touch()
        if not self.holds:
            self._cancel_idle()
            self._arm_idle()

    def _arm_idle(self) -> None:
        if self.ended or self.holds or (self._idle_call is not None and self._idle_call.active()):
            return
        delay = max(0.0, self.last_activity + self.idle_timeout - self.clock.seconds())
        self._idle_call = self.clock.callLater(delay, self._idle_check)

    def _cancel_idle(self) -> None:
        if self._idle_call is not None and self._idle_call.active():
            self._idle_call.cancel()
        self._idle_call = None

    def _idle_check(self) -> None:
        self._idle_call = None
        if self.ended or self.holds:
            return
        if self.clock.seconds() - self.last_activity >= self.idle_timeout - 1e-9:
            self.engine.expire(self)
        else:
            self._arm_idle()

    # -- ending

    def end(self, reason: str) -> None:
        """Called by the engine: mark ended, cancel timers, tell every request."""
        if self.ended:
            return
        self.ended = reason
        self._cancel_idle()
        if self._gap_call is not None and self._gap_call.active():
            self._gap_call.cancel()
        self._gap_call = None
        for hold in list(self.holds):
            hold.session_ended(reason)

    # -- reports

    def livepos(self, now: float) -> Dict[str, str]:
        last = int(self.created + self.media_seconds(now))
        first = last - LIVE_WINDOW
        return {"pos": str(last), "last": str(last), "live_first": str(first), "live_last": str(last),
                "first_ts": str(first), "last_ts": str(last), "is_live": "1", "buffer_pieces": "15"}

    def stat(self, now: float) -> Dict[str, Any]:
        """The C{response} object of C{stat_url}."""
        config = self.engine.config
        ready = self.is_ready(now)
        blocked = self.engine.fault("no_peers", self.content) is not None
        full_peers = 4 + int(self.content.infohash[:2], 16) % 12
        byte_rate = self.engine.template.byte_rate
        if not ready:
            elapsed = now - self.created
            status = "prebuf"
            progress = 0 if blocked else min(99, int(100 * elapsed / config.prebuffer) if config.prebuffer else 99)
            peers = 0 if blocked else min(full_peers, 1 + int(elapsed * 2))
            speed_down = 0 if blocked else int(byte_rate / 1000 * min(1.0, elapsed))
            downloaded = 0 if blocked else int(config.burst * byte_rate * progress / 100) // PIECE * PIECE
        else:
            status = "buf" if self.starving() else "dl"
            progress = 100
            peers = 0 if blocked else full_peers
            speed_down = 0 if self.starving() else int(byte_rate / 1000)
            downloaded = int(self.media_seconds(now) * byte_rate) // PIECE * PIECE
        return {
            "status": status,
            "progress": progress,
            "peers": peers,
            "speed_down": speed_down,
            "speed_up": speed_down // 4,
            "downloaded": downloaded,
            "uploaded": downloaded // 4 // PIECE * PIECE,
            "total_progress": 0,
            "is_live": 1,
            "is_encrypted": int(self.engine.is_encrypted(self.content)),
            "infohash": self.content.infohash,
            "playback_session_id": self.playback_session_id,
            "client_session_id": self.client_session_id,
            "selected_stream_index": self.selected_stream_index,
            "selected_file_index": 0,
            "stream_status": 0,
            "manifest_access_mode": 0,
            "disk_cache_stats": {"avail": 4 << 30, "disk_cache_limit": 4 << 30, "inactive_inuse": 0,
                                 "active_inuse": min(downloaded, 256 << 20)},
            "network_monitor_status": 0,
            "network_monitor_started": 1,
            "wan_connection_status": 0,
            "debug_level": 0,
            "livepos": self.livepos(now),
        }

    def as_json(self, now: float) -> Dict[str, Any]:
        """A summary for the control API."""
        return {
            "content": self.content.name,
            "infohash": self.content.infohash,
            "kind": self.kind,
            "token": self.token,
            "playback_session_id": self.playback_session_id,
            "pid": self.pid,
            "age": round(now - self.created, 3),
            "ready": self.is_ready(now),
            "starving": self.starving(),
            "media_seconds": round(self.media_seconds(now), 3),
            "requests": len(self.holds),
            "reading": self.stream_reader is not None,
            "idle_timeout": self.idle_timeout,
            "idle_for": 0.0 if self.holds else round(now - self.last_activity, 3),
        }


def segment_seconds(gop: float, wanted: float = 2.0) -> float:
    """HLS segment length: a whole number of GOPs near C{wanted}."""
    return gop * max(1, math.floor(wanted / gop + 0.5))
