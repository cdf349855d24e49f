"""The lease machine on task.Clock: holding -> re-claiming -> holding | demoted | released."""

from typing import List

from twisted.internet.defer import fail
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from acetwist.channel.lease import ILeaseHolder, LeaseCore, LeaseMachine
from acetwist.coord.base import CoordinatorUnavailable
from acetwist.interfaces import Lease
from tests.fakes import FakeCoordinator

KEY = "id:" + "1" * 40


class LeaseTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.coordinator = FakeCoordinator()
        self.demotions: List[float] = []
        self.core = LeaseCore(KEY, Lease(self.coordinator.worker_id, 1), self.coordinator, self.clock, 1.0,
                              lambda: self.demotions.append(self.clock.seconds()))
        self.holder: ILeaseHolder = LeaseMachine(self.core)
        self.holder.hold()

    def test_the_lease_is_renewed_every_interval(self) -> None:
        """A held lease is renewed once per interval and stays the same lease."""
        renewals: List[Lease] = []
        original = self.coordinator.renew
        self.coordinator.renew = lambda key, lease: (renewals.append(lease), original(key, lease))[1]  # type: ignore[method-assign]
        self.clock.pump([1.0, 1.0, 1.0])
        self.assertEqual(renewals, [Lease(self.coordinator.worker_id, 1)] * 3)

    def test_a_lapsed_lease_nobody_took_is_claimed_again_under_a_new_epoch(self) -> None:
        """A refused renew claims again; with nobody else holding the key the new epoch is kept."""
        self.coordinator.renew_ok = False
        self.clock.advance(1.0)
        self.coordinator.renew_ok = True
        self.assertEqual(self.core.lease.epoch, 1)  # FakeCoordinator's epochs start at 1 for the first claim
        self.assertEqual(self.coordinator.claims, 1)
        self.assertEqual(self.demotions, [])
        self.clock.advance(1.0)
        self.assertEqual(self.coordinator.claims, 1)

    def test_a_lease_another_worker_holds_demotes_this_worker_once(self) -> None:
        """When another worker holds the key after a refused renew, this worker is demoted once and stops renewing."""
        self.coordinator.other_owner = Lease("other", 9)
        self.clock.advance(1.0)
        self.assertEqual(self.demotions, [1.0])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10.0)
        self.assertEqual(self.demotions, [1.0])
        self.assertEqual(self.coordinator.released, [])

    def test_a_refused_claim_on_our_own_lease_keeps_holding(self) -> None:
        """If the key turns out to be this worker's, the lease it names is kept and renewing goes on."""
        self.coordinator.other_owner = Lease(self.coordinator.worker_id, 42)
        self.clock.advance(1.0)
        self.coordinator.other_owner = None
        self.assertEqual(self.core.lease, Lease(self.coordinator.worker_id, 42))
        self.assertEqual(self.demotions, [])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_unanswered_renewals_never_demote(self) -> None:
        """A Redis outage (renewals fail) keeps the lease and keeps trying."""
        self.coordinator.renew = lambda key, lease: fail(CoordinatorUnavailable("away"))  # type: ignore[method-assign]
        self.clock.advance(10.0)
        self.assertEqual((self.demotions, self.coordinator.claims), ([], 0))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_release_stops_renewing_and_gives_the_lease_back(self) -> None:
        """Releasing cancels the renew timer and releases the lease once."""
        self.holder.release()
        self.holder.release()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.coordinator.released, [KEY])

    def test_a_lease_claimed_again_after_release_is_given_back(self) -> None:
        """A re-claim answered after the channel released the lease gives the new lease back."""
        from twisted.internet.defer import Deferred

        pending: "Deferred[Lease | None]" = Deferred()
        self.coordinator.claim = lambda key, aliases=True: pending  # type: ignore[method-assign]
        self.coordinator.renew_ok = False
        self.clock.advance(1.0)
        self.holder.release()
        pending.callback(Lease(self.coordinator.worker_id, 5))
        self.assertEqual(self.coordinator.released, [KEY, KEY])
