"""
Holding a stream key's lease: C{holding (renew loop) -> re-claiming ->
holding | demoted | released}.

An owner renews its lease every third of its life. A renew answered "no"
means the lease lapsed (Redis restarted) or was taken: claim again. If
nobody else holds it the owner carries on under the new epoch; if another
worker holds it, this worker is demoted (it stops reading the engine and
follows). An unanswered renew (Redis away) is no reason to stop streaming:
the next tick tries again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

from automat import TypeMachineBuilder
from twisted.internet.task import LoopingCall
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from acetwist.channel.weak import weakly
from acetwist.interfaces import ICoordinator, Lease


class ILeaseHolder(Protocol):
    def hold(self) -> None:
        """Start renewing."""

    def release(self) -> None:
        """The channel ended: stop renewing and give the lease back."""

    def forget(self) -> None:
        """Stop renewing without giving anything back (another worker owns the key)."""

    def _tick(self) -> None:
        """Time to renew."""

    def _renewed(self) -> None:
        """The renew succeeded."""

    def _lapsed(self) -> None:
        """The renew was refused: the lease is gone."""

    def _unanswered(self) -> None:
        """The renew got no answer."""

    def _reclaimed(self, lease: Lease) -> None:
        """Claiming again succeeded: a new epoch."""

    def _refused(self) -> None:
        """Claiming again was refused: somebody holds the key."""

    def _owner_is(self, lease: Optional[Lease]) -> None:
        """Who holds the key after a refused re-claim."""

    def _keep(self, lease: Lease) -> None:
        """The key is (still) ours under C{lease}."""

    def _taken(self) -> None:
        """Another worker holds the key."""


@dataclass
class LeaseCore:
    """
    @ivar lease: the lease held now (a re-claim replaces it).
    @ivar on_demoted: called once when another worker holds the key.
    """

    key: str
    lease: Lease
    coordinator: ICoordinator
    clock: IReactorTime
    interval: float
    on_demoted: Callable[[], None]
    log: Logger = field(default_factory=Logger)


@dataclass
class _Renewing:
    loop: LoopingCall
    in_flight: bool = False

    def cancel(self) -> None:
        if self.loop.running:
            self.loop.stop()


def _build() -> Callable[[LeaseCore], ILeaseHolder]:
    machine = TypeMachineBuilder(ILeaseHolder, LeaseCore)

    def renew_loop(h: ILeaseHolder, s: LeaseCore) -> _Renewing:
        loop = LoopingCall(weakly(h._tick))
        loop.clock = s.clock
        loop.start(s.interval, now=False)
        return _Renewing(loop)

    def renew_loop_after_reclaim(h: ILeaseHolder, s: LeaseCore, lease: Lease) -> _Renewing:
        return renew_loop(h, s)

    def renew_loop_after_check(h: ILeaseHolder, s: LeaseCore, lease: Lease) -> _Renewing:
        return renew_loop(h, s)

    idle = machine.state("Idle")
    holding = machine.state("Holding", renew_loop)
    holding_again = machine.state("HoldingAgain", renew_loop_after_reclaim)
    holding_checked = machine.state("HoldingChecked", renew_loop_after_check)
    reclaiming = machine.state("Reclaiming")
    checking = machine.state("CheckingOwner")
    deciding = machine.state("Deciding")
    released = machine.state("Released")

    idle.upon(ILeaseHolder.hold).to(holding).returns(None)
    idle.upon(ILeaseHolder.forget).to(released).returns(None)

    @idle.upon(ILeaseHolder.release).to(released)
    def release_unheld(h: ILeaseHolder, s: LeaseCore) -> None:
        s.coordinator.release(s.key, s.lease)

    for renewing in (holding, holding_again, holding_checked):

        @renewing.upon(ILeaseHolder._tick).loop()
        def tick(h: ILeaseHolder, s: LeaseCore, r: _Renewing) -> None:
            if r.in_flight:
                return
            r.in_flight = True
            lease = s.lease

            def answered(ok: bool) -> None:
                r.in_flight = False
                if ok:
                    h._renewed()
                elif s.lease is lease:
                    h._lapsed()

            def unanswered(_: object) -> None:
                r.in_flight = False
                h._unanswered()

            s.coordinator.renew(s.key, lease).addCallbacks(answered, unanswered)

        renewing.upon(ILeaseHolder._renewed).loop().returns(None)
        renewing.upon(ILeaseHolder._unanswered).loop().returns(None)

        @renewing.upon(ILeaseHolder._lapsed).to(reclaiming)
        def lapsed(h: ILeaseHolder, s: LeaseCore, r: _Renewing) -> None:
            r.cancel()
            s.log.warn("{key}: lease with epoch {epoch} lost; claiming again", key=s.key, epoch=s.lease.epoch)
            # the key is ours to keep: an alias of it owned elsewhere is sorted out when a session names it
            s.coordinator.claim(s.key, aliases=False).addCallbacks(
                lambda lease: h._reclaimed(lease) if isinstance(lease, Lease) else h._refused(),
                lambda f: h._owner_is(s.lease),  # unknown: keep ours, the next renew sorts it out
            )

        @renewing.upon(ILeaseHolder.release).to(released)
        def release(h: ILeaseHolder, s: LeaseCore, r: _Renewing) -> None:
            r.cancel()
            s.coordinator.release(s.key, s.lease)

        @renewing.upon(ILeaseHolder.forget).to(released)
        def forget(h: ILeaseHolder, s: LeaseCore, r: _Renewing) -> None:
            r.cancel()

    @reclaiming.upon(ILeaseHolder._reclaimed).to(holding_again)
    def reclaimed(h: ILeaseHolder, s: LeaseCore, lease: Lease) -> None:
        s.lease = lease  # nobody took over: keep the engine session under the new epoch

    @reclaiming.upon(ILeaseHolder._refused).to(checking)
    def refused(h: ILeaseHolder, s: LeaseCore) -> None:
        s.coordinator.owner(s.key).addCallbacks(h._owner_is, lambda f: h._owner_is(s.lease))

    @reclaiming.upon(ILeaseHolder._owner_is).to(deciding)
    @checking.upon(ILeaseHolder._owner_is).to(deciding)
    def decide(h: ILeaseHolder, s: LeaseCore, lease: Optional[Lease]) -> None:
        if lease is not None and lease.owner != s.coordinator.worker_id:
            h._taken()
        else:
            h._keep(lease or s.lease)  # ours after all, or free again: the next renew sorts it out

    @deciding.upon(ILeaseHolder._keep).to(holding_checked)
    def keep(h: ILeaseHolder, s: LeaseCore, lease: Lease) -> None:
        s.lease = lease

    @deciding.upon(ILeaseHolder._taken).to(released)
    def taken(h: ILeaseHolder, s: LeaseCore) -> None:
        s.log.warn("{key}: another worker took over; following it", key=s.key)
        s.on_demoted()

    for waiting in (reclaiming, checking, deciding):

        @waiting.upon(ILeaseHolder.release).to(released)
        def release_while_waiting(h: ILeaseHolder, s: LeaseCore) -> None:
            s.coordinator.release(s.key, s.lease)

        waiting.upon(ILeaseHolder.forget).to(released).returns(None)

    @released.upon(ILeaseHolder._reclaimed).loop()
    def late_lease(h: ILeaseHolder, s: LeaseCore, lease: Lease) -> None:
        s.coordinator.release(s.key, lease)  # claimed after the end: give it back

    for call in (ILeaseHolder.release, ILeaseHolder.forget, ILeaseHolder._refused, ILeaseHolder._tick,
                 ILeaseHolder._renewed, ILeaseHolder._lapsed, ILeaseHolder._unanswered, ILeaseHolder._taken):
        released.upon(call).loop().returns(None)
    released.upon(ILeaseHolder._owner_is).loop().returns(None)
    released.upon(ILeaseHolder.hold).loop().returns(None)
    released.upon(ILeaseHolder._keep).loop().returns(None)

    return machine.build()


LeaseMachine = _build()
