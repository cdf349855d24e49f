"""
The grace period: C{occupied <-> lingering -> expired}.

When a channel's last player leaves it lingers for C{grace} seconds; a
player arriving then makes it occupied again. When the time is up the
machine asks for the players still watching elsewhere (the cluster-wide
count, for an owner): more than zero lingers again, zero expires. A count
that cannot be had (Redis away, or just back and not yet repopulated) is not
zero: the machine keeps lingering and asks again after C{retry} seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from automat import TypeMachineBuilder
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from acetwist.channel.weak import weakly


class IGrace(Protocol):
    def occupied(self) -> None:
        """A player is connected."""

    def vacated(self) -> None:
        """The last player left."""

    def stop(self) -> None:
        """The channel ended: cancel whatever is pending."""

    def lingering(self) -> bool:
        """Waiting for players to come back (or for the count)."""

    def _due(self) -> None:
        """The lingering timer fired."""

    def _watched(self, players: int) -> None:
        """Some players still watch elsewhere."""

    def _nobody(self) -> None:
        """Nobody watches anywhere."""

    def _uncounted(self, why: str) -> None:
        """The count could not be had."""


@dataclass
class GraceCore:
    """
    @ivar count: players still watching elsewhere (fires an int, or fails
        when nobody can tell).
    @ivar on_expired: called once when the grace ran out with nobody watching.
    @ivar retry: seconds before asking again after a failed count.
    """

    clock: IReactorTime
    grace: float
    retry: float
    count: Callable[[], "Deferred[int]"]
    on_expired: Callable[[], None]
    name: str = ""
    log: Logger = Logger()


@dataclass
class _Linger:
    timer: IDelayedCall

    def cancel(self) -> None:
        if self.timer.active():
            self.timer.cancel()


def _build() -> Callable[[GraceCore], IGrace]:
    machine = TypeMachineBuilder(IGrace, GraceCore)

    def linger(g: IGrace, s: GraceCore) -> _Linger:
        return _Linger(s.clock.callLater(s.grace, weakly(g._due)))

    def linger_after_failed_count(g: IGrace, s: GraceCore, why: str) -> _Linger:
        return _Linger(s.clock.callLater(s.retry, weakly(g._due)))

    def linger_again(g: IGrace, s: GraceCore, players: int) -> _Linger:
        return _Linger(s.clock.callLater(s.grace, weakly(g._due)))

    occupied = machine.state("Occupied")
    lingering = machine.state("Lingering", linger)
    recounting = machine.state("WaitingToRecount", linger_after_failed_count)
    relingering = machine.state("LingeringAgain", linger_again)
    counting = machine.state("Counting")
    expired = machine.state("Expired")

    occupied.upon(IGrace.occupied).loop().returns(None)
    occupied.upon(IGrace.vacated).to(lingering).returns(None)
    occupied.upon(IGrace.stop).to(expired).returns(None)
    for settled in (occupied, expired):
        # a count answered after a player came back, or after the end, changes nothing
        settled.upon(IGrace._watched).loop().returns(None)
        settled.upon(IGrace._nobody).loop().returns(None)
        settled.upon(IGrace._uncounted).loop().returns(None)
    for call in (IGrace.occupied, IGrace.vacated, IGrace.stop):
        expired.upon(call).loop().returns(None)

    for waiting in (lingering, recounting, relingering):

        @waiting.upon(IGrace.occupied).to(occupied)
        def returned(g: IGrace, s: GraceCore, linger: _Linger) -> None:
            linger.cancel()
            s.log.info("player returned to {name} during the grace period", name=s.name)

        @waiting.upon(IGrace.stop).to(expired)
        def stopped(g: IGrace, s: GraceCore, linger: _Linger) -> None:
            linger.cancel()

        @waiting.upon(IGrace._due).to(counting)
        def ask(g: IGrace, s: GraceCore, linger: _Linger) -> None:
            s.count().addCallbacks(
                lambda players: g._watched(players) if players > 0 else g._nobody(),
                lambda f: g._uncounted(f.getErrorMessage()),
            )

        waiting.upon(IGrace.vacated).loop().returns(None)
        # the answer to a count asked before a player came and went again: the new wait asks anew
        waiting.upon(IGrace._watched).loop().returns(None)
        waiting.upon(IGrace._nobody).loop().returns(None)
        waiting.upon(IGrace._uncounted).loop().returns(None)

    @counting.upon(IGrace._watched).to(relingering)
    def still_watched(g: IGrace, s: GraceCore, players: int) -> None:
        s.log.info("{name}: {n} player(s) elsewhere; staying", name=s.name, n=players)

    @counting.upon(IGrace._nobody).to(expired)
    def nobody(g: IGrace, s: GraceCore) -> None:
        s.on_expired()

    @counting.upon(IGrace._uncounted).to(recounting)
    def unknown(g: IGrace, s: GraceCore, why: str) -> None:
        s.log.info("{name}: cannot count players elsewhere ({why}); still lingering", name=s.name, why=why)

    counting.upon(IGrace.occupied).to(occupied).returns(None)
    counting.upon(IGrace.vacated).loop().returns(None)
    counting.upon(IGrace.stop).to(expired).returns(None)

    for state, answer in ((occupied, False), (expired, False), (lingering, True), (recounting, True),
                          (relingering, True), (counting, True)):
        state.upon(IGrace.lingering).loop().returns(answer)

    return machine.build()


GraceMachine = _build()
