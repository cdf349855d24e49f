"""A coordinator that tests program by hand (another owner, refused renewals, players elsewhere)."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from acetwist.interfaces import Block, ClaimResult, ClientRecord, ICoordinator, IFollower, Lease, Redirect


@implementer(IFollower)
class FakeFollower:
    """A subscription the test feeds by calling C{on_block(block, epoch)}."""

    def __init__(self, on_block: Callable[[Block, int], None], backlog: float = 0.0) -> None:
        self.on_block = on_block
        #: the backlog the follower was asked for
        self.backlog = backlog
        self.stopped = False

    def stop(self) -> "Deferred[None]":
        self.stopped = True
        return succeed(None)


@implementer(ICoordinator)
class FakeCoordinator:
    """
    A programmable coordinator: C{other_owner} simulates another worker
    holding the lease, C{renew_ok} whether renewals succeed, C{cluster_clients}
    the players other workers report (or C{count_error}, a count that cannot
    be had). C{owners} gives keys other workers own, one by one (claims of
    them are refused; L{alias} answers them); C{redirects} maps keys whose
    claims (with aliases) are redirected to another key; C{pending_aliases}, when a list, holds the Deferreds of
    L{alias} calls for the test to fire. It records what the channel tells
    it (C{claimed}: the keys claimed and whether aliases were followed;
    C{aliases}: the pairs learned).
    """

    worker_id = "test-worker"
    reclaim_margin = 2.5

    def __init__(self) -> None:
        self.epoch = 0
        self.other_owner: Optional[Lease] = None
        self.renew_ok = True
        self.cluster_clients = 0
        self.count_error: Optional[Exception] = None
        self.claims = 0
        self.published: List[Tuple[int, Block]] = []
        self.joined: List[ClientRecord] = []
        self.progress: List[ClientRecord] = []
        self.left: List[ClientRecord] = []
        self.released: List[str] = []
        self.gone: List[str] = []
        self.followers: List[FakeFollower] = []
        self.metadata: List[Dict[str, Any]] = []
        self.redirects: Dict[str, str] = {}
        self.owners: Dict[str, Lease] = {}
        self.claimed: List[Tuple[str, bool]] = []
        self.aliases: List[Tuple[str, str]] = []
        self.pending_aliases: Optional[List["Deferred[Optional[Lease]]"]] = None

    def start(self) -> None:
        pass

    def stop(self) -> "Deferred[None]":
        return succeed(None)

    def claim(self, stream_key: str, aliases: bool = True) -> "Deferred[ClaimResult]":
        self.claims += 1
        self.claimed.append((stream_key, aliases))
        if self.other_owner is not None or stream_key in self.owners:
            return succeed(None)
        if aliases and stream_key in self.redirects:
            return succeed(Redirect(self.redirects[stream_key]))
        self.epoch += 1
        return succeed(Lease(self.worker_id, self.epoch))

    def alias(self, stream_key: str, canonical: str) -> "Deferred[Optional[Lease]]":
        self.aliases.append((stream_key, canonical))
        if self.pending_aliases is not None:
            d: "Deferred[Optional[Lease]]" = Deferred()
            self.pending_aliases.append(d)
            return d
        return succeed(self.owners.get(canonical))

    def renew(self, stream_key: str, lease: Lease) -> "Deferred[bool]":
        return succeed(self.renew_ok and self.other_owner is None)

    def release(self, stream_key: str, lease: Lease) -> "Deferred[None]":
        self.released.append(stream_key)
        return succeed(None)

    def owner(self, stream_key: str) -> "Deferred[Optional[Lease]]":
        return succeed(self.owners.get(stream_key, self.other_owner))

    def publish(self, stream_key: str, lease: Lease, block: Block) -> None:
        self.published.append((lease.epoch, block))

    def follow(self, stream_key: str, on_block: Callable[[Block, int], None], from_start: bool = False,
               backlog: float = 0.0) -> FakeFollower:
        follower = FakeFollower(on_block, backlog)
        self.followers.append(follower)
        return follower

    def client_joined(self, record: ClientRecord) -> None:
        self.joined.append(record)

    def client_progress(self, record: ClientRecord) -> None:
        self.progress.append(record)

    def client_left(self, record: ClientRecord) -> None:
        self.left.append(record)

    def client_count(self, stream_key: str) -> "Deferred[int]":
        if self.count_error is not None:
            return fail(self.count_error)
        return succeed(self.cluster_clients)

    def update_stream(self, stream_key: str, fields: Dict[str, Any]) -> None:
        self.metadata.append(fields)

    def stream_gone(self, stream_key: str) -> None:
        self.gone.append(stream_key)

    def cluster_view(self) -> "Deferred[Dict[str, Any]]":
        return succeed({"workers": [self.worker_id], "streams": {}})
