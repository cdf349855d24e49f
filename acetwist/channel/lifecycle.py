"""
The channel's own lifecycle: C{claiming -> owning | following -> stopped |
failed}, and C{owning <-> following} when the lease changes hands. A claim
(the first one, or a follower's takeover) answered with a L{Redirect} (the
stream is owned under another key) ends the channel after its players moved
to the channel for that key. An owner whose first session ends before any
data the way a session superseded by another worker's start call does
(C{GONE}, C{UNREACHABLE}) claims again once instead of failing: the other
worker's key is then found (redirect, or follow) or the claim is won anew.

Owning's data is the lease holder, the engine source and the heartbeat;
following's is the mirror source, the owner watch and the heartbeat. The
channel (the machine's core, L{LifecycleCore}) builds them on the way in and
the transitions out stop them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol

from automat import TypeMachineBuilder
from twisted.internet.task import LoopingCall

from acetwist.channel.engine_source import EngineSource
from acetwist.channel.lease import ILeaseHolder, LeaseCore
from acetwist.channel.mirror_source import MirrorSource, OwnerWatch
from acetwist.errors import EngineError, ErrorKind
from acetwist.interfaces import ClaimResult, ICoordinator, Lease, Redirect


@dataclass
class Owning:
    lease: ILeaseHolder
    lease_core: LeaseCore
    source: EngineSource
    heartbeat: LoopingCall


@dataclass
class Following:
    source: MirrorSource
    watch: OwnerWatch
    heartbeat: LoopingCall


class ChannelParts(Protocol):
    """What the lifecycle needs of its channel."""

    def _own(self, lifecycle: "Lifecycle", lease: Lease) -> "Owning":
        """Build and start what owning needs: lease holder, engine source, heartbeat."""

    def _follow(self, lifecycle: "Lifecycle") -> "Following":
        """Build and start what following needs: mirror source, owner watch, heartbeat."""

    def _release(self, owning: "Owning") -> None:
        """The end of owning: stop the source and the engine session, release the lease."""

    def _unfollow(self, following: "Following") -> None:
        """The end of following."""

    def _teardown(self, error: Optional[EngineError], reason: str = "") -> None:
        """The one way out."""

    def _reset(self, owning: "Owning") -> None:
        """The end of owning before claiming again: as L{_release}, and no role until the claim is answered."""

    def _redirect(self, key: str) -> Optional[EngineError]:
        """Hand the players to the channel for C{key}, the same stream; the error to end with if that cannot be."""


@dataclass
class LifecycleCore:
    """
    The lifecycle's core: the stream key and the coordinator, held strongly
    (a lease granted after the channel is gone is still given back), and the
    channel, held through a weak proxy (the channel holds the machine).
    """

    key: str
    coordinator: ICoordinator
    channel: ChannelParts


class Lifecycle(Protocol):
    def start(self) -> None:
        """Claim the stream key."""

    def stop(self, reason: str) -> None:
        """End the channel: players closed, the engine session stopped once."""

    def fail(self, error: EngineError) -> None:
        """End the channel with C{error} for every player."""

    def handed_over(self) -> None:
        """Our players went to another channel with our engine session: end quietly."""

    def _won(self, lease: Lease) -> None: ...

    def _lost(self) -> None: ...

    def _claim_failed(self, error: EngineError) -> None: ...

    def _demoted(self) -> None: ...

    def _took_over(self, lease: Lease) -> None: ...

    def _redirected(self, key: str) -> None: ...

    def _restart(self) -> None:
        """The first session ended before any data, as a superseded one does: release and claim again."""


def on_claimed(m: Lifecycle, result: ClaimResult) -> None:
    """Feed a claim's answer to the lifecycle."""
    if isinstance(result, Lease):
        m._won(result)
    elif isinstance(result, Redirect):
        m._redirected(result.key)
    else:
        m._lost()


def _build() -> Callable[[LifecycleCore], Lifecycle]:
    machine = TypeMachineBuilder(Lifecycle, LifecycleCore)

    def own(m: Lifecycle, c: LifecycleCore, lease: Lease) -> Owning:
        return c.channel._own(m, lease)

    def follow(m: Lifecycle, c: LifecycleCore) -> Following:
        return c.channel._follow(m)

    idle = machine.state("Idle")
    claiming = machine.state("Claiming")
    owning = machine.state("Owning", own)
    following = machine.state("Following", follow)
    stopped = machine.state("Stopped")
    failed = machine.state("Failed")

    def send_claim(m: Lifecycle, c: LifecycleCore) -> None:
        c.coordinator.claim(c.key).addCallbacks(
            lambda result: on_claimed(m, result),
            lambda f: m._claim_failed(
                EngineError(503, f"cluster unavailable: {f.getErrorMessage()}", retry_after=2, kind=ErrorKind.CLUSTER)
            ),
        )

    @idle.upon(Lifecycle.start).to(claiming)
    def claim(m: Lifecycle, c: LifecycleCore) -> None:
        send_claim(m, c)

    claiming.upon(Lifecycle._won).to(owning).returns(None)
    claiming.upon(Lifecycle._lost).to(following).returns(None)
    claiming.upon(Lifecycle.start).loop().returns(None)
    for state in (idle, claiming, following):
        state.upon(Lifecycle._restart).loop().returns(None)

    @claiming.upon(Lifecycle._claim_failed).to(failed)
    @claiming.upon(Lifecycle.fail).to(failed)
    def claim_failed(m: Lifecycle, c: LifecycleCore, error: EngineError) -> None:
        c.channel._teardown(error)

    @claiming.upon(Lifecycle._redirected).to(stopped)
    def redirected(m: Lifecycle, c: LifecycleCore, key: str) -> None:
        c.channel._teardown(c.channel._redirect(key), f"the same stream as {key}, owned by another worker")

    @idle.upon(Lifecycle.stop).to(stopped)
    @claiming.upon(Lifecycle.stop).to(stopped)
    def stop_unclaimed(m: Lifecycle, c: LifecycleCore, reason: str) -> None:
        c.channel._teardown(None, reason)

    idle.upon(Lifecycle.handed_over).to(stopped).returns(None)

    # ---------------------------------------------------------------- owning
    owning.upon(Lifecycle.start).loop().returns(None)
    owning.upon(Lifecycle._redirected).loop().returns(None)  # an owner's re-claims never follow aliases

    @owning.upon(Lifecycle._demoted).to(following)
    def demoted(m: Lifecycle, c: LifecycleCore, o: Owning) -> None:
        # another worker's session superseded ours: stop reading, leave the session to it
        o.source.abandon()
        o.lease.forget()
        o.heartbeat.stop()

    @owning.upon(Lifecycle._restart).to(claiming)
    def restart(m: Lifecycle, c: LifecycleCore, o: Owning) -> None:
        # perhaps another worker's start call for the same stream superseded ours: find out who serves it now
        c.channel._reset(o)
        send_claim(m, c)

    @owning.upon(Lifecycle.stop).to(stopped)
    def stop_owning(m: Lifecycle, c: LifecycleCore, o: Owning, reason: str) -> None:
        c.channel._release(o)
        c.channel._teardown(None, reason)

    @owning.upon(Lifecycle.fail).to(failed)
    def fail_owning(m: Lifecycle, c: LifecycleCore, o: Owning, error: EngineError) -> None:
        c.channel._release(o)
        c.channel._teardown(error)

    @owning.upon(Lifecycle.handed_over).to(stopped)
    def handed_over(m: Lifecycle, c: LifecycleCore, o: Owning) -> None:
        c.channel._release(o)
        c.channel._teardown(None, "handed over")

    # ---------------------------------------------------------------- following
    following.upon(Lifecycle.start).loop().returns(None)

    @following.upon(Lifecycle._took_over).to(owning)
    def took_over(m: Lifecycle, c: LifecycleCore, f: Following, lease: Lease) -> None:
        f.source.stop()
        f.heartbeat.stop()

    @following.upon(Lifecycle._redirected).to(stopped)
    def redirected_following(m: Lifecycle, c: LifecycleCore, f: Following, key: str) -> None:
        # the owner vanished and the stream is owned under another key now (it deferred to that key's owner)
        c.channel._unfollow(f)
        c.channel._teardown(c.channel._redirect(key), f"the same stream as {key}, owned by another worker")

    @following.upon(Lifecycle.stop).to(stopped)
    def stop_following(m: Lifecycle, c: LifecycleCore, f: Following, reason: str) -> None:
        c.channel._unfollow(f)
        c.channel._teardown(None, reason)

    @following.upon(Lifecycle.fail).to(failed)
    def fail_following(m: Lifecycle, c: LifecycleCore, f: Following, error: EngineError) -> None:
        c.channel._unfollow(f)
        c.channel._teardown(error)

    # ---------------------------------------------------------------- ended
    for end in (stopped, failed):

        @end.upon(Lifecycle._won).loop()
        @end.upon(Lifecycle._took_over).loop()
        def too_late(m: Lifecycle, c: LifecycleCore, lease: Lease) -> None:
            c.coordinator.release(c.key, lease)  # claimed after the end: give it back

        end.upon(Lifecycle.stop).loop().returns(None)
        end.upon(Lifecycle.fail).loop().returns(None)
        for call in (Lifecycle.start, Lifecycle.handed_over, Lifecycle._lost, Lifecycle._demoted):
            end.upon(call).loop().returns(None)
        end.upon(Lifecycle._redirected).loop().returns(None)
        end.upon(Lifecycle._restart).loop().returns(None)
        end.upon(Lifecycle._claim_failed).loop().returns(None)

    return machine.build()


LifecycleMachine = _build()
