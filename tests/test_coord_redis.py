"""
What only the Redis coordinator has to show: the key layout and TTLs, no
KEYS, database selection, and behaviour while Redis is down, hung or
restarted (on a real redis-server, see L{tests.redis_server}).
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Tuple

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import LoopingCall
from twisted.trial.unittest import SynchronousTestCase

from acetwist.coord.base import CoordinatorUnavailable, CountUnknown
from acetwist.coord.settings import RedisSettings, parse_redis_url
from twisted.trial.unittest import TestCase

from acetwist.interfaces import Lease
from tests.test_coord_contract import TIMINGS, Received, RedisHarness, block, record


class RedisSettingsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """The default settings point at a local Redis, db 0, prefix acetwist, with 5 s leases and 2 s deadlines."""
        s = RedisSettings()
        self.assertEqual((s.host, s.port, s.db, s.password, s.prefix), ("127.0.0.1", 6379, 0, None, "acetwist"))
        self.assertEqual((s.lease_ms, s.lease, s.command_timeout), (5000, 5.0, 2.0))

    def test_from_url(self) -> None:
        """A URL gives host, port, database, user and password; keywords set the rest and None keeps defaults."""
        s = RedisSettings.from_url("redis://user:p%40ss@redis.example:6380/3", prefix="px", lease_ms=None)
        self.assertEqual((s.host, s.port, s.db, s.username, s.password, s.prefix, s.lease_ms),
                         ("redis.example", 6380, 3, "user", "p@ss", "px", 5000))
        self.assertEqual(parse_redis_url("redis://:secret@h"), ("h", 6379, 0, None, "secret"))
        self.assertEqual(parse_redis_url("redis://[::1]:7000/"), ("::1", 7000, 0, None, None))

    def test_rejects_what_it_cannot_do(self) -> None:
        """Other schemes, non-numeric databases, query strings, bad prefixes and non-positive timings are refused."""
        for url in ["rediss://h:6379/0", "unix:///tmp/redis.sock", "redis://h:6379/zero", "redis://h/0?x=1",
                    "redis://h:99999/0", "http://h"]:
            self.assertRaises(ValueError, RedisSettings.from_url, url)
        for prefix in ["", "a b", "a*"]:
            self.assertRaises(ValueError, RedisSettings, prefix=prefix)
        self.assertRaises(ValueError, RedisSettings, lease_ms=0)
        self.assertRaises(ValueError, RedisSettings, command_timeout=-1.0)


class RedisCoordinatorTests(RedisHarness, TestCase):
    """Redis-only behaviour (the shared contract runs in tests.test_coord_contract)."""

    def _keys(self, prefix: str = "acetwist-test") -> Dict[bytes, int]:
        return {key: self.server.command("PTTL", key) for key in self.server.scan(prefix + ":*")}

    # -- layout

    @inlineCallbacks
    def test_owner_key_holds_worker_and_epoch_with_lease_ttl(self) -> Any:
        """The owner key holds '<worker>:<epoch>' and expires within the lease."""
        a = yield self.make("host:1234")
        lease = yield a.claim("id=abc")
        value = self.server.command("GET", "acetwist-test:stream:id=abc:owner")
        self.assertEqual(value, f"host:1234:{lease.epoch}".encode())
        self.assertTrue(0 < self.server.command("PTTL", "acetwist-test:stream:id=abc:owner") <= 300)

    @inlineCallbacks
    def test_alias_keys_hold_the_other_key_with_a_ttl(self) -> Any:
        """An alias is two keys under the prefix, each naming the other stream key, with the alias TTL; no KEYS is sent."""
        a = yield self.make("a", alias_ttl=60.0)
        yield a.claim("id:abc")
        yield a.alias("id:abc", "infohash:def")
        self.assertEqual(self.server.command("GET", "acetwist-test:alias:id:abc"), b"infohash:def")
        self.assertEqual(self.server.command("GET", "acetwist-test:alias:infohash:def"), b"id:abc")
        for key in ("acetwist-test:alias:id:abc", "acetwist-test:alias:infohash:def"):
            self.assertTrue(50_000 < self.server.command("PTTL", key) <= 60_000)
        self.assertNotIn("keys", self.server.commandstats())

    @inlineCallbacks
    def test_epoch_stays_higher_after_redis_lost_everything(self) -> Any:
        """A claim after Redis restarted empty still gets a higher epoch than any before (the counter is floored at Redis time)."""
        a = yield self.make("a", lease_ms=5000)
        first = yield a.claim("s")
        self.server.restart()
        yield self.until(lambda: a.connected and a._link.connects >= 2 * a.settings.poolsize)
        self.assertIsNone((yield a.owner("s")))
        second = yield a.claim("s")
        self.assertGreater(second.epoch, first.epoch)

    @inlineCallbacks
    def test_mirror_entries_are_binary_safe_and_bounded(self) -> Any:
        """Mirror entries carry data, keyframe, psi, epoch, seq and segment exactly, and the stream stays near its maximum length with a TTL."""
        a = yield self.make("a", max_in_flight=1000)
        lease = yield a.claim("s")
        published = [block(seq, keyframe=seq % 10 == 0, segment=2, size=188) for seq in range(300)]
        for b in published:
            a.publish("s", lease, b)
        yield self.until(lambda: a.stats().get("published", 0) == 300 and a.in_flight == 0)
        key = "acetwist-test:stream:s:mirror"
        length = self.server.command("XLEN", key)
        self.assertTrue(50 <= length <= 50 + 100, length)  # MAXLEN ~ trims whole nodes (100 entries)
        [[_id, flat]] = self.server.command("XREVRANGE", key, "+", "-", "COUNT", 1)
        fields = dict(zip(flat[::2], flat[1::2]))
        expected = published[-1]
        self.assertEqual(flat[::2], [b"data", b"keyframe", b"psi", b"epoch", b"seq", b"segment", b"created", b"hls"])
        self.assertEqual((fields[b"data"], fields[b"psi"], fields[b"keyframe"]), (expected.data, expected.psi, b"0"))
        self.assertEqual((fields[b"epoch"], fields[b"seq"], fields[b"segment"]),
                         (str(lease.epoch).encode(), b"299", b"2"))
        self.assertTrue(0 < self.server.command("PTTL", key) <= 3000)

    @inlineCallbacks
    def test_every_key_has_a_ttl_and_keys_is_never_sent(self) -> Any:
        """While streaming and after stream_gone and stop, every key of ours has a TTL, and no KEYS command was ever sent."""
        a = yield self.make("a")
        b = yield self.make("b")
        lease = yield a.claim("s")
        got = Received()
        follower = b.follow("s", got)
        yield self.wait(0.05)
        a.update_stream("s", {"state": "live"})
        a.client_joined(record("c1", "a"))
        b.client_joined(record("c2", "b"))
        for seq in range(5):
            a.publish("s", lease, block(seq, keyframe=seq == 0))
        yield self.until(lambda: len(got.items) == 5)
        yield a.cluster_view()
        yield b.client_count("s")
        yield a.renew("s", lease)
        live = self._keys()
        kinds = sorted({k.decode().split(":")[1] if b":stream:" not in k else k.decode().rsplit(":", 1)[1]
                        for k in live})
        self.assertEqual(kinds, ["client", "clients", "cluster", "epoch", "meta", "mirror", "owner", "streams",
                                 "worker", "workers"])
        self.assertEqual([k for k, ttl in live.items() if ttl < 0], [])
        yield follower.stop()
        b.client_left(record("c2", "b"))
        a.client_left(record("c1", "a"))
        yield a.release("s", lease)
        a.stream_gone("s")
        yield self.wait(0.05)
        yield a.stop()
        yield b.stop()
        left = self._keys()
        self.assertEqual([k for k, ttl in left.items() if ttl < 0], [])
        # Only the epoch counter outlives the stream, and the data-set marker the workers
        # (empty index ZSETs vanish by themselves); both expire.
        self.assertEqual(sorted(left), [b"acetwist-test:cluster:since", b"acetwist-test:stream:s:epoch"])
        stats = self.server.commandstats()
        self.assertNotIn("keys", stats)
        self.assertIn("eval", stats)

    @inlineCallbacks
    def test_non_zero_database_is_selected_on_every_connection(self) -> Any:
        """With redis://…/3 every key lands in database 3, also after a reconnection."""
        from acetwist.coord.redis import RedisCoordinator

        settings = RedisSettings.from_url(self.server.url_for_db(3), **dict(TIMINGS, prefix="acetwist-test",
                                                                            reconnect_max_delay=0.2))
        a = RedisCoordinator(settings, "a", reactor)
        self.addCleanup(a.stop)
        yield a.start()
        yield a.claim("s")
        self.assertEqual(self.server.command("EXISTS", "acetwist-test:stream:s:owner", db=3), 1)
        self.assertEqual(self.server.command("EXISTS", "acetwist-test:stream:s:owner"), 0)
        self.server.command("CLIENT", "KILL", "TYPE", "normal")
        yield self.wait(0.05)
        yield self.until(lambda: a.connected)
        yield a.claim("t")
        self.assertEqual(self.server.command("EXISTS", "acetwist-test:stream:t:owner", db=3), 1)
        self.assertEqual(self.server.scan("*"), [])

    @inlineCallbacks
    def test_password_from_the_url(self) -> Any:
        """A password in the URL is sent with AUTH on connection; a wrong one fails calls without stopping reconnection."""
        from acetwist.coord.redis import RedisCoordinator

        self.server.command("CONFIG", "SET", "requirepass", "s3cret")
        good = RedisCoordinator(RedisSettings.from_url(f"redis://:s3cret@127.0.0.1:{self.server.port}/0",
                                                       command_timeout=0.5), "a", reactor)
        bad = RedisCoordinator(RedisSettings.from_url(f"redis://:wrong@127.0.0.1:{self.server.port}/0",
                                                      command_timeout=0.5, reconnect_max_delay=0.2), "b", reactor)
        self.addCleanup(good.stop)
        self.addCleanup(bad.stop)
        yield good.start()
        yield bad.start()
        self.assertIsNotNone((yield good.claim("s")))
        self.assertFalse(bad.connected)
        yield self.assertFailure(bad.claim("s"), CoordinatorUnavailable)
        self.assertTrue(bad._link.trying)
        self.flushLoggedErrors()

    @inlineCallbacks
    def test_prefixes_keep_deployments_apart(self) -> Any:
        """Coordinators with different prefixes on one Redis never see each other's streams, players or workers."""
        a = yield self.make("a", prefix="one")
        b = yield self.make("b", prefix="two")
        self.assertIsNotNone((yield a.claim("s")))
        self.assertIsNotNone((yield b.claim("s")))
        a.client_joined(record("c1", "a"))
        yield self.wait(0.05)
        self.assertEqual((yield b.client_count("s")), 0)
        view = yield b.cluster_view()
        self.assertEqual((list(view["workers"]), view["players"]), (["b"], {}))

    @inlineCallbacks
    def test_progress_writes_are_throttled(self) -> Any:
        """Many progress calls within the progress interval cost one Redis write."""
        a = yield self.make("a", progress_interval=10.0)
        a.client_joined(record("c1", "a"))
        yield self.wait(0.05)
        before = self.server.commandstats().get("eval", 0)
        for sent in range(1, 101):
            a.client_progress(record("c1", "a", bytes_sent=sent))
        yield self.wait(0.05)
        self.assertEqual(a.stats()["client_progress_absorbed"], 100)
        self.assertLessEqual(self.server.commandstats()["eval"] - before, 2)  # + maybe one heartbeat

    # -- counting players after Redis lost them

    @inlineCallbacks
    def count_answers(self, coordinator: Any, known_wanted: int = 3, timeout: float = 8.0) -> Any:
        """
        Ask for the count of stream s every 50 ms until C{known_wanted}
        answers were numbers; each answer is (Redis's clock in ms after it,
        the number or the CountUnknown).
        """
        answers: List[Tuple[int, Any]] = []
        deadline = time.monotonic() + timeout
        while sum(1 for _, x in answers if isinstance(x, int)) < known_wanted:
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {known_wanted} counts within {timeout} s: {answers[-3:]}")
            try:
                answer = yield coordinator.client_count("s")
            except CountUnknown as e:
                answer = e
            answers.append((self.server.now_ms(), answer))
            yield self.wait(0.05)
        return answers

    def watching(self, coordinator: Any, client_id: str) -> None:
        """A connected player whose bytes do not change, reported every 50 ms (as a paused player would be)."""
        coordinator.client_joined(record(client_id, coordinator.worker_id))
        loop = LoopingCall(coordinator.client_progress, record(client_id, coordinator.worker_id))
        loop.start(0.05)
        self.addCleanup(lambda: loop.running and loop.stop())

    @inlineCallbacks
    def test_count_after_flushall_is_unknown_until_records_are_rewritten(self) -> Any:
        """After FLUSHALL a count is unknown until the data set is client_ttl old, then counts the rewritten records."""
        a = yield self.make("a")
        b = yield self.make("b")
        self.watching(b, "c1")
        yield self.wait(0.05)
        self.assertEqual((yield a.client_count("s")), 1)
        flushed = self.server.now_ms()
        self.server.command("FLUSHALL")
        answers = yield self.count_answers(a)
        self.assertIsInstance(answers[0][1], CountUnknown)
        self.assertIn("players of s", str(answers[0][1]))
        known = [(at, n) for at, n in answers if isinstance(n, int)]
        self.assertEqual({n for _, n in known}, {1}, answers)
        self.assertGreaterEqual(min(at for at, _ in known) - flushed, TIMINGS["client_ttl"] * 1000)
        self.assertGreater(self.server.command("PTTL", a.keys.client("c1")), 0)
        self.assertGreater(self.server.command("PTTL", a.keys.since), 0)
        self.assertGreaterEqual(a.stats()["client_count_unknown"], 1)

    @inlineCallbacks
    def test_count_after_a_restart_is_never_a_wrong_number(self) -> Any:
        """After Redis restarted empty, counts are unknown until every worker has rewritten its players, then right."""
        a = yield self.make("a")
        b = yield self.make("b")
        self.watching(b, "c1")
        self.watching(b, "c2")
        yield self.wait(0.05)
        self.assertEqual((yield a.client_count("s")), 2)
        self.server.restart()
        answers = yield self.count_answers(a)
        self.assertIsInstance(answers[0][1], CountUnknown)
        self.assertEqual({n for _, n in answers if isinstance(n, int)}, {2}, answers)

    @inlineCallbacks
    def test_count_after_a_freeze_longer_than_the_records_is_never_a_wrong_number(self) -> Any:
        """When Redis froze for longer than player records live, they expire with the data-set marker, and counts stay unknown until rewritten."""
        a = yield self.make("a")
        b = yield self.make("b")
        self.watching(b, "c1")
        yield self.wait(0.05)
        self.assertEqual((yield a.client_count("s")), 1)
        self.server.pause()
        self.addCleanup(lambda: self.server.paused and self.server.resume())
        yield self.assertFailure(a.client_count("s"), CountUnknown)
        yield self.wait(TIMINGS["client_ttl"] + 0.4)
        self.server.resume()
        answers = yield self.count_answers(a)
        self.assertIsInstance(answers[0][1], CountUnknown)
        self.assertEqual({n for _, n in answers if isinstance(n, int)}, {1}, answers)

    @inlineCallbacks
    def test_count_right_after_reconnecting_is_unknown(self) -> Any:
        """Within settle_after_reconnect of this worker's link coming back, a count is unknown and says why."""
        a = yield self.make("a")
        b = yield self.make("b")
        self.watching(b, "c1")
        yield self.wait(0.05)
        self.assertEqual((yield a.client_count("s")), 1)
        self.server.command("CLIENT", "KILL", "TYPE", "normal")
        yield self.until(lambda: a._link.reconnected_at is not None)
        reconnected = a._link.reconnected_at
        failure = yield self.assertFailure(a.client_count("s"), CountUnknown)
        self.assertIn("reconnected", str(failure))
        yield self.until(lambda: reactor.seconds() - reconnected > a.settings.settle_after_reconnect)
        self.assertEqual((yield a.client_count("s")), 1)

    # -- following

    @inlineCallbacks
    def test_follower_blocks_in_xread_on_its_own_connection(self) -> Any:
        """An idle follower waits in XREAD BLOCK on a connection of its own instead of polling."""
        a = yield self.make("a", follow_block=0.5)
        clients_before = self.server.command("CLIENT", "LIST").count(b"\n")
        follower = a.follow("s", Received())
        self.addCleanup(follower.stop)
        yield self.wait(0.2)
        before = self.server.commandstats().get("xread", 0)
        yield self.wait(1.0)
        reads = self.server.commandstats().get("xread", 0) - before
        self.assertLessEqual(reads, 3)
        listing = self.server.command("CLIENT", "LIST")
        self.assertEqual(listing.count(b"\n"), clients_before + 1)
        self.assertEqual(listing.count(b"cmd=xread"), 1)

    @inlineCallbacks
    def test_follower_stop_is_prompt(self) -> Any:
        """Stopping a follower blocked in a long XREAD closes its connection at once."""
        a = yield self.make("a", follow_block=10.0)
        follower = a.follow("s", Received())
        yield self.wait(0.2)
        started = time.monotonic()
        yield follower.stop()
        self.assertLess(time.monotonic() - started, 0.5)
        yield self.wait(0.05)
        self.assertNotIn(b"cmd=xread", self.server.command("CLIENT", "LIST"))

    @inlineCallbacks
    def test_stop_waits_for_every_follower_connection(self) -> Any:
        """stop() returns only when every follower connection is closed, including followers stopped just before."""
        a = yield self.make("a")
        early = a.follow("s", Received())
        a.follow("t", Received())
        yield self.wait(0.2)
        early.stop()
        yield a.stop()
        self.assertEqual(a._closing, set())
        late = a.follow("u", Received())
        self.assertTrue(late.stopped)
        yield late.stop()
        yield self.wait(0.05)
        self.assertNotIn(b"cmd=xread", self.server.command("CLIENT", "LIST"))

    @inlineCallbacks
    def test_follower_resumes_after_its_connection_dies_without_losing_blocks(self) -> Any:
        """A follower whose connection is killed reconnects by itself and continues after the last entry it read."""
        a = yield self.make("a", lease_ms=5000)
        lease = yield a.claim("s")
        got = Received()
        follower = a.follow("s", got)
        self.addCleanup(follower.stop)
        yield self.wait(0.05)
        a.publish("s", lease, block(0, keyframe=True))
        yield self.until(lambda: got.seqs == [0])
        for line in self.server.command("CLIENT", "LIST").splitlines():
            if b"cmd=xread" in line:
                self.server.command("CLIENT", "KILL", "ID", line.split(b" ")[0].split(b"=")[1])
        for seq in range(1, 6):
            a.publish("s", lease, block(seq))
        yield self.until(lambda: len(got.items) >= 6)
        self.assertEqual(got.seqs, list(range(6)))
        self.assertEqual(follower.stats()["connects"], 2)

    # -- Redis trouble

    @inlineCallbacks
    def test_redis_down_and_back(self) -> Any:
        """With Redis stopped mid-stream publishes are skipped and counted without blocking, calls fail within the deadline, and after a restart publishing and following resume by themselves."""
        a = yield self.make("a", lease_ms=5000)
        b = yield self.make("b", lease_ms=5000)
        first = yield a.claim("s")
        got = Received()
        follower = b.follow("s", got)
        self.addCleanup(follower.stop)
        yield self.wait(0.05)
        state: Dict[str, Any] = {"seq": 0, "lease": first, "slowest": 0.0}

        def publish() -> None:
            seq = state["seq"]
            started = time.monotonic()
            a.publish("s", state["lease"], block(seq, keyframe=seq % 5 == 0))
            state["slowest"] = max(state["slowest"], time.monotonic() - started)
            state["seq"] += 1

        loop = LoopingCall(publish)
        loop.start(0.01)
        self.addCleanup(lambda: loop.running and loop.stop())
        yield self.until(lambda: len(got.items) >= 5)

        self.server.stop()
        yield self.until(lambda: not a.connected and not b.connected)
        skipped = a.stats().get("publish_skipped", 0)
        yield self.wait(0.3)
        self.assertGreaterEqual(a.stats().get("publish_skipped", 0) - skipped, 10)
        self.assertEqual(a.in_flight, 0)
        for call, error in ((a.claim("s"), CoordinatorUnavailable), (a.owner("s"), CoordinatorUnavailable),
                            (a.renew("s", first), CoordinatorUnavailable), (a.client_count("s"), CountUnknown)):
            started = time.monotonic()
            yield self.assertFailure(call, error)
            self.assertLess(time.monotonic() - started, 0.5 + 0.3)
        self.assertIsNone((yield a.release("s", first)))
        view = yield a.cluster_view()
        self.assertEqual((view["available"], list(view["workers"])), (False, ["a"]))
        a.client_joined(record("c1", "a"))
        a.update_stream("s", {"state": "live"})
        self.assertLessEqual(a.max_in_flight_seen, a.settings.max_in_flight)

        self.server.start()
        yield self.until(lambda: a.connected and b.connected)
        # Redis came back empty: the old lease is gone, so its blocks are fenced until the owner claims again.
        self.assertFalse((yield a.renew("s", first)))
        fenced = a.stats().get("publish_fenced", 0)
        yield self.until(lambda: a.stats().get("publish_fenced", 0) > fenced)
        second = yield a.claim("s")
        self.assertGreater(second.epoch, first.epoch)
        state["lease"] = second
        yield self.until(lambda: second.epoch in got.epochs)
        loop.stop()
        after = [b for b, e in got.items if e == second.epoch]
        self.assertTrue(after[0].keyframe)
        self.assertEqual([b.seq for b in after], list(range(after[0].seq, after[0].seq + len(after))))
        self.assertEqual(sorted(set(got.epochs)), [first.epoch, second.epoch])
        self.assertLess(state["slowest"], 0.05)
        # The worker registered again by itself.
        view = yield b.cluster_view()
        self.assertEqual(sorted(view["workers"]), ["a", "b"])

    @inlineCallbacks
    def test_redis_hung(self) -> Any:
        """With Redis frozen, in-flight writes never exceed the cap, the rest are skipped, calls fail within the deadline, and stop() still finishes."""
        a = yield self.make("a", lease_ms=10000, max_in_flight=8, command_timeout=0.5)
        lease = yield a.claim("s")
        self.server.pause()
        self.addCleanup(lambda: self.server.paused and self.server.resume())
        started = time.monotonic()
        for seq in range(100):
            a.publish("s", lease, block(seq, keyframe=seq % 5 == 0))
        self.assertLess(time.monotonic() - started, 0.5)
        self.assertEqual(a.in_flight, 8)  # publishes and perhaps a heartbeat share the cap
        self.assertGreaterEqual(a.stats()["publish_skipped"], 92)
        started = time.monotonic()
        yield self.assertFailure(a.claim("t"), CoordinatorUnavailable)
        self.assertLess(time.monotonic() - started, 0.5 + 0.3)
        view = yield a.cluster_view()
        self.assertFalse(view["available"])
        yield self.until(lambda: a.in_flight == 0, timeout=2.0)
        for seq in range(100, 200):
            a.publish("s", lease, block(seq))
            yield self.wait(0.005)
        self.assertLessEqual(a.max_in_flight_seen, 8)

        self.server.resume()
        published = a.stats().get("published", 0)
        yield self.until(lambda: a.connected)
        for seq in range(200, 205):
            a.publish("s", lease, block(seq))
        yield self.until(lambda: a.stats().get("published", 0) > published)

        self.server.pause()
        a.client_joined(record("c1", "a"))
        started = time.monotonic()
        yield a.stop()
        self.assertLess(time.monotonic() - started, 2 * 0.5 + 0.5)

    @inlineCallbacks
    def test_starts_without_redis_and_connects_when_it_appears(self) -> Any:
        """A worker started while Redis is down starts anyway, fails calls within the deadline, and joins the cluster once Redis is up."""
        from acetwist.coord.redis import RedisCoordinator

        self.server.stop()
        a = RedisCoordinator(self.settings(), "a", reactor)
        self.addCleanup(a.stop)
        started = time.monotonic()
        yield a.start()
        self.assertLess(time.monotonic() - started, 0.5 + 0.3)
        self.assertFalse(a.connected)
        yield self.assertFailure(a.claim("s"), CoordinatorUnavailable)
        a.publish("s", Lease("a", 1), block(0, True))
        self.assertEqual(a.stats()["publish_skipped"], 1)
        self.server.start()
        yield self.until(lambda: a.connected)
        self.assertIsNotNone((yield a.claim("s")))
        yield self.until(lambda: bool(self.server.scan("acetwist-test:worker:a")))

