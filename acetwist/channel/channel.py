"""
A channel: one stream key's engine session (or another worker's mirror),
read once into a TS ring and fanned out to every player's sink.

Its lifecycle: C{claiming -> owning | following -> stopped | failed}, with
C{owning <-> following} when the lease changes hands. Owning holds the lease
and reads the engine (L{EngineSource}); following reads the owner's mirror
(L{MirrorSource}) and watches for the owner to vanish (L{OwnerWatch}). The
players (L{Roster}) and the grace period (L{GraceMachine}) live beside that
lifecycle. Everything a state starts, its way out stops; every end goes
through L{Channel._teardown}.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Dict, List, Optional, Union

from attr import evolve
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from acetwist.channel.engine_source import EngineCore, EngineSource, Granted
from acetwist.channel.grace import GraceCore, GraceMachine
from acetwist.channel.lease import LeaseCore, LeaseMachine
from acetwist.channel.lifecycle import Following, Lifecycle, LifecycleCore, LifecycleMachine, Owning
from acetwist.channel.mirror_source import MirrorCore, MirrorSource, OwnerWatch, WatchCore
from acetwist.channel.roster import ClientInfo, Roster
from acetwist.channel.status import channel_status, ring_bitrate, stream_metadata
from acetwist.channel.weak import weakly
from acetwist.hls.segmenter import Segmenter
from acetwist.config import Settings
from acetwist.engines.api import IEnginePool
from acetwist.errors import EngineError, ErrorKind
from acetwist.interfaces import Block, ICoordinator, ISink, Lease
from acetwist.ring import TSRing
from acetwist.upstream import EngineSession, Selector, stream_key

#: asks the registry whether C{session}'s infohash is another live channel's
#: stream; if so the registry hands this channel's players to it and returns True
OnCanonical = Callable[["Channel", str, Granted], bool]

#: asks the registry to hand the channel's players to the channel for another
#: key (the cluster owns the stream under that key); an error if it cannot
OnRedirect = Callable[["Channel", str], Optional[EngineError]]

#: how a first session ends when another worker's start call for the same stream superseded it
RESTARTABLE = frozenset({ErrorKind.GONE, ErrorKind.UNREACHABLE})


class Channel:
    """
    One stream key's upstream and its players.

    @ivar on_gone: called once when the channel ends, so the registry forgets it.
    @ivar on_canonical: see L{OnCanonical}.
    @ivar on_redirect: see L{OnRedirect}; without it a redirected channel
        fails with a 503.
    """

    log = Logger()

    def __init__(
        self,
        selector: Selector,
        *,
        pool: IEnginePool,
        settings: Settings,
        clock: IReactorTime,
        coordinator: ICoordinator,
        on_gone: Callable[["Channel"], None],
        on_canonical: OnCanonical,
        on_redirect: Optional[OnRedirect] = None,
    ) -> None:
        self.selector = selector
        self.key = selector.key
        self.pool = pool
        self.settings = settings
        self.clock = clock
        self.coordinator = coordinator
        self.on_gone = on_gone
        self.on_canonical = on_canonical
        self.on_redirect = on_redirect
        self.ring = TSRing(
            clock,
            block_size=max(settings.block_size, 188),
            flush_interval=settings.block_flush,
            max_seconds=settings.ring_seconds,
            max_bytes=settings.ring_bytes,
            on_block=weakly(self._on_block),
        )
        ring = self.ring
        # numbered from the clock, two a second at most (segments are 0.5 s at least): a restarted
        # channel's numbers never repeat an earlier one's
        self.hls = Segmenter(settings.hls_segment, settings.hls_window + 2, first_sequence=int(clock.seconds() * 2),
                             oldest_block=lambda: ring.first_seq)
        #: a follower replays the owner's mirrored history (an HLS viewer may ask for a segment already cut)
        self.replay_mirror = False
        self.roster = Roster(self.key, coordinator, clock, weakly(self._occupied), weakly(self._vacated))
        roster, clustered = self.roster, settings.redis is not None
        # in a cluster a viewer's segment requests may come to any worker: each keeps the whole window
        self.hls.retain = lambda: clustered or roster.has_kind("hls")
        count_elsewhere = weakly(self._count_elsewhere)
        self.grace = GraceMachine(
            GraceCore(clock, settings.grace, max(0.1, min(settings.grace, 1.0)),
                      lambda: count_elsewhere() or succeed(0), weakly(self._grace_expired), name=self.key)
        )
        self.created_at = clock.seconds()
        self.bytes_in = 0
        self.recoveries = 0
        self.error: Optional[EngineError] = None
        #: C{stopped} or C{failed} once the channel ended
        self.final: Optional[str] = None
        self._role: Union[Owning, Following, None] = None
        self._engine_sources: List[EngineSource] = []
        self._last_epoch: Optional[int] = None
        #: the lifecycle claimed again once after a first session lost before any data
        self._restarted = False
        # the machine reaches its channel through a weak proxy, and every part
        # calls back through weakly(): an ended channel is freed by reference
        # counting alone, its ring's blocks with it
        self._lifecycle = LifecycleMachine(LifecycleCore(self.key, coordinator, weakref.proxy(self)))

    # ------------------------------------------------------------ view

    @property
    def alive(self) -> bool:
        return self.final is None

    @property
    def sinks(self) -> Dict[ISink, ClientInfo]:
        return self.roster.sinks

    @property
    def state(self) -> str:
        if self.final is not None:
            return self.final
        if self.grace.lingering():
            return "lingering"
        return self._role.source.phase if self._role is not None else "starting"

    @property
    def role(self) -> str:
        """C{owner} (reads the engine), C{follower} (reads another worker's mirror), or C{none}."""
        if isinstance(self._role, Owning):
            return "owner"
        return "follower" if isinstance(self._role, Following) else "none"

    @property
    def lease(self) -> Optional[Lease]:
        return self._role.lease_core.lease if isinstance(self._role, Owning) else None

    @property
    def session(self) -> Optional[EngineSession]:
        return self._role.source.session if isinstance(self._role, Owning) else None

    @property
    def follow_epoch(self) -> Optional[int]:
        return self._role.source.epoch if isinstance(self._role, Following) else self._last_epoch

    @property
    def sessions_opened(self) -> int:
        return sum(source.core.sessions_opened for source in self._engine_sources)

    @property
    def last_end_reason(self) -> Optional[str]:
        reasons = [s.core.last_end_reason for s in self._engine_sources if s.core.last_end_reason]
        return reasons[-1] if reasons else None

    # ------------------------------------------------------------ players

    def add_client(self, sink: ISink, info: ClientInfo) -> None:
        """Attach a player's sink; it starts at the newest keyframe (or waits for one)."""
        assert self.alive, "a finished channel takes no players"
        self.roster.add(sink, info)

    def remove_client(self, sink: ISink, reason: str = "") -> None:
        self.roster.remove(sink, reason)

    def hand_players_to(self, other: "Channel") -> None:
        """Every player of ours continues on C{other}."""
        self.roster.move_to(other.roster, other.ring, other.player_gone())

    def _has_players(self) -> bool:
        return len(self.roster) > 0

    def player_gone(self) -> Callable[[ISink, str], None]:
        """What a player's sink calls when it closes (it does not keep the channel alive)."""
        return weakly(self.remove_client)

    def _occupied(self) -> None:
        self.grace.occupied()

    def _vacated(self) -> None:
        if self.alive:
            self.log.info("last player left {key}; stopping in {grace:g} s", key=self.key, grace=self.settings.grace)
            self.grace.vacated()

    def _count_elsewhere(self) -> "Deferred[int]":
        if isinstance(self._role, Owning):
            return self.coordinator.client_count(self.key)
        return succeed(0)  # a follower answers for its own players only

    def _grace_expired(self) -> None:
        if isinstance(self._role, Owning):
            self.stop("no players in the cluster for the grace period")
        else:
            self.stop("no players on this worker for the grace period")

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Take ownership of the stream key, then open the engine session. Only the first call acts."""
        self._lifecycle.start()

    def stop(self, reason: str = "stopped") -> "Deferred[None]":
        """
        End the channel: players with data are closed cleanly, waiting ones
        get 503, and the engine session is stopped once. Fires when the
        engine answered every stop (or its deadline passed).
        """
        self._lifecycle.stop(reason)
        stops = [source.stops_done() for source in self._engine_sources]
        return DeferredList(stops).addCallback(lambda _: None) if stops else succeed(None)

    def handed_over(self) -> None:
        """The registry gave our players and our session to another channel."""
        self._lifecycle.handed_over()

    def adopt_session(self, granted: Granted) -> None:
        """Switch to C{granted}'s session, which replaced ours on the engine (another channel's JSON call made it)."""
        if isinstance(self._role, Owning) and self.alive:
            self._role.source.adopt(granted)
        else:
            granted.reservation.engine.stop(granted.session)
            granted.reservation.release("stopped")

    def _own(self, lifecycle: Lifecycle, lease: Lease) -> Owning:
        self.log.info("{key}: owner with epoch {epoch}", key=self.key, epoch=lease.epoch)
        lease_core = LeaseCore(self.key, lease, self.coordinator, self.clock, max(self.settings.lease / 3, 0.05),
                               weakly(lifecycle._demoted))
        had_data = self.bytes_in > 0
        source = EngineSource(
            EngineCore(self.pool, self.selector, self.settings, self.clock, on_data=weakly(self._on_data),
                       on_session=weakly(self._session_granted, False), on_recovering=weakly(self._recovering),
                       on_failed=weakly(self._source_failed),
                       had_data=had_data, key=self.key)
        )
        self._engine_sources.append(source)
        self._role = owning = Owning(LeaseMachine(lease_core), lease_core, source, self._heartbeat_loop())
        owning.lease.hold()
        source.start()
        return owning

    def _source_failed(self, error: EngineError) -> None:
        """
        The engine source gave up. A granted first session that ended before
        any data the way a session superseded by another worker's start call
        for the same stream ends (C{GONE}, C{UNREACHABLE}) makes the channel claim again,
        once: the other worker's key (by content id or infohash) is found
        through the alias it recorded, or a new session is opened.
        """
        superseded = self.sessions_opened > 0 and error.kind in RESTARTABLE  # a refused start call is not
        if superseded and not self.bytes_in and not self._restarted:
            self._restarted = True
            self.log.info("{key}: first session lost before any data ({why}); claiming again", key=self.key,
                          why=error.message)
            self._lifecycle._restart()
        else:
            self._lifecycle.fail(error)

    def _follow(self, lifecycle: Lifecycle) -> Following:
        source = MirrorSource(MirrorCore(self.key, self.coordinator, self.ring, on_bytes=weakly(self._mirrored),
                                         from_start=self.replay_mirror and not self.bytes_in,
                                         join_backlog=self.settings.join_backlog))
        watch = OwnerWatch(
            WatchCore(self.key, self.coordinator, self.clock, interval=min(max(self.settings.lease / 2, 0.05), 1.0),
                      patience=self.settings.lease / 3 + self.coordinator.reclaim_margin,
                      wanted=weakly(self._has_players, False), on_takeover=weakly(lifecycle._took_over),
                      on_redirect=weakly(lifecycle._redirected))
        )
        self._role = following = Following(source, watch, self._heartbeat_loop())
        source.start()
        watch.start()
        return following

    def _release(self, owning: Owning) -> None:
        owning.source.stop()
        owning.lease.release()
        owning.heartbeat.stop()
        self.coordinator.stream_gone(self.key)

    def _reset(self, owning: Owning) -> None:
        self._release(owning)
        self._role = None

    def _unfollow(self, following: Following) -> None:
        self._last_epoch = following.source.epoch
        self._role = None
        following.source.stop()
        following.watch.stop()
        following.heartbeat.stop()

    def _redirect(self, key: str) -> Optional[EngineError]:
        """Our claim was redirected to C{key}, the same stream owned elsewhere: our players go to its channel."""
        self.log.info("{key} is owned as {other} in the cluster; its players go there", key=self.key, other=key)
        if self.on_redirect is None:
            return EngineError(503, f"{self.key} is served as {key}", retry_after=2, kind=ErrorKind.CLUSTER)
        return self.on_redirect(self, key)

    def _teardown(self, error: Optional[EngineError], reason: str = "") -> None:
        """The one way out: players ended, the grace and the ring closed, the registry told."""
        self.final = "failed" if error is not None else "stopped"
        self.error = error
        if error is not None:
            self.log.warn("{key} failed: {error}", key=self.key, error=error.message)
        else:
            self.log.info("stopping {key}: {reason}", key=self.key, reason=reason)
        self.grace.stop()
        self.roster.end(error)
        self.ring.close()
        self.hls.close()
        self.on_gone(self)

    # ------------------------------------------------------------ data

    def _on_data(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self.ring.feed(data)

    def _mirrored(self, size: int) -> None:
        self.bytes_in += size

    def _recovering(self) -> None:
        self.recoveries += 1
        self.ring.flush()
        self.ring.discontinuity()

    def _on_block(self, block: Block) -> None:
        role = self._role
        if isinstance(role, Owning):
            mark = self.hls.lead(block)
            self.coordinator.publish(self.key, role.lease_core.lease, block if mark is None else evolve(block, mark=mark))
        else:
            self.hls.follow(block)
        if role is not None:
            role.source.block_cut()
        for sink in self.roster:
            sink.wake()

    def _session_granted(self, granted: Granted) -> bool:
        """Read C{granted}'s session unless the engine says it is a stream another channel serves (then hand over)."""
        infohash = granted.session.infohash
        if infohash:
            canonical = stream_key("infohash", infohash)
            if canonical != self.key and self.on_canonical(self, canonical, granted):
                return False
        return True

    @property
    def engine_url(self) -> Optional[str]:
        """The engine the channel's session runs on (None before one was chosen, or for a follower)."""
        sources = self._engine_sources
        return sources[-1].engine_url if sources else None

    def _heartbeat_loop(self) -> LoopingCall:
        loop = LoopingCall(weakly(self._heartbeat))
        loop.clock = self.clock
        loop.start(self.settings.heartbeat, now=False).addErrback(
            lambda f: self.log.failure("heartbeat failed", f)
        )
        return loop

    def _heartbeat(self) -> None:
        """Refresh players' records from real delivery, and the stream's shared metadata."""
        # players waiting for the upstream (recovery, prebuffering) get no bytes but are watching
        self.roster.heartbeat(waiting_for_upstream=self.state != "live")
        if self.lease is not None:
            self.coordinator.update_stream(self.key, stream_metadata(self))

    # ------------------------------------------------------------ status

    def status(self) -> Dict[str, Any]:
        """What /status shows of this channel (see L{acetwist.channel.status})."""
        return channel_status(self)

    def bytes_out_total(self) -> int:
        return self.roster.bytes_out()

    def skips_total(self) -> int:
        return self.roster.skips()

    def bitrate(self) -> int:
        """Bits per second over the ring's history."""
        return ring_bitrate(self.ring)
