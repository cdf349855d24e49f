# -*- test-case-name: tests.test_coord_contract,tests.test_coord_memory -*-
"""
L{MemoryCoordinator}: the cluster state of a single process, on an injected
clock. It is what acetwist uses without C{--redis}, and a verified fake of
L{acetwist.coord.redis.RedisCoordinator} (the same contract tests run against
both). Several coordinators sharing one L{MemoryCluster} behave like several
workers sharing one Redis, which lets multi-worker logic be tested on a
C{task.Clock}. The shared state is in L{acetwist.coord.memory_cluster}.
"""

from __future__ import annotations

import os
import socket
from collections import deque
from typing import Any, Callable, Dict, Optional, Set

import attr
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from acetwist.coord.base import empty_view, field_text, record_dict
from acetwist.coord.memory_cluster import MemoryCluster, MemoryFollower, _Mirror
from acetwist.coord.settings import CoordSettings
from acetwist.engines.ledger import MemoryLedger
from acetwist.interfaces import Block, ClaimResult, ClientRecord, ICoordinator, Lease, Redirect

__all__ = ["MemoryCoordinator", "MemoryCluster", "MemoryFollower", "_Mirror"]


@implementer(ICoordinator)
class MemoryCoordinator:
    """
    One worker's view of a L{MemoryCluster} (a private one unless given).
    Every method answers at once; nothing is ever unavailable.
    """

    backend = "memory"

    def __init__(
        self,
        worker_id: str,
        clock: IReactorTime,
        cluster: Optional[MemoryCluster] = None,
        settings: Optional[CoordSettings] = None,
    ) -> None:
        self.worker_id = worker_id
        self.clock = clock
        self.cluster = cluster if cluster is not None else MemoryCluster(clock)
        self.settings = settings if settings is not None else CoordSettings()
        self.started_at = float(clock.seconds())
        self.counters: Dict[str, int] = {}
        self._followers: Set[MemoryFollower] = set()
        self._clients: Dict[str, ClientRecord] = {}
        self._heartbeat: Optional[LoopingCall] = None

    @property
    def reclaim_margin(self) -> float:
        """See L{CoordSettings.reclaim_margin}."""
        return self.settings.reclaim_margin

    def engine_ledger(self, committed_ttl: float = 30.0) -> MemoryLedger:
        """The engine load ledger of this cluster (shared with every coordinator of it)."""
        return MemoryLedger(self.clock, self.cluster.engine_slots, committed_ttl=committed_ttl)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Deferred[None]:
        if self._heartbeat is None:
            self._heartbeat = LoopingCall(self._beat)
            self._heartbeat.clock = self.clock
            self._heartbeat.start(self.settings.heartbeat_interval, now=True)
        return succeed(None)

    def stop(self) -> Deferred[None]:
        self._halt()
        self.cluster.workers.pop(self.worker_id, None)
        for client_id in list(self._clients):
            self.cluster.clients.pop(client_id, None)
        self._clients.clear()
        return succeed(None)

    def _halt(self) -> None:
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        self._heartbeat = None
        for follower in list(self._followers):
            follower.stop()
        self._followers.clear()

    def _crash(self) -> None:
        """For tests: stop all background work but leave our records behind, like a killed process."""
        self._halt()

    def _beat(self) -> None:
        now = self.cluster.now()
        self.cluster.prune()
        self.cluster.workers[self.worker_id] = (
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "started_at": self.started_at,
                "heartbeat_at": now,
                "clients": len(self._clients),
            },
            now + self.settings.worker_ttl,
        )

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def stats(self) -> Dict[str, int]:
        """Counters (published, publish_fenced, ...) and current sizes, for /status and /metrics."""
        out = dict(self.counters)
        out["followers"] = len(self._followers)
        out["in_flight"] = 0
        return out

    # ------------------------------------------------------------ ownership

    def claim(self, stream_key: str, aliases: bool = True) -> Deferred[ClaimResult]:
        cluster = self.cluster
        if cluster.lease(stream_key) is not None:
            return succeed(None)
        other = cluster.alias(stream_key) if aliases else None
        if other is not None and cluster.lease(other) is not None:
            self._count("claims_redirected")
            return succeed(Redirect(other))
        epoch = cluster.epochs.get(stream_key, 0) + 1
        cluster.epochs[stream_key] = epoch
        lease = Lease(self.worker_id, epoch)
        now = cluster.now()
        cluster.leases[stream_key] = (lease, now + self.settings.lease)
        cluster.index_stream(stream_key, now + max(self.settings.lease, self.settings.stream_ttl))
        self._count("claims_won")
        return succeed(lease)

    def alias(self, stream_key: str, canonical: str) -> Deferred[Optional[Lease]]:
        cluster = self.cluster
        expires = cluster.now() + self.settings.alias_ttl
        cluster.aliases[stream_key] = (canonical, expires)
        cluster.aliases[canonical] = (stream_key, expires)
        return succeed(cluster.lease(canonical))

    def renew(self, stream_key: str, lease: Lease) -> Deferred[bool]:
        cluster = self.cluster
        if cluster.lease(stream_key) != lease:
            return succeed(False)
        now = cluster.now()
        cluster.leases[stream_key] = (lease, now + self.settings.lease)
        cluster.index_stream(stream_key, now + max(self.settings.lease, self.settings.stream_ttl))
        meta = cluster.metadata.get(stream_key)
        if meta is not None and meta[1] > now:
            cluster.metadata[stream_key] = (meta[0], now + self.settings.stream_ttl)
        return succeed(True)

    def release(self, stream_key: str, lease: Lease) -> Deferred[None]:
        if self.cluster.lease(stream_key) == lease:
            del self.cluster.leases[stream_key]
        return succeed(None)

    def owner(self, stream_key: str) -> Deferred[Optional[Lease]]:
        return succeed(self.cluster.lease(stream_key))

    # ------------------------------------------------------------ mirror

    def publish(self, stream_key: str, lease: Lease, block: Block) -> None:
        cluster = self.cluster
        if cluster.lease(stream_key) != lease:
            self._count("publish_fenced")
            return
        mirror = cluster.mirror(stream_key)
        if mirror is None:
            mirror = cluster.mirrors[stream_key] = _Mirror(deque(maxlen=self.settings.mirror_maxlen), 0.0)
        mirror.entries.append((cluster.next_id(), block, lease.epoch))
        mirror.expires = cluster.now() + self.settings.mirror_ttl
        self._count("published")
        for follower in list(cluster.followers.get(stream_key, ())):
            follower.pump()

    def follow(
        self, stream_key: str, on_block: Callable[[Block, int], None], from_start: bool = False,
        backlog: float = 0.0,
    ) -> MemoryFollower:
        follower = MemoryFollower(self.cluster, stream_key, on_block, from_start, self._followers.discard,
                                  backlog=backlog)
        self.cluster.followers.setdefault(stream_key, set()).add(follower)
        self._followers.add(follower)
        return follower

    # ------------------------------------------------------------ players

    def _write_client(self, record: ClientRecord) -> None:
        now = self.cluster.now()
        record = attr.evolve(record)
        self._clients[record.client_id] = record
        self.cluster.clients[record.client_id] = (record, now + self.settings.client_ttl)
        self.cluster.index_stream(record.stream_key, now + self.settings.client_ttl)

    def client_joined(self, record: ClientRecord) -> None:
        self._write_client(record)

    def client_progress(self, record: ClientRecord) -> None:
        self._write_client(record)

    def client_left(self, record: ClientRecord) -> None:
        self._clients.pop(record.client_id, None)
        self.cluster.clients.pop(record.client_id, None)

    def client_count(self, stream_key: str) -> Deferred[int]:
        """Always known: the records live in this process and are never lost behind its back."""
        return succeed(len(self.cluster.live_clients(stream_key)))

    # ------------------------------------------------------------ streams

    def update_stream(self, stream_key: str, fields: Dict[str, Any]) -> None:
        cluster = self.cluster
        now = cluster.now()
        held = cluster.metadata.get(stream_key)
        meta = dict(held[0]) if held is not None and held[1] > now else {}
        meta.update({str(k): field_text(v) for k, v in fields.items()})
        cluster.metadata[stream_key] = (meta, now + self.settings.stream_ttl)
        cluster.index_stream(stream_key, now + self.settings.stream_ttl)

    def stream_gone(self, stream_key: str) -> None:
        cluster = self.cluster
        lease = cluster.lease(stream_key)
        if lease is not None and lease.owner != self.worker_id:
            # Someone else owns it again: its mirror and metadata are not ours to delete.
            return
        cluster.mirrors.pop(stream_key, None)
        cluster.metadata.pop(stream_key, None)
        cluster.streams.pop(stream_key, None)

    def cluster_view(self) -> Deferred[Dict[str, Any]]:
        cluster = self.cluster
        cluster.prune()
        view = empty_view(self.backend, True)
        for worker_id, (info, _) in sorted(cluster.workers.items()):
            view["workers"][worker_id] = dict(info)
        live = cluster.live_clients()
        for stream_key in sorted(cluster.streams):
            lease = cluster.lease(stream_key)
            held = cluster.metadata.get(stream_key)
            view["streams"][stream_key] = {
                "owner": lease.owner if lease else None,
                "epoch": lease.epoch if lease else None,
                "metadata": dict(held[0]) if held else {},
                "clients": sum(1 for r in live if r.stream_key == stream_key),
            }
        # Like Redis, players are found through the streams they watch.
        for record in sorted(live, key=lambda r: (r.worker, r.connected_at, r.client_id)):
            if record.stream_key in view["streams"]:
                view["players"].setdefault(record.worker, []).append(record_dict(record))
        return succeed(view)
