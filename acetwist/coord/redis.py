# -*- test-case-name: tests.test_coord_contract,tests.test_coord_redis -*-
"""
L{RedisCoordinator}: many acetwist processes (one host or many) sharing one
Redis act as one proxy. The key layout, the TTLs and the ownership rules are
described in C{docs/redis.md}; the pieces live next to this module:
L{acetwist.coord.scripts} (the Lua), L{acetwist.coord.keys} (the key
names), L{acetwist.coord.link} (connections and their health),
L{acetwist.coord.commands} (requests and fire-and-forget writes),
L{acetwist.coord.follower} (reading a mirror), L{acetwist.coord.players}
(player records and counts) and L{acetwist.coord.view}.

How Redis trouble is kept away from the streaming path:

- every command has a deadline (C{command_timeout}); a connection whose
  command missed it is dropped and re-established (so a hung Redis cannot
  make us buffer writes without bound);
- fire-and-forget writes (mirror publishes, heartbeats, player records,
  metadata) are skipped and counted while no connection is up or while
  C{max_in_flight} of them are unanswered; they resume by themselves;
- request-style calls wait for a connection at most until their deadline.

Requires Redis >= 5.0 (streams; scripts replicated by effects) and a
standalone server or a Sentinel-managed primary's address; Redis Cluster is
not supported (scripts touch keys of several streams).
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Set

from twisted.internet import defer
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from acetwist.coord import scripts
from acetwist.coord.base import (
    CoordinatorUnavailable,
    CountUnknown,
    field_text,
    lease_value,
    parse_lease,
)
from acetwist.coord.commands import Commands
from acetwist.coord.follower import RedisFollower
from acetwist.coord.keys import Keys
from acetwist.coord.link import Link
from acetwist.deferreds import observe
from acetwist.coord.players import RedisPlayers
from acetwist.coord.settings import RedisSettings
from acetwist.coord.view import cluster_view, local_view
from acetwist.interfaces import Block, ClaimResult, ClientRecord, ICoordinator, Lease, Redirect

if TYPE_CHECKING:
    from acetwist.coord.ledger import RedisLedger

__all__ = ["RedisCoordinator", "RedisFollower", "RedisSettings", "CoordinatorUnavailable", "CountUnknown"]

log = Logger()


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


@implementer(ICoordinator)
class RedisCoordinator:
    """
    One worker's access to the cluster state in Redis.

    When Redis cannot answer within C{command_timeout}: C{claim}, C{renew}
    and C{owner} errback with L{CoordinatorUnavailable}, C{client_count}
    with L{CountUnknown}; C{release} fires None anyway (the lease will
    expire); C{cluster_view} fires with C{"available": False}, this worker
    and its own players; the fire-and-forget methods skip and count.
    """

    backend = "redis"

    def __init__(self, settings: RedisSettings, worker_id: str,
                 reactor: Optional[IReactorTime] = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        assert reactor is not None
        self.settings = settings
        self.worker_id = worker_id
        self.reactor = reactor
        self.keys = Keys(settings.prefix)
        self.started_at = float(reactor.seconds())
        self._link = Link(settings, reactor, settings.poolsize, "coordinator", on_up=self._reconnected)
        self._commands = Commands(self._link, settings, reactor)
        self._heartbeat: Optional[LoopingCall] = None
        self._followers: Set[RedisFollower] = set()
        self._closing: Set[Deferred[Any]] = set()
        self._players = RedisPlayers(self._commands, self.keys, settings, reactor, self._link)
        self._started = False
        self._stop_d: Optional[Deferred[Any]] = None

    @property
    def reclaim_margin(self) -> float:
        """See L{RedisSettings.reclaim_margin}."""
        return self.settings.reclaim_margin

    @property
    def connected(self) -> bool:
        return self._link.up

    @property
    def in_flight(self) -> int:
        return self._commands.in_flight

    @property
    def max_in_flight_seen(self) -> int:
        return self._commands.max_in_flight_seen

    def stats(self) -> Dict[str, int]:
        """Counters (published, publish_skipped, publish_fenced, ...) and current sizes."""
        out = self._commands.stats()
        out.update(followers=len(self._followers), connected=int(self._link.up), connects=self._link.connects)
        return out

    def engine_ledger(self, committed_ttl: float = 30.0) -> "RedisLedger":
        """The engine load ledger of this cluster, sent over this coordinator's connections."""
        from acetwist.coord.ledger import RedisLedger

        return RedisLedger(self._commands, self.keys, committed_ttl=committed_ttl)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Deferred[None]:
        """
        Connect and start heartbeats. The Deferred fires when connected or
        after C{command_timeout}, whichever is first (never errbacks: a
        worker starts without Redis and catches up when it appears).
        """
        if not self._started:
            self._started = True
            self._link.start()
            self._heartbeat = LoopingCall(self._beat)
            self._heartbeat.clock = self.reactor
            self._heartbeat.start(self.settings.heartbeat_interval, now=True)
        d = self._link.when_up()
        d.addTimeout(self.settings.command_timeout, self.reactor)
        return d.addErrback(lambda f: None)

    def _reconnected(self) -> None:
        # Register at once after (re)connecting instead of at the next tick.
        if self._heartbeat is not None and self._heartbeat.running:
            self._beat()

    def _beat(self) -> None:
        s = self.settings
        self._commands.fire("heartbeat", self.worker_id, scripts.HEARTBEAT(
            worker_key=self.keys.worker(self.worker_id), workers_key=self.keys.workers,
            since_key=self.keys.since,
            worker=self.worker_id, ttl_ms=_ms(s.worker_ttl), host=socket.gethostname(), pid=os.getpid(),
            started_at=f"{self.started_at:.3f}", clients=len(self._players.records), since_ttl_ms=_ms(s.data_set_ttl),
        ))

    def _halt(self) -> Deferred[Any]:
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        self._heartbeat = None
        for follower in list(self._followers):
            follower.stop()
        # Also waits for followers stopped earlier whose connections are still closing.
        return defer.DeferredList([observe(d) for d in list(self._closing)])

    def _follower_stopped(self, follower: RedisFollower, closed: Deferred[None]) -> None:
        self._followers.discard(follower)
        self._closing.add(closed)

        def forget(result: Any) -> Any:
            self._closing.discard(closed)
            return result

        closed.addBoth(forget)

    @inlineCallbacks
    def _stop(self, forget: bool) -> Any:
        yield self._halt()
        if forget and self._link.up:
            d = self._commands.request("forget_worker", self.worker_id, scripts.FORGET_WORKER(
                worker_key=self.keys.worker(self.worker_id), workers_key=self.keys.workers,
                player_keys=self._players.keys_of_all(), worker=self.worker_id,
                client_ids=list(self._players.records),
            ), last=True)
            yield d.addErrback(lambda f: None)
        self._players.clear()
        yield self._link.close()

    def _begin_stop(self, forget: bool) -> Deferred[None]:
        if self._stop_d is None:
            self._commands.stopping = True
            self._stop_d = self._stop(forget)
            self._stop_d.addErrback(lambda f: log.failure("stopping the Redis coordinator", f))
        return observe(self._stop_d)

    def stop(self) -> Deferred[None]:
        """
        Stop heartbeats and followers, delete this worker's key and its
        players' records (bounded by C{command_timeout}), close connections.
        Never errbacks.
        """
        return self._begin_stop(forget=True)

    def _crash(self) -> Deferred[None]:
        """For tests: stop and disconnect without deleting anything, like a killed process."""
        return self._begin_stop(forget=False)

    # ------------------------------------------------------------ ownership

    def claim(self, stream_key: str, aliases: bool = True) -> Deferred[ClaimResult]:
        s = self.settings
        d = self._commands.request("claim", stream_key, scripts.CLAIM(
            owner_key=self.keys.owner(stream_key), epoch_key=self.keys.epoch(stream_key),
            streams_key=self.keys.streams, alias_key=self.keys.alias(stream_key), worker=self.worker_id,
            lease_ms=s.lease_ms, epoch_ttl_ms=_ms(s.epoch_ttl), stream=stream_key,
            index_ttl_ms=max(s.lease_ms, _ms(s.stream_ttl)), prefix=s.prefix, aliases="1" if aliases else "0",
        ))

        def claimed(reply: List[Any]) -> ClaimResult:
            won, value = int(reply[0]), reply[1]
            if won == 2:
                self._commands.count("claims_redirected")
                return Redirect(field_text(value))
            if won != 1:
                self._commands.count("claims_lost")
                return None
            self._commands.count("claims_won")
            return parse_lease(value)

        return d.addCallback(claimed)

    def alias(self, stream_key: str, canonical: str) -> Deferred[Optional[Lease]]:
        d = self._commands.request("alias", stream_key, scripts.ALIAS(
            alias_key=self.keys.alias(stream_key), canonical_alias_key=self.keys.alias(canonical),
            canonical_owner_key=self.keys.owner(canonical), stream=stream_key, canonical=canonical,
            ttl_ms=_ms(self.settings.alias_ttl),
        ))
        return d.addCallback(parse_lease)

    def renew(self, stream_key: str, lease: Lease) -> Deferred[bool]:
        s = self.settings
        d = self._commands.request("renew", stream_key, scripts.RENEW(
            owner_key=self.keys.owner(stream_key), epoch_key=self.keys.epoch(stream_key),
            meta_key=self.keys.meta(stream_key), streams_key=self.keys.streams,
            lease=lease_value(lease.owner, lease.epoch), lease_ms=s.lease_ms, epoch_ttl_ms=_ms(s.epoch_ttl),
            stream=stream_key, index_ttl_ms=max(s.lease_ms, _ms(s.stream_ttl)),
            stream_ttl_ms=_ms(s.stream_ttl),
        ))
        return d.addCallback(lambda reply: reply == 1)

    def release(self, stream_key: str, lease: Lease) -> Deferred[None]:
        d = self._commands.request("release", stream_key, scripts.RELEASE(
            owner_key=self.keys.owner(stream_key), lease=lease_value(lease.owner, lease.epoch),
        ))
        return d.addCallbacks(lambda _: None, lambda f: None)

    def owner(self, stream_key: str) -> Deferred[Optional[Lease]]:
        d = self._commands.request("owner", stream_key, ["GET", self.keys.owner(stream_key)])
        return d.addCallback(parse_lease)

    # ------------------------------------------------------------ mirror

    def publish(self, stream_key: str, lease: Lease, block: Block) -> None:
        d = self._commands.fire("publish", stream_key, scripts.PUBLISH(
            owner_key=self.keys.owner(stream_key), mirror_key=self.keys.mirror(stream_key),
            lease=lease_value(lease.owner, lease.epoch), maxlen=self.settings.mirror_maxlen,
            ttl_ms=_ms(self.settings.mirror_ttl), data=block.data, keyframe=b"1" if block.keyframe else b"0",
            psi=block.psi, epoch=lease.epoch, seq=block.seq, segment=block.segment,
            created=repr(float(block.created)), hls=block.mark.encode() if block.mark is not None else b"",
        ))
        if d is not None:
            d.addCallback(self._published)

    def _published(self, reply: Any) -> None:
        if reply == 1:
            self._commands.count("published")
        elif reply == 0:
            self._commands.count("publish_fenced")

    def follow(self, stream_key: str, on_block: Callable[[Block, int], None],
               from_start: bool = False, backlog: float = 0.0) -> RedisFollower:
        follower = RedisFollower(self.settings, self.reactor, stream_key, self.keys.mirror(stream_key),
                                 on_block, from_start, self._follower_stopped, backlog=backlog)
        self._followers.add(follower)
        if self._commands.stopping:
            follower.stop()
        return follower

    # ------------------------------------------------------------ players

    def client_joined(self, record: ClientRecord) -> None:
        self._players.joined(record)

    def client_progress(self, record: ClientRecord) -> None:
        """See L{RedisPlayers.progress}: at most one write per C{progress_interval}."""
        self._players.progress(record)

    def client_left(self, record: ClientRecord) -> None:
        self._players.left(record)

    def client_count(self, stream_key: str) -> Deferred[int]:
        """See L{RedisPlayers.count}: a number, or L{CountUnknown} when Redis's records may be incomplete."""
        return self._players.count(stream_key)

    # ------------------------------------------------------------ streams

    def update_stream(self, stream_key: str, fields: Dict[str, Any]) -> None:
        flat: List[str] = []
        for name, value in fields.items():
            flat += [str(name), field_text(value)]
        self._commands.fire("update_stream", stream_key, scripts.UPDATE_STREAM(
            meta_key=self.keys.meta(stream_key), streams_key=self.keys.streams, stream=stream_key,
            stream_ttl_ms=_ms(self.settings.stream_ttl), fields=flat,
        ))

    def stream_gone(self, stream_key: str) -> None:
        self._commands.fire("stream_gone", stream_key, scripts.STREAM_GONE(
            owner_key=self.keys.owner(stream_key), mirror_key=self.keys.mirror(stream_key),
            meta_key=self.keys.meta(stream_key), streams_key=self.keys.streams,
            worker=self.worker_id, stream=stream_key,
        ))

    def cluster_view(self) -> Deferred[Dict[str, Any]]:
        d = self._commands.request("cluster_view", "", scripts.CLUSTER_VIEW(prefix=self.settings.prefix))
        return d.addCallbacks(lambda reply: cluster_view(reply, self.backend), self._local_view)

    def _local_view(self, failure: Failure) -> Dict[str, Any]:
        return local_view(self.backend, failure.getErrorMessage(), self.worker_id, self.started_at,
                          self._players.records.values())
