# -*- test-case-name: tests.test_channel -*-
"""
A channel: one engine session for one stream key, read once into a TS ring
and fanned out to every player's sink.

Lifecycle: C{starting -> prebuffering -> live <-> recovering}, with
C{lingering} layered on top while no player is connected, and the terminal
C{stopped} or C{failed}. The engine session is stopped exactly once.
"""

from __future__ import annotations

import enum
import uuid
from typing import Any, Callable, Dict, List, Optional, Set

import attr
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from acetwist.config import Settings
from acetwist.interfaces import Block, ClientRecord, ICoordinator, IFollower, Lease
from acetwist.ring import TSRing
from acetwist.upstream import EngineClient, EngineError, EngineSession, PlaybackEnd, PlaybackReader, Selector, stream_key

MAX_BACKOFF = 8.0

#: How long a live owner may take to notice that its lease vanished (Redis came
#: back empty) and claim again: its link's reconnect delay (at most 2 s) plus a
#: renew interval (a third of the lease) plus margin. A follower only takes
#: over after seeing no owner for longer than this.
RECLAIM_MARGIN = 2.5


class Upstream(enum.Enum):
    STARTING = "starting"
    PREBUFFERING = "prebuffering"
    LIVE = "live"
    RECOVERING = "recovering"
    STOPPED = "stopped"
    FAILED = "failed"


@attr.s(auto_attribs=True)
class ClientInfo:
    """Who a sink serves."""

    client_id: str
    ip: str
    user_agent: str
    connected_at: float


class Channel:
    """
    One stream key's engine session and its players.

    @ivar on_gone: called once when the channel ends (stopped or failed) so
        the registry forgets it.
    @ivar on_canonical: called when the engine names the stream's infohash;
        returns another live channel already serving that infohash (this
        channel then hands over to it), or None.
    """

    log = Logger()

    def __init__(
        self,
        selector: Selector,
        *,
        engine: EngineClient,
        settings: Settings,
        clock: Any,
        coordinator: ICoordinator,
        on_gone: Callable[["Channel"], None],
        on_canonical: Callable[["Channel", str], Optional["Channel"]],
    ) -> None:
        self.selector = selector
        self.key = selector.key
        self.engine = engine
        self.settings = settings
        self.clock = clock
        self.coordinator = coordinator
        self.on_gone = on_gone
        self.on_canonical = on_canonical
        self.ring = TSRing(
            clock,
            block_size=max(settings.block_size, 188),
            flush_interval=settings.block_flush,
            max_seconds=settings.ring_seconds,
            max_bytes=settings.ring_bytes,
            on_block=self._on_block,
        )
        self.sinks: Dict[Any, ClientInfo] = {}
        self.upstream = Upstream.STARTING
        self.lingering = False
        self.session: Optional[EngineSession] = None
        self.lease: Optional[Lease] = None
        self.follower: Optional[IFollower] = None
        self.follow_epoch: Optional[int] = None
        self.reader: Optional[PlaybackReader] = None
        self.error: Optional[EngineError] = None
        self.created_at = clock.seconds()
        self.live_since: Optional[float] = None
        self.bytes_in = 0
        self.departed_bytes_out = 0
        self.departed_skips = 0
        self.recoveries = 0
        self.sessions_opened = 0
        self.last_end_reason: Optional[str] = None
        self._ever_had_data = False
        self._first_byte_deadline_at: Optional[float] = None
        self._ladder: List[str] = []
        self._ladder_step = 0
        self._timers: Set[IDelayedCall] = set()
        self._grace_timer: Optional[IDelayedCall] = None
        self._stopped_pids: Set[str] = set()
        self._loops: Dict[str, LoopingCall] = {}
        self._reported_bytes: Dict[Any, int] = {}
        self._orphan_since: Optional[float] = None
        self._renewing = False
        self._reclaiming = False
        #: bumped whenever the channel's upstream changes hands (role change,
        #: adopted session, end): an engine reply for an older generation is stale
        self._generation = 0
        self._adopted_pending: Optional[EngineSession] = None
        self._follow_segment: Optional[int] = None
        self._follow_seq: Optional[int] = None
        self._stop_calls: List[Deferred[bool]] = []
        self._started = False
        self._ended = False

    # ------------------------------------------------------------ view

    @property
    def state(self) -> str:
        if self.upstream in (Upstream.STOPPED, Upstream.FAILED):
            return self.upstream.value
        return "lingering" if self.lingering else self.upstream.value

    @property
    def role(self) -> str:
        """C{owner} (reads the engine), C{follower} (reads another worker's mirror), or C{none}."""
        if self.lease is not None:
            return "owner"
        return "follower" if self.follower is not None else "none"

    @property
    def alive(self) -> bool:
        return not self._ended

    # ------------------------------------------------------------ players

    def add_client(self, sink: Any, info: ClientInfo) -> None:
        """Attach a player's sink; it starts at the newest keyframe (or waits for one)."""
        assert not self._ended, "a finished channel takes no players"
        self.sinks[sink] = info
        if self.lingering:
            self.lingering = False
            self._cancel_grace()
            self.log.info("player returned to {key} during the grace period", key=self.key)
        # recorded before start(): a sink that closes inside start() then leaves no ghost record
        self.coordinator.client_joined(self._record(sink, info))
        sink.start()

    def remove_client(self, sink: Any, reason: str = "") -> None:
        info = self.sinks.pop(sink, None)
        if info is None:
            return
        self.departed_bytes_out += sink.bytes_sent
        self.departed_skips += sink.skips
        self._reported_bytes.pop(sink, None)
        self.coordinator.client_left(self._record(sink, info))
        self.log.info("player {ip} left {key}: {reason}", ip=info.ip, key=self.key, reason=reason)
        if not self.sinks and not self._ended:
            self._linger()

    def _record(self, sink: Any, info: ClientInfo) -> ClientRecord:
        return ClientRecord(
            client_id=info.client_id,
            stream_key=self.key,
            worker=self.coordinator.worker_id,
            ip=info.ip,
            user_agent=info.user_agent,
            connected_at=info.connected_at,
            bytes_sent=getattr(sink, "bytes_sent", 0),
        )

    def _linger(self) -> None:
        self.lingering = True
        self._cancel_grace()
        self._grace_timer = self.clock.callLater(self.settings.grace, self._grace_expired)
        self.log.info("last player left {key}; stopping in {grace:g} s", key=self.key, grace=self.settings.grace)

    def _grace_expired(self) -> None:
        self._grace_timer = None
        if self.lease is None:
            self.stop("no players on this worker for the grace period")
            return
        d = self.coordinator.client_count(self.key)
        d.addCallbacks(self._cluster_count, self._count_unknown)

    def _count_unknown(self, failure: Any) -> None:
        # An unknown count is not zero: keep lingering and ask again soon.
        if self._ended or not self.lingering:
            return
        self.log.info("{key}: cannot count players ({why}); asking again", key=self.key,
                      why=failure.getErrorMessage())
        self._cancel_grace()
        self._grace_timer = self.clock.callLater(max(0.1, min(self.settings.grace, 1.0)), self._grace_expired)

    def _cluster_count(self, count: int) -> None:
        if self._ended or not self.lingering:
            return
        if count > 0:
            self.log.info("{key}: {n} player(s) on other workers; staying", key=self.key, n=count)
            self._linger()
        else:
            self.stop("no players in the cluster for the grace period")

    def _cancel_grace(self) -> None:
        if self._grace_timer is not None and self._grace_timer.active():
            self._grace_timer.cancel()
        self._grace_timer = None

    # ------------------------------------------------------------ start

    def start(self) -> None:
        """Take ownership of the stream key, then open the engine session. Only the first call acts."""
        if self._started:
            return
        self._started = True
        d = self.coordinator.claim(self.key)
        d.addCallbacks(self._claimed, self._claim_failed)

    def _claimed(self, lease: Optional[Lease]) -> None:
        if self._ended:
            if lease is not None:
                self.coordinator.release(self.key, lease)
            return
        self._every("heartbeat", self.settings.heartbeat, self._heartbeat)
        if lease is None:
            self._become_follower()
            return
        self._become_owner(lease)
        self._open_session(first=True)

    def _claim_failed(self, failure: Any) -> None:
        self._fail(EngineError(503, f"cluster unavailable: {failure.getErrorMessage()}", retry_after=2))

    def _open_session(self, first: bool) -> None:
        generation = self._generation
        d = self.engine.open_session(self.selector)
        d.addCallbacks(
            lambda session: self._session_opened(session, first, generation),
            lambda f: self._session_failed(f, first, generation),
        )

    def _session_opened(self, session: EngineSession, first: bool, generation: Optional[int] = None) -> None:
        stale = generation is not None and generation != self._generation
        if self._ended or stale or self.lease is None:
            # We ended, stopped owning the stream, or adopted another session meanwhile.
            self._stop_session(session)
            return
        self.session = session
        self.sessions_opened += 1
        self.log.info("engine session {pid} for {key} (infohash {ih})", pid=session.pid, key=self.key, ih=session.infohash)
        if session.infohash:
            canonical = stream_key("infohash", session.infohash, self.selector.extra)
            if canonical != self.key:
                other = self.on_canonical(self, canonical)
                if other is not None and other is not self:
                    self._hand_over(other, session)
                    return
        self._adopted_pending = None
        if first:
            self.upstream = Upstream.PREBUFFERING
            self._first_byte_deadline_at = self.clock.seconds() + self.settings.first_byte_timeout
        # a new engine session prebuffers like the first one did: give it the full first-byte deadline
        self._read(self.settings.first_byte_timeout)

    def _session_failed(self, failure: Any, first: bool, generation: Optional[int] = None) -> None:
        if self._ended or (generation is not None and generation != self._generation):
            return
        if self._adopted_pending is not None:
            # Our own call failed, but another channel handed us a live session: use it.
            session, self._adopted_pending = self._adopted_pending, None
            self._session_opened(session, first)
            return
        error = failure.value if isinstance(failure.value, EngineError) else EngineError(502, failure.getErrorMessage())
        if first:
            self._fail(error)
        else:
            self.last_end_reason = error.message
            self._next_rung()

    # ------------------------------------------------------------ reading

    def _read(self, first_byte_timeout: float) -> None:
        """Read the session's playback URL; there is never more than one reader."""
        assert self.session is not None
        if self.reader is not None:
            self.reader.stop()
            self.reader = None
        mine: List[Any] = []

        def on_end(end: PlaybackEnd) -> None:
            if mine and mine[0] is not self.reader:
                return  # a reader we already replaced
            self._on_end(end)

        reader = self.engine.read(
            self.session.playback_url,
            on_data=self._on_data,
            on_end=on_end,
            first_byte_timeout=first_byte_timeout,
            idle_timeout=self.settings.idle_timeout,
        )
        mine.append(reader)
        self.reader = reader

    def _on_data(self, data: bytes) -> None:
        if not self._ever_had_data:
            self._ever_had_data = True
        if self.upstream is Upstream.RECOVERING and self._ladder_step:
            self.log.info("{key} recovered after {n} attempt(s)", key=self.key, n=self._ladder_step)
            self._ladder_step = 0
        self.bytes_in += len(data)
        self.ring.feed(data)

    def _on_block(self, block: Block) -> None:
        if self.upstream in (Upstream.PREBUFFERING, Upstream.RECOVERING, Upstream.STARTING):
            self.upstream = Upstream.LIVE
            if self.live_since is None:
                self.live_since = self.clock.seconds()
        if self.lease is not None:
            self.coordinator.publish(self.key, self.lease, block)
        for sink in list(self.sinks):
            sink.wake()

    def _on_end(self, end: PlaybackEnd) -> None:
        self.reader = None
        if self._ended:
            return
        self.last_end_reason = end.reason
        self.log.info("{key} upstream ended: {reason} ({n} bytes)", key=self.key, reason=end.reason, n=end.bytes_read)
        if not self._ever_had_data:
            self._before_first_data(end)
        elif end.bytes_read:
            # the stream was flowing (perhaps after a recovery attempt) and ended: climb the ladder from the bottom
            self._recover()
        else:
            self._next_rung()

    def _before_first_data(self, end: PlaybackEnd) -> None:
        """The engine has not sent a byte yet: an empty reply means it is warming up; anything else is final."""
        remaining = (self._first_byte_deadline_at or 0) - self.clock.seconds()
        warming = end.error is not None and end.error.status == 502 and end.bytes_read == 0 and "before any data" in end.error.message
        if warming and remaining > self.settings.backoff:
            self._later(self.settings.backoff, lambda: self._read(remaining - self.settings.backoff))
            return
        self._fail(end.error or EngineError(502, end.reason))

    # ------------------------------------------------------------ recovery ladder

    def _recover(self) -> None:
        self._begin_recovery()
        self._next_rung()

    def _begin_recovery(self) -> None:
        self.upstream = Upstream.RECOVERING
        self.recoveries += 1
        self.ring.flush()
        self.ring.discontinuity()
        self._ladder = ["same"] * self.settings.reconnect_attempts + ["session"] * self.settings.session_attempts
        self._ladder_step = 0

    def _next_rung(self) -> None:
        if self._ladder_step >= len(self._ladder):
            self._fail(EngineError(502, f"engine stream lost and recovery failed ({self.last_end_reason})"))
            return
        rung = self._ladder[self._ladder_step]
        delay = min(self.settings.backoff * (2 ** self._ladder_step), MAX_BACKOFF)
        self._ladder_step += 1
        self.log.info("{key}: recovery attempt {n} ({rung}) in {delay:g} s", key=self.key, n=self._ladder_step, rung=rung, delay=delay)
        if rung == "same":
            self._later(delay, lambda: self._read(self.settings.recovery_first_byte_timeout))
        else:
            self._later(delay, self._replace_session)

    def _replace_session(self) -> None:
        if self.session is not None:
            self._stop_session(self.session)
        self._open_session(first=False)

    def _hand_over(self, other: "Channel", session: EngineSession) -> None:
        """
        The engine says this stream is one another channel already serves.
        Our JSON call has superseded that channel's session, so it adopts the
        new one, and our waiting players move to it.
        """
        self.log.info("{key} is {other}; handing players over", key=self.key, other=other.key)
        self._ended = True
        other.adopt_session(session)
        for sink, info in list(self.sinks.items()):
            del self.sinks[sink]
            self.coordinator.client_left(self._record(sink, info))
            sink.rebind(other.ring, other.remove_client)
            other.add_client(sink, info)
        self._end(Upstream.STOPPED)

    def adopt_session(self, session: EngineSession) -> None:
        """Switch to C{session}, which replaced ours on the engine."""
        if self._ended:
            self._stop_session(session)
            return
        if self.session is None:
            # Our own JSON call is still in flight; its session will supersede this one,
            # unless it fails: then this one is used.
            self._adopted_pending = session
            return
        self._generation += 1  # a recovery call of ours still in flight is now stale
        self._cancel_timers()  # and so are scheduled recovery rungs
        self.session = session
        self.sessions_opened += 1
        if self._ever_had_data:
            self._begin_recovery()
        self._read(self.settings.first_byte_timeout)


    # ------------------------------------------------------------ cluster roles

    def _become_owner(self, lease: Lease) -> None:
        self.lease = lease
        self._every("renew", max(self.settings.lease / 3, 0.05), self._renew)
        self.log.info("{key}: owner with epoch {epoch}", key=self.key, epoch=lease.epoch)

    def _renew(self) -> None:
        lease = self.lease
        if lease is None or self._ended or self._renewing or self._reclaiming:
            return
        self._renewing = True

        def answered(ok: bool) -> None:
            self._renewing = False
            if not ok:
                self._lease_lost(lease)

        def unanswered(failure: Any) -> None:
            # A Redis outage is no reason to stop streaming: keep going and try again.
            self._renewing = False

        self.coordinator.renew(self.key, lease).addCallbacks(answered, unanswered)

    def _lease_lost(self, lease: Lease) -> None:
        if self._ended or self.lease is not lease or self._reclaiming:
            return
        self.log.warn("{key}: lease with epoch {epoch} lost; claiming again", key=self.key, epoch=lease.epoch)
        self._reclaiming = True

        def done(_: Any) -> None:
            self._reclaiming = False

        d = self.coordinator.claim(self.key)
        d.addCallback(self._reclaimed)
        d.addBoth(done)

    def _reclaimed(self, lease: Optional[Lease]) -> Any:
        if self._ended:
            if lease is not None:
                self.coordinator.release(self.key, lease)
            return None
        if lease is not None:
            # Nobody took over: keep our engine session under the new epoch.
            self.lease = lease
            return None
        return self.coordinator.owner(self.key).addCallback(self._owner_after_lost_claim)

    def _owner_after_lost_claim(self, lease: Optional[Lease]) -> None:
        if self._ended:
            return
        if lease is None or lease.owner == self.coordinator.worker_id:
            # Ours after all (or free again): the next renew sorts it out.
            if lease is not None:
                self.lease = lease
            return
        # Another worker owns the stream now: its session superseded ours.
        self.log.warn("{key}: another worker took over; following it", key=self.key)
        self._stop_loop("renew")
        self.lease = None
        if self.reader is not None:
            self.reader.stop()
            self.reader = None
        self._cancel_timers()
        self.session = None
        self._become_follower()

    def _become_follower(self) -> None:
        self._generation += 1
        self.ring.flush()
        self.ring.discontinuity()
        self._follow_segment = None
        self._follow_seq = None
        self._orphan_since = None
        self.follower = self.coordinator.follow(self.key, self._on_mirrored_block)
        self._every("watch", min(max(self.settings.lease / 2, 0.05), 1.0), self._watch_owner)
        self.log.info("{key}: following the owner's mirror", key=self.key)

    def _on_mirrored_block(self, block: Block, epoch: int) -> None:
        if self._ended or self.follower is None:
            return
        # a new owner, a new upstream at the owner, or a hole in the mirror: restart at a keyframe
        if self.follow_epoch is not None and (
            epoch != self.follow_epoch or block.segment != self._follow_segment or block.seq != self._follow_seq + 1
        ):
            self.ring.discontinuity()
        self.follow_epoch = epoch
        self._follow_segment = block.segment
        self._follow_seq = block.seq
        self._ever_had_data = True
        self.bytes_in += len(block.data)
        self.ring.append_block(block.data, block.keyframe, block.psi)

    def _watch_owner(self) -> None:
        d = self.coordinator.owner(self.key)
        d.addCallbacks(self._owner_seen, self._owner_unknown)

    def _owner_unknown(self, failure: Any) -> None:
        # The cluster cannot answer: nothing is known about the owner, so the wait starts over.
        self._orphan_since = None

    def _owner_seen(self, lease: Optional[Lease]) -> None:
        if self._ended or self.follower is None:
            return
        if lease is not None:
            self._orphan_since = None
            return
        now = self.clock.seconds()
        if self._orphan_since is None:
            self._orphan_since = now
            return
        orphaned = now - self._orphan_since
        if orphaned >= self.settings.lease / 3 + RECLAIM_MARGIN and self.sinks:
            self._orphan_since = None
            self.coordinator.claim(self.key).addCallbacks(self._took_over, lambda f: None)

    def _took_over(self, lease: Optional[Lease]) -> None:
        if lease is None or self._ended:
            if lease is not None:
                self.coordinator.release(self.key, lease)
            return
        self.log.info("{key}: owner gone; taking over with epoch {epoch}", key=self.key, epoch=lease.epoch)
        self._stop_loop("watch")
        if self.follower is not None:
            self.follower.stop()
            self.follower = None
        self._become_owner(lease)
        if self._ever_had_data:
            self._begin_recovery()
            self._ladder_step = len([r for r in self._ladder if r == "same"])  # no URL of ours to re-read
            self._replace_session()
        else:
            self._open_session(first=True)

    def _heartbeat(self) -> None:
        """Refresh players' records from real delivery, and the stream's shared metadata."""
        for sink, info in list(self.sinks.items()):
            sent = sink.bytes_sent
            if sent != self._reported_bytes.get(sink):
                self._reported_bytes[sink] = sent
                self.coordinator.client_progress(self._record(sink, info))
        if self.lease is not None:
            self.coordinator.update_stream(
                self.key,
                {
                    "state": self.state,
                    "engine": self.engine.base_url,
                    "owner": self.lease.owner,
                    "epoch": self.lease.epoch,
                    "bitrate": self.bitrate(),
                    "started": self.created_at,
                    "bytes_in": self.bytes_in,
                    "infohash": self.session.infohash if self.session else "",
                },
            )

    def _every(self, name: str, interval: float, action: Callable[[], None]) -> None:
        self._stop_loop(name)
        loop = LoopingCall(action)
        loop.clock = self.clock
        self._loops[name] = loop
        loop.start(interval, now=False).addErrback(lambda f: self.log.failure("{name} loop failed", f, name=name))

    def _stop_loop(self, name: str) -> None:
        loop = self._loops.pop(name, None)
        if loop is not None and loop.running:
            loop.stop()

    # ------------------------------------------------------------ ending

    def stop(self, reason: str = "stopped") -> Deferred[None]:
        """
        End the channel: players still connected are closed cleanly (or get
        503 if they have no byte yet) and the engine session is stopped once.
        Fires when the engine answered the stop (or its deadline passed).
        """
        if not self._ended:
            self._ended = True
            self.log.info("stopping {key}: {reason}", key=self.key, reason=reason)
            for sink in list(self.sinks):
                if getattr(sink, "started", False):
                    sink.finish()
                else:
                    sink.fail(EngineError(503, "channel stopped", retry_after=1))
            self._end(Upstream.STOPPED)
            if self.session is not None:
                self._stop_session(self.session)
        return self._stops_done()

    def _fail(self, error: EngineError) -> None:
        if self._ended:
            return
        self._ended = True
        self.error = error
        self.log.warn("{key} failed: {error}", key=self.key, error=error.message)
        for sink in list(self.sinks):
            sink.fail(error)
        self._end(Upstream.FAILED)
        if self.session is not None:
            self._stop_session(self.session)

    def _end(self, final: Upstream) -> None:
        self._ended = True
        self._generation += 1
        self.upstream = final
        self.lingering = False
        self._cancel_grace()
        self._cancel_timers()
        for name in list(self._loops):
            self._stop_loop(name)
        if self.follower is not None:
            self.follower.stop()
            self.follower = None
        if self.reader is not None:
            self.reader.stop()
            self.reader = None
        self.sinks.clear()
        self.ring.close()
        if self.lease is not None:
            self.coordinator.release(self.key, self.lease)
            self.coordinator.stream_gone(self.key)
        self.on_gone(self)

    def _cancel_timers(self) -> None:
        for timer in list(self._timers):
            if timer.active():
                timer.cancel()
        self._timers.clear()

    def _stop_session(self, session: EngineSession) -> None:
        if session.pid in self._stopped_pids:
            return
        self._stopped_pids.add(session.pid)
        self._stop_calls.append(self.engine.stop(session))

    def _stops_done(self) -> Deferred[None]:
        from twisted.internet.defer import DeferredList

        if not self._stop_calls:
            return succeed(None)
        return DeferredList(list(self._stop_calls)).addCallback(lambda _: None)

    def _later(self, delay: float, action: Callable[[], None]) -> None:
        def run() -> None:
            self._timers.discard(timer)
            if not self._ended:
                action()

        timer = self.clock.callLater(delay, run)
        self._timers.add(timer)

    # ------------------------------------------------------------ status

    def status(self) -> Dict[str, Any]:
        now = self.clock.seconds()
        session = self.session
        clients = []
        for sink, info in self.sinks.items():
            clients.append(
                {
                    "id": info.client_id,
                    "ip": info.ip,
                    "user_agent": info.user_agent,
                    "connected_at": info.connected_at,
                    "connected_for": round(now - info.connected_at, 3),
                    "bytes_sent": sink.bytes_sent,
                    "queue_bytes": sink.lag_bytes,
                    "skips": sink.skips,
                    "paused": sink.paused,
                    "started": sink.started,
                }
            )
        return {
            "key": self.key,
            "state": self.state,
            "engine": self.engine.base_url,
            "infohash": session.infohash if session else None,
            "playback_session_id": session.playback_session_id if session else None,
            "playback_url": session.playback_url if session else None,
            "stat_url": session.stat_url if session else None,
            "command_url": session.command_url if session else None,
            "role": self.role,
            "owner": self.lease.owner if self.lease else None,
            "epoch": self.lease.epoch if self.lease else self.follow_epoch,
            "created_at": self.created_at,
            "uptime": round(now - self.created_at, 3),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out_total(),
            "bitrate": self.bitrate(),
            "recoveries": self.recoveries,
            "sessions_opened": self.sessions_opened,
            "last_end_reason": self.last_end_reason,
            "ring": {"blocks": len(self.ring), "bytes": self.ring.total_bytes, "resyncs": self.ring.resyncs},
            "clients": clients,
            "error": self.error.message if self.error else None,
        }

    def bytes_out_total(self) -> int:
        return self.departed_bytes_out + sum(sink.bytes_sent for sink in self.sinks)

    def skips_total(self) -> int:
        return self.departed_skips + sum(sink.skips for sink in self.sinks)

    def bitrate(self) -> int:
        """Bits per second over the ring's history."""
        first = self.ring.get(self.ring.first_seq)
        newest = self.ring.get(self.ring.next_seq - 1)
        if first is None or newest is None or newest.created <= first.created:
            return 0
        return int(self.ring.total_bytes * 8 / (newest.created - first.created))


def new_client_id() -> str:
    return uuid.uuid4().hex
