"""The selection rules of the engine pool (acetwist.engines.select), as pure functions."""

from __future__ import annotations

import itertools
import math

from twisted.trial.unittest import SynchronousTestCase

from acetwist.engines.select import Candidate, choose, is_full, load, rank, skip_reason, why_none


class SkipTests(SynchronousTestCase):
    def test_every_combination_of_flags(self) -> None:
        """A candidate is eligible exactly when it is not excluded, healthy, listed, not draining and not full."""
        for excluded, healthy, listed, draining, full in itertools.product([False, True], repeat=5):
            c = Candidate("e", healthy=healthy, listed=listed, draining=draining, load=2 if full else 1,
                          capacity=2)
            exclude = frozenset({"e"}) if excluded else frozenset()
            expected = not excluded and healthy and listed and not draining and not full
            self.assertEqual(skip_reason(c, exclude) is None, expected,
                             (excluded, healthy, listed, draining, full))
            self.assertEqual(choose([c], exclude) is c, expected)

    def test_reasons_in_order(self) -> None:
        """The first failing rule is the reason given: excluded, unhealthy, unlisted, draining, full."""
        c = Candidate("e", healthy=False, listed=False, draining=True, load=5, capacity=1)
        self.assertEqual(skip_reason(c, frozenset({"e"})), "excluded")
        self.assertEqual(skip_reason(c), "unhealthy")
        self.assertEqual(skip_reason(Candidate("e", listed=False, draining=True, load=5, capacity=1)), "unlisted")
        self.assertEqual(skip_reason(Candidate("e", draining=True, load=5, capacity=1)), "draining")
        self.assertEqual(skip_reason(Candidate("e", load=5, capacity=1)), "full")

    def test_only_restricts_to_one_engine(self) -> None:
        """With only=, every other engine counts as excluded."""
        a, b = Candidate("a"), Candidate("b", load=3)
        self.assertEqual(rank([a, b], only="b"), [b])
        self.assertEqual(skip_reason(a, only="b"), "excluded")
        self.assertIsNone(choose([a, b], exclude=frozenset({"b"}), only="b"))

    def test_capacity_zero_is_no_limit(self) -> None:
        """Capacity 0 never makes an engine full; otherwise load equal to capacity is full."""
        self.assertFalse(is_full(10_000, 0))
        self.assertFalse(is_full(1, 2))
        self.assertTrue(is_full(2, 2))
        self.assertTrue(is_full(3, 2))


class OrderTests(SynchronousTestCase):
    def test_least_loaded_first(self) -> None:
        """Lower load wins over forwarded, over less recently chosen and over list order."""
        busy = Candidate("busy", forwarded=True, load=2, last_chosen=-math.inf, order=0)
        idle = Candidate("idle", forwarded=False, load=1, last_chosen=100.0, order=1)
        self.assertEqual(choose([busy, idle]), idle)

    def test_forwarded_wins_at_equal_load(self) -> None:
        """At equal load a forwarded engine wins, even when it was chosen more recently or listed later."""
        plain = Candidate("plain", load=1, last_chosen=1.0, order=0)
        forwarded = Candidate("fwd", forwarded=True, load=1, last_chosen=50.0, order=1)
        self.assertEqual(choose([plain, forwarded]), forwarded)

    def test_least_recently_chosen_at_equal_load_and_forwarding(self) -> None:
        """Then the engine chosen least recently (never chosen first), then list order."""
        never = Candidate("never", order=2)
        old = Candidate("old", last_chosen=5.0, order=0)
        new = Candidate("new", last_chosen=9.0, order=1)
        self.assertEqual([c.id for c in rank([new, old, never])], ["never", "old", "new"])
        self.assertEqual([c.id for c in rank([Candidate("b", order=1), Candidate("a", order=0)])], ["a", "b"])

    def test_rank_over_all_permutations(self) -> None:
        """The ranking is the same whatever order the candidates come in."""
        pool = [Candidate("a", load=1, forwarded=True, order=0), Candidate("b", load=0, order=1),
                Candidate("c", load=1, last_chosen=3.0, order=2), Candidate("d", load=1, last_chosen=1.0, order=3),
                Candidate("e", load=0, forwarded=True, last_chosen=7.0, order=4)]
        expected = ["e", "b", "a", "d", "c"]
        for permutation in itertools.permutations(pool):
            self.assertEqual([c.id for c in rank(permutation)], expected)

    def test_round_robin_when_choices_are_recorded(self) -> None:
        """Equal engines chosen in turn (recording each choice) take streams in rotation, layer by layer."""
        last = {"a": -math.inf, "b": -math.inf, "c": -math.inf}
        loads = {"a": 0, "b": 0, "c": 0}
        picks = []
        for t in range(6):
            cands = [Candidate(i, load=loads[i], capacity=2, last_chosen=last[i], order=n)
                     for n, i in enumerate("abc")]
            chosen = choose(cands)
            assert chosen is not None
            picks.append(chosen.id)
            loads[chosen.id] += 1
            last[chosen.id] = float(t)
        self.assertEqual(picks, ["a", "b", "c", "a", "b", "c"])
        self.assertIsNone(choose([Candidate(i, load=2, capacity=2) for i in "abc"]))


class LoadTests(SynchronousTestCase):
    def test_load_is_the_largest_count_plus_reservations(self) -> None:
        """Load = max(own sessions, cluster count, orchestrator count) plus this process's reservations in flight."""
        self.assertEqual(load(own_sessions=1, cluster=0, orchestrator=0, in_flight=0), 1)
        self.assertEqual(load(own_sessions=1, cluster=3, orchestrator=0, in_flight=0), 3)
        self.assertEqual(load(own_sessions=1, cluster=0, orchestrator=4, in_flight=0), 4)
        self.assertEqual(load(own_sessions=1, cluster=0, orchestrator=4, in_flight=1), 5)
        self.assertEqual(load(own_sessions=1, cluster=0, orchestrator=0, in_flight=2), 3)
        # the cluster count already holds this process's reservations
        self.assertEqual(load(own_sessions=0, cluster=2, orchestrator=0, in_flight=2), 2)


class WhyNoneTests(SynchronousTestCase):
    def test_counts_every_reason(self) -> None:
        """The 503 message counts the engines skipped for each reason."""
        cands = [Candidate("a", load=2, capacity=2), Candidate("b", load=2, capacity=2),
                 Candidate("c", healthy=False), Candidate("d", draining=True)]
        self.assertEqual(why_none(cands), "1 unhealthy, 1 draining, 2 full")
        self.assertEqual(why_none([]), "no engines are listed")
