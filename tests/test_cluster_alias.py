"""
Issue 10, check 7: two real acetwist workers sharing a real Redis, one asked
by content id and the other by the matching infohash, end up on one engine
session (the simulator's engine, where a second start call for a content
supersedes the first: two sessions for one stream would supersede each other
for as long as both are watched).
"""

from typing import Any, Dict, List

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater

from acetwist.testing import Player, ProcessWorker, wait_for
from tests.test_cluster import ClusterTestCase


class IdAndInfohashAcrossWorkersTests(ClusterTestCase):
    def play_as(self, worker: ProcessWorker, query: str) -> Player:
        player = Player(reactor, f"{worker.url}/ace/getstream?{query}", limit=10**9).start()
        self.players.append(player)
        return player

    def by_id(self, worker: ProcessWorker) -> Player:
        return self.play_as(worker, f"id={self.content.content_id}")

    def by_infohash(self, worker: ProcessWorker) -> Player:
        return self.play_as(worker, f"infohash={self.content.infohash}")

    @inlineCallbacks
    def channels(self) -> Any:
        """Every worker's channels that have players, as (worker, key, role)."""
        found = []
        for worker in self.workers:
            status = yield worker.status()
            found += [(worker.name, c["key"], c["role"]) for c in status["channels"] if c["clients"]]
        return found

    @inlineCallbacks
    def settled(self, timeout: float = 30) -> Any:
        """Poll until one channel in the cluster owns the stream and every other channel with players follows; return them."""
        deadline = reactor.seconds() + timeout
        while True:
            found = yield self.channels()
            owners = [c for c in found if c[2] == "owner"]
            if len(owners) == 1 and all(c[2] in ("owner", "follower") for c in found):
                return found
            if reactor.seconds() > deadline:
                raise AssertionError(f"the cluster did not settle on one owner within {timeout} s: {found}")
            yield deferLater(reactor, 0.2, lambda: None)

    @inlineCallbacks
    def assertOneSessionKeepsServing(self, players: List[Player]) -> Any:
        """Over several seconds of stream for every player, no session is opened or superseded, and one is live."""
        before: Dict[str, Any] = self.counters()
        marks = [p.received for p in players]
        yield wait_for(reactor, lambda: all(p.received > m + 1_500_000 for p, m in zip(players, marks)), timeout=30)
        after: Dict[str, Any] = self.counters()
        self.assertEqual(after["sessions_opened"], before["sessions_opened"])
        self.assertEqual(after["sessions_superseded"], before["sessions_superseded"])
        self.assertEqual(len(self.sim.engine.sessions), 1)
        for player in players:
            self.assertFalse(player.done.called, player.end_reason)

    @inlineCallbacks
    def test_id_and_infohash_on_two_workers_at_the_same_moment_make_one_session(self) -> Any:
        """id= on one worker and the matching infohash= on the other at the same moment: one engine session serves both."""
        w1, w2 = self.workers
        players = [self.by_id(w1), self.by_infohash(w2)]
        yield self.streaming(players)
        found = yield self.settled()
        self.assertEqual(sorted(c[0] for c in found), ["w1", "w2"])
        yield self.assertOneSessionKeepsServing(players)

    @inlineCallbacks
    def test_the_id_call_answered_after_the_infohash_call_superseded_it(self) -> Any:
        """The id's start call reaches the engine first but is answered late; the infohash's call supersedes its session meanwhile: the id's owner defers at once, and the infohash's session serves both."""
        w1, w2 = self.workers
        self.sim.engine.set_fault("slow_json", content=self.content.content_id, ms=1500, times=1)
        first = self.by_id(w1)
        yield deferLater(reactor, 0.3, lambda: None)
        second = self.by_infohash(w2)
        yield self.streaming([first, second])
        found = yield self.settled()
        self.assertEqual(sorted(found), [("w1", f"infohash:{self.content.infohash}", "follower"),
                                         ("w2", f"infohash:{self.content.infohash}", "owner")])
        yield self.assertOneSessionKeepsServing([first, second])
        self.assertEqual(self.counters()["sessions_opened"], 2)
        for player in (first, second):
            self.assertClean(player)

    @inlineCallbacks
    def test_the_infohash_session_superseded_by_the_id_call_before_its_first_byte(self) -> Any:
        """The infohash's start call is answered late, after the id's call superseded its session: its owner claims again instead of failing, and one session serves both."""
        w1, w2 = self.workers
        self.sim.engine.set_fault("slow_json", content=self.content.content_id, ms=1500, times=1)
        first = self.by_infohash(w2)
        yield deferLater(reactor, 0.3, lambda: None)
        second = self.by_id(w1)
        yield self.streaming([first, second])
        yield self.settled()
        yield self.assertOneSessionKeepsServing([first, second])

    @inlineCallbacks
    def test_infohash_after_the_id_is_playing_makes_no_engine_call(self) -> Any:
        """Once the id's owner has learned the infohash, a request by infohash on another worker follows it without calling the engine."""
        w1, w2 = self.workers
        first = self.by_id(w1)
        yield self.streaming([first])
        second = self.by_infohash(w2)
        yield self.streaming([second])
        counters = self.counters()
        self.assertEqual((counters["sessions_opened"], counters["sessions_superseded"]), (1, 0))
        found = yield self.settled()
        self.assertEqual(sorted(found), [("w1", f"id:{self.content.content_id}", "owner"),
                                         ("w2", f"id:{self.content.content_id}", "follower")])
        for player in (first, second):
            self.assertClean(player)

    @inlineCallbacks
    def test_id_after_the_infohash_is_playing_ends_on_the_infohash_session(self) -> Any:
        """An id request on another worker while the infohash plays costs one engine call (the infohash is not known before it), then its owner defers and one session serves both; a second id request calls nobody."""
        w1, w2 = self.workers
        first = self.by_infohash(w2)
        yield self.streaming([first])
        second = self.by_id(w1)
        yield self.streaming([second])
        # w1's start call superseded w2's session, which w2 replaces; the second player may stream
        # from the mirror's join backlog before that: live data for the first player means it is done
        mark = first.received
        yield wait_for(reactor, lambda: first.received > mark + 1_500_000, timeout=30)
        found = yield self.settled()
        self.assertIn(("w2", f"infohash:{self.content.infohash}", "owner"), found)
        yield self.assertOneSessionKeepsServing([first, second])
        calls = self.counters()["sessions_opened"]
        third = self.by_id(self.workers[0])
        yield self.streaming([third])
        self.assertEqual(self.counters()["sessions_opened"], calls)
