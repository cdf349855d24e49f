"""
Several real acetwist processes sharing one real Redis act as one proxy:
one engine session cluster-wide, followers fed from the mirror, takeover
after the owner dies, Redis outages, cluster-wide grace, no key without TTL.
"""

from typing import Any, Dict, List

from twisted.internet import reactor
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from acetwist.sim.contents import DEFAULT_CONTENTS
from acetwist.sim.testing import start_simulator
from acetwist.testing import Player, ProcessWorker, wait_for
from tests.redis_server import RedisServer

LEASE = "1"
GRACE = 1.5


class ClusterTestCase(TestCase):
    timeout = 90
    worker_count = 2

    @inlineCallbacks
    def setUp(self) -> Any:
        self.redis = RedisServer.for_test(self)
        # A cluster that has been running for a while: player counts are trusted from the start.
        self.redis.age_data_set("acetwist")
        self.sim = yield start_simulator(reactor, prebuffer=0.3, burst=1.0, bitrate=4_000_000)
        self.addCleanup(self.sim.stop)
        self.content = DEFAULT_CONTENTS[0]
        self.players: List[Player] = []
        self.addCleanup(self._hang_up_all)
        self.workers = [self.worker(f"w{i + 1}") for i in range(self.worker_count)]
        yield DeferredList([w.start() for w in self.workers], fireOnOneErrback=True, consumeErrors=True)

    def worker(self, name: str, *extra: str) -> ProcessWorker:
        worker = ProcessWorker(reactor, name, "--engine", self.sim.url, "--redis", self.redis.url,
                               "--lease", LEASE, "--grace", str(GRACE), "--heartbeat", "0.5",
                               "--first-byte-timeout", "10", "--idle-timeout", "3", "--backoff", "0.2",
                               "--client-stall-timeout", "10", *extra)
        self.addCleanup(worker.stop)
        return worker

    def _hang_up_all(self) -> Any:
        for player in self.players:
            player.hang_up()
        return DeferredList([p.done for p in self.players])

    def play(self, worker: ProcessWorker, **kw: Any) -> Player:
        kw.setdefault("limit", 10**9)
        player = Player(reactor, f"{worker.url}/ace/getstream?id={self.content.content_id}", **kw).start()
        self.players.append(player)
        return player

    def counters(self) -> Dict[str, Any]:
        return self.sim.engine.counters.snapshot()

    def streaming(self, players: List[Player], more_than: int = 200_000) -> Any:
        return wait_for(reactor, lambda: all(p.received > more_than for p in players), timeout=30)

    def assertClean(self, player: Player) -> None:
        checker = player.checker
        self.assertTrue(checker.aligned_at_start)
        self.assertEqual(checker.resyncs, 0)
        self.assertEqual(checker.cc_errors, 0, checker.cc_errors_by_pid)
        self.assertTrue(checker.first_video_random_access)
        self.assertTrue(checker.psi_before_first_video)


class SharingTests(ClusterTestCase):
    @inlineCallbacks
    def test_players_split_across_workers_share_one_engine_session(self) -> Any:
        """Twenty players split over two workers make one engine session; the non-owner's players get clean TS from the mirror."""
        w1, w2 = self.workers
        first = [self.play(w1) for _ in range(10)]
        yield self.streaming(first)
        second = [self.play(w2) for _ in range(10)]
        yield self.streaming(second, 1_000_000)
        self.assertEqual(self.counters()["sessions_opened"], 1)
        self.assertEqual(self.counters()["json_calls"][self.content.content_id], 1)
        for player in first + second:
            self.assertClean(player)
        status = yield w2.status()
        [channel] = status["channels"]
        self.assertEqual(channel["role"], "follower")
        self.assertEqual(len(channel["clients"]), 10)

    @inlineCallbacks
    def test_simultaneous_cold_requests_on_both_workers_make_one_session(self) -> Any:
        """Cold requests arriving on both workers at once make exactly one engine session."""
        w1, w2 = self.workers
        players = [self.play(w) for _ in range(5) for w in (w1, w2)]
        yield self.streaming(players)
        counters = self.counters()
        self.assertEqual(counters["sessions_opened"], 1)
        self.assertEqual(counters["sessions_superseded"], 0)
        for player in players:
            self.assertClean(player)

    @inlineCallbacks
    def test_status_on_any_worker_shows_the_cluster(self) -> Any:
        """/status on either worker lists the stream's owner and epoch and every worker's players with their details."""
        w1, w2 = self.workers
        a = self.play(w1, user_agent="Kodi/21.0")
        yield self.streaming([a])
        b = self.play(w2, user_agent="TiviMate/5.0")
        yield self.streaming([b])

        def both_listed(view: Dict[str, Any]) -> bool:
            return set(view["players"]) == {"w1", "w2"}

        for worker in (w1, w2):
            status = yield worker.status()
            for _ in range(50):
                if both_listed(status["cluster"]):
                    break
                yield wait_for(reactor, lambda: True)
                status = yield worker.status()
            view = status["cluster"]
            self.assertTrue(view["available"])
            [stream] = view["streams"].values()
            self.assertEqual(stream["owner"], "w1")
            self.assertGreaterEqual(stream["epoch"], 1)
            self.assertEqual(set(view["workers"]), {"w1", "w2"})
            records = {r["worker"]: r for recs in view["players"].values() for r in recs}
            self.assertEqual(records["w2"]["user_agent"], "TiviMate/5.0")
            self.assertEqual(records["w1"]["ip"], "127.0.0.1")
            self.assertIn("connected_at", records["w1"])
        yield wait_for(reactor, lambda: True)


class TakeoverTests(ClusterTestCase):
    @inlineCallbacks
    def test_killed_owner_is_replaced_and_other_players_continue(self) -> Any:
        """After SIGKILL of the owner, the worker with players takes over with a higher epoch and a new session; its players never reconnect."""
        w1, w2 = self.workers
        owner_player = self.play(w1)
        yield self.streaming([owner_player])
        survivors = [self.play(w2) for _ in range(3)]
        yield self.streaming(survivors)
        before = yield w2.status()
        epoch = before["channels"][0]["epoch"]
        w1.signal("KILL")
        yield w1.ended
        marks = [p.received for p in survivors]
        yield wait_for(reactor, lambda: all(p.received > m + 500_000 for p, m in zip(survivors, marks)), timeout=30)
        after = yield w2.status()
        [channel] = after["channels"]
        self.assertEqual(channel["role"], "owner")
        self.assertGreater(channel["epoch"], epoch)
        self.assertEqual(self.counters()["sessions_opened"], 2)
        for player in survivors:
            self.assertFalse(player.done.called, player.end_reason)
            self.assertTrue(player.checker.aligned_at_start)
            self.assertEqual(player.checker.resyncs, 0)


class RedisOutageTests(ClusterTestCase):
    @inlineCallbacks
    def test_redis_down_mid_stream(self) -> Any:
        """With Redis down the owner's players keep streaming; when it returns, the mirror resumes and the follower's players recover."""
        w1, w2 = self.workers
        on_owner = self.play(w1)
        yield self.streaming([on_owner])
        on_follower = self.play(w2)
        yield self.streaming([on_follower])
        self.redis.stop()
        mark = on_owner.received
        # 4 Mbit/s is 500 kB/s: two seconds of stream must arrive while Redis is away
        yield wait_for(reactor, lambda: on_owner.received > mark + 1_000_000, timeout=10)
        self.redis.start()
        mark = on_follower.received
        yield wait_for(reactor, lambda: on_follower.received > mark + 1_000_000, timeout=30)
        self.assertEqual(self.counters()["sessions_opened"], 1)
        self.assertFalse(on_owner.done.called)
        self.assertFalse(on_follower.done.called)
        keys = self.redis.scan("acetwist:*")
        self.assertTrue(any(b":buf" in k or b"mirror" in k for k in keys), keys)


class GraceAndKeysTests(ClusterTestCase):
    @inlineCallbacks
    def test_player_on_another_worker_during_grace_keeps_the_session(self) -> Any:
        """When the owner's last player leaves but another worker gets a player within the grace, no stop is sent."""
        w1, w2 = self.workers
        first = self.play(w1, limit=300_000)
        yield first.done
        second = self.play(w2)
        yield self.streaming([second])
        yield wait_for(reactor, lambda: second.received > 1_500_000, timeout=20)
        self.assertEqual(self.counters()["stop_calls"], 0)
        self.assertEqual(self.counters()["sessions_opened"], 1)

    @inlineCallbacks
    def test_last_player_anywhere_stops_once_and_leaves_no_key_without_ttl(self) -> Any:
        """When the last player in the cluster leaves, one stop is sent after the grace, and no acetwist key is left without a TTL."""
        w1, w2 = self.workers
        players = [self.play(w1, limit=400_000), self.play(w2, limit=400_000)]
        yield DeferredList([p.done for p in players])
        yield wait_for(reactor, lambda: self.counters()["stop_calls"] >= 1, timeout=20)
        yield wait_for(reactor, lambda: True)
        counters = self.counters()
        self.assertEqual(counters["stop_calls"], 1)
        self.assertEqual(counters["sessions_stopped"], 1)
        for key in self.redis.scan("*"):
            self.assertTrue(key.startswith(b"acetwist:"), key)
            self.assertNotEqual(self.redis.command("TTL", key), -1, key)
        self.assertNotIn("cmdstat_keys", self.redis.commandstats())


class UnknownCountTests(ClusterTestCase):
    """
    The owner's own players have left; the follower's players still watch.
    Whatever happens to Redis, the owner never takes "cannot count" or a
    count from Redis's incomplete records for zero.
    """

    timeout = 150

    @inlineCallbacks
    def lingering_owner(self) -> Any:
        """w1 owns the channel with no players left; w2 has three; fires with w2's players once w1 lingers."""
        w1, w2 = self.workers
        first = self.play(w1)
        yield self.streaming([first])
        watchers = [self.play(w2) for _ in range(3)]
        yield self.streaming(watchers)
        first.hang_up()
        yield first.done
        # The grace ends and w1 counts w2's players (and lingers again).
        yield self.until_counted(w1)
        return watchers

    @inlineCallbacks
    def coordinator_stats(self, worker: ProcessWorker) -> Any:
        status = yield worker.status()
        return status["coordinator"]

    @inlineCallbacks
    def until_counted(self, worker: ProcessWorker, after: int = -1, timeout: float = 45) -> Any:
        """Poll until the worker's coordinator has answered more known counts than C{after}; return how many."""
        deadline = reactor.seconds() + timeout
        while True:
            stats = yield self.coordinator_stats(worker)
            self.assertEqual(self.counters()["stop_calls"], 0, "the owner stopped the channel")
            known = stats.get("client_count_known", 0)
            if known > max(after, 0):
                return known
            if reactor.seconds() > deadline:
                raise AssertionError(f"no known count within {timeout} s: {stats}")
            yield deferLater(reactor, 0.2, lambda: None)

    @inlineCallbacks
    def assertChannelKept(self, watchers: List[Player], counted_before: int) -> Any:
        """w1 counted w2's players again after the trouble; nothing was stopped; w2's players get data."""
        w1, _ = self.workers
        yield self.until_counted(w1, after=counted_before)
        marks = [p.received for p in watchers]
        yield wait_for(reactor, lambda: all(p.received > m + 500_000 for p, m in zip(watchers, marks)), timeout=30)
        counters = self.counters()
        self.assertEqual((counters["stop_calls"], counters["sessions_opened"]), (0, 1))
        for player in watchers:
            self.assertFalse(player.done.called, player.end_reason)
        status = yield w1.status()
        [channel] = status["channels"]
        self.assertEqual((channel["role"], channel["clients"]), ("owner", []))

    @inlineCallbacks
    def test_redis_frozen_longer_than_the_grace(self) -> Any:
        """With Redis frozen (SIGSTOP) for longer than the grace, the owner keeps the channel for the follower's players."""
        watchers = yield self.lingering_owner()
        w1, _ = self.workers
        before = yield self.coordinator_stats(w1)
        self.redis.pause()
        self.addCleanup(lambda: self.redis.paused and self.redis.resume())
        yield deferLater(reactor, GRACE + 2, lambda: None)
        self.redis.resume()
        during = yield self.coordinator_stats(w1)
        self.assertGreater(during.get("client_count_failed", 0), before.get("client_count_failed", 0))
        yield self.assertChannelKept(watchers, during.get("client_count_known", 0))

    @inlineCallbacks
    def until_unknown(self, worker: ProcessWorker, before: Dict[str, Any], timeout: float = 30) -> Any:
        """Poll until the worker's coordinator answered a count "unknown" after C{before}; return its stats then."""
        deadline = reactor.seconds() + timeout
        while True:
            stats = yield self.coordinator_stats(worker)
            if stats.get("client_count_unknown", 0) > before.get("client_count_unknown", 0):
                return stats
            if reactor.seconds() > deadline:
                raise AssertionError(f"no unknown count within {timeout} s: {stats}")
            yield deferLater(reactor, 0.2, lambda: None)

    @inlineCallbacks
    def test_redis_restarted_empty(self) -> Any:
        """After Redis restarted empty, the owner's counts are unknown until the follower's players are registered again; it keeps the channel."""
        watchers = yield self.lingering_owner()
        w1, _ = self.workers
        before = yield self.coordinator_stats(w1)
        self.redis.restart()
        unknown = yield self.until_unknown(w1, before)
        yield self.assertChannelKept(watchers, unknown.get("client_count_known", 0))

    @inlineCallbacks
    def test_redis_flushed(self) -> Any:
        """After FLUSHALL, the owner's counts are unknown until the follower's players are registered again; it keeps the channel."""
        watchers = yield self.lingering_owner()
        w1, _ = self.workers
        before = yield self.coordinator_stats(w1)
        self.redis.command("FLUSHALL")
        unknown = yield self.until_unknown(w1, before)
        yield self.assertChannelKept(watchers, unknown.get("client_count_known", 0))
