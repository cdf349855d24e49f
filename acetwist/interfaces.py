"""
The seams between acetwist's parts, as zope interfaces and small value types.

- A L{Block} is the unit of the data path: whole TS packets cut by the ring,
  fanned out to sinks, mirrored to Redis, followed by other workers.
- L{ICoordinator} is what a channel needs from "the cluster": ownership of a
  stream key, a buffer mirror, client records and the cluster view. The
  in-memory implementation serves a single process; the Redis one makes many
  processes act as one proxy.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Union

import attr
from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface


@attr.s(frozen=True, slots=True, auto_attribs=True)
class SegmentMark:
    """
    An HLS segment begins at this block (decided by the owner, carried by its
    mirror, so every worker cuts the same segments with the same numbers).

    @ivar sequence: the media sequence number of the segment beginning here.
    @ivar discontinuity: its discontinuity sequence number (segments after a
        splice have a higher one, and an C{#EXT-X-DISCONTINUITY} before them).
    @ivar previous_duration: the C{#EXTINF} of segment C{sequence - 1}, which
        ends here (0 when there is none).
    """

    sequence: int
    discontinuity: int
    previous_duration: float

    def encode(self) -> bytes:
        return f"{self.sequence} {self.discontinuity} {self.previous_duration!r}".encode()

    @classmethod
    def decode(cls, text: bytes) -> Optional["SegmentMark"]:
        """The mark C{encode} wrote, or None for an empty or malformed one."""
        try:
            sequence, discontinuity, duration = text.split()
            return cls(int(sequence), int(discontinuity), float(duration))
        except ValueError:
            return None


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Block:
    """
    A run of whole 188-byte packets.

    @ivar seq: position in the ring, increasing by one per block.
    @ivar data: the packets.
    @ivar keyframe: the first packet is a random-access point (a client may
        start here).
    @ivar psi: the PAT and PMT packets in force at this block's start, to be
        sent before C{data} when a client starts here (empty if unknown).
    @ivar segment: increases whenever the upstream is replaced (reconnect, new
        engine session, takeover); a client crossing into a new segment waits
        for a keyframe block.
    @ivar created: clock time the block was cut.
    @ivar mark: the HLS segment that begins here, on a block that came from
        the owner's mirror (see L{SegmentMark}), else None.
    """

    seq: int
    data: bytes
    keyframe: bool
    psi: bytes
    segment: int
    created: float
    mark: Optional[SegmentMark] = None


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Lease:
    """Ownership of one stream key: who holds it and its fencing epoch."""

    owner: str
    epoch: int


@attr.s(frozen=True, slots=True, auto_attribs=True)
class Redirect:
    """
    A claim's answer: nobody owns the key asked for, but it is known to be
    the same stream as C{key} (an alias the engine revealed), which a live
    worker owns. Ask for C{key} instead.
    """

    key: str


#: what L{ICoordinator.claim} fires with
ClaimResult = Union[Lease, Redirect, None]


@attr.s(slots=True, auto_attribs=True)
class ClientRecord:
    """What the cluster knows of one player connection."""

    client_id: str
    stream_key: str
    worker: str
    ip: str
    user_agent: str
    connected_at: float
    bytes_sent: int = 0


class IFollower(Interface):
    """A running subscription to another worker's mirrored blocks."""

    def stop() -> "Deferred[None]":
        """Stop following; no more blocks are delivered after this returns. Fires when the subscription is closed."""


class ICoordinator(Interface):
    """
    Cluster state for one acetwist process. Every method returns at once or a
    Deferred that fires within the coordinator's own command timeout: cluster
    trouble never blocks or grows the streaming path.
    """

    worker_id = Attribute("This process's worker id (str).")
    reclaim_margin = Attribute(
        "Seconds a live owner may need, beyond a renew interval, to notice that its lease vanished and claim it"
        " again (float); a follower waits longer than that before taking over."
    )

    def start() -> Optional[Deferred[None]]:
        """Begin heartbeats and whatever background work the coordinator needs."""

    def stop() -> Deferred[None]:
        """Stop background work and remove this worker's records where possible."""

    def claim(stream_key: str, aliases: bool = True) -> Deferred[ClaimResult]:
        """
        Try to become the owner of C{stream_key}. Must be called before the
        engine is contacted. Fires with:

        - the new L{Lease} (a fresh, higher epoch) on success;
        - None when another live worker owns C{stream_key};
        - L{Redirect} when nobody owns C{stream_key} but it is an alias (see
          L{alias}) of a key a live worker owns, and C{aliases} is true.

        One atomic step: no alias recorded, and no owner taken, between the
        look-up and the claim is missed.
        """

    def alias(stream_key: str, canonical: str) -> Deferred[Optional[Lease]]:
        """
        Record that C{stream_key} and C{canonical} name the same stream (both
        ways, with a TTL), so that a claim of either, while nobody owns it
        and the other is owned, is redirected to the other. Fires, in the
        same atomic step, with the lease of C{canonical} when a worker holds
        it (the owner of C{stream_key}, which learned the alias from its
        engine session, then defers to that worker), else None.
        """

    def renew(stream_key: str, lease: Lease) -> Deferred[bool]:
        """Extend C{lease}; False means it was lost (expired or taken)."""

    def release(stream_key: str, lease: Lease) -> Deferred[None]:
        """Give up C{lease} if it is still ours (compare-and-delete)."""

    def owner(stream_key: str) -> Deferred[Optional[Lease]]:
        """The current lease of C{stream_key}, or None when nobody owns it."""

    def publish(stream_key: str, lease: Lease, block: Block) -> None:
        """
        Mirror C{block} for followers, fire and forget. Skipped (and counted)
        while the backend is away or too many publishes are in flight.
        """

    def follow(
        stream_key: str,
        on_block: Callable[[Block, int], None],
        from_start: bool = False,
        backlog: float = 0.0,
    ) -> IFollower:
        """
        Deliver blocks mirrored for C{stream_key} to C{on_block(block, epoch)}
        as they are published, starting at the newest keyframe block (or the
        oldest mirrored block if C{from_start}); with a C{backlog}, at the
        newest keyframe block created at least that many seconds before the
        newest block (publisher's clock; else the oldest keyframe block of the
        newest keyframe's epoch and segment). Blocks from an epoch lower
        than the highest one already delivered are never delivered. The
        delivered blocks' C{seq} and C{segment} are the publisher's; the
        follower re-numbers them into its own ring.
        """

    def client_joined(record: ClientRecord) -> None:
        """Record a player connection (fire and forget, with a TTL)."""

    def client_progress(record: ClientRecord) -> None:
        """Refresh a player's record from real delivery (bytes sent)."""

    def client_left(record: ClientRecord) -> None:
        """Remove a player's record."""

    def client_count(stream_key: str) -> Deferred[int]:
        """
        Players on C{stream_key} across the cluster (live records only). Fails
        (with L{acetwist.coord.base.CountUnknown}) when the count cannot be
        trusted: the cluster cannot be asked, or its records may be incomplete
        (Redis came back empty recently). An unknown count is never zero.
        """

    def update_stream(stream_key: str, fields: Dict[str, Any]) -> None:
        """Merge C{fields} into the stream's shared metadata (fire and forget)."""

    def stream_gone(stream_key: str) -> None:
        """Delete the stream's shared metadata and mirror (the owner's stop)."""

    def cluster_view() -> Deferred[Dict[str, Any]]:
        """Workers, streams with owner/epoch/metadata, and every worker's players."""


class ISink(Interface):
    """One player's connection as a channel sees it."""

    bytes_sent = Attribute("Bytes written to the player so far (int).")
    skips = Attribute("Times the player fell too far behind and skipped ahead (int).")
    lag_bytes = Attribute("Bytes the player is behind the newest block (int).")
    paused = Attribute("The player's socket is full (bool).")
    started = Attribute("The player got its first byte (bool).")
    done = Attribute("Deferred that fires when the stream ends (errbacks before the first byte on a failure).")

    def start() -> None:
        """Begin: position at the newest keyframe, or wait for one."""

    def wake() -> None:
        """A new block is in the ring."""

    def finish() -> None:
        """End the stream cleanly."""

    def fail(error: Exception) -> None:
        """End with C{error}: an HTTP error before the first byte, an aborted connection after it."""

    def rebind(ring: Any, on_close: Callable[[Any, str], None]) -> None:
        """Read another channel's ring from now on, and report the end there."""


class IStreamSource(Interface):
    """Where a channel's bytes come from: the engine, or another worker's mirror."""

    phase = Attribute("C{starting}, C{prebuffering}, C{live} or C{recovering} (str).")

    def start() -> None:
        """Begin delivering data to the channel."""

    def stop() -> None:
        """Stop delivering, cancelling whatever the source is waiting for; nothing is delivered after this."""
