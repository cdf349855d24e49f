"""
The coordinator contract, written once and run against L{MemoryCoordinator}
(on a C{task.Clock}) and L{RedisCoordinator} (on a real redis-server).
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, List, Tuple

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks, succeed
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from acetwist.coord.memory import MemoryCluster, MemoryCoordinator
from acetwist.coord.settings import CoordSettings
from acetwist.interfaces import Block, ClientRecord, ICoordinator, IFollower, Lease, Redirect

#: Short timings so that expiry can be observed in tests (seconds; the lease is 300 ms).
TIMINGS = dict(
    lease_ms=300,
    client_ttl=0.6,
    progress_interval=0.1,
    worker_ttl=0.6,
    heartbeat_interval=0.15,
    stream_ttl=1.5,
    mirror_ttl=3.0,
    mirror_maxlen=50,
    alias_ttl=1.2,
)


def block(seq: int, keyframe: bool = False, segment: int = 0, size: int = 188 * 7) -> Block:
    """A block with distinctive binary content (every byte value, CR/LF, NULs)."""
    data = (bytes([0x47]) + os.urandom(187)) * (size // 188) + b"\r\n\x00" + bytes(range(256))
    return Block(seq=seq, data=data, keyframe=keyframe, psi=b"\x47\x40\x00\x10" + bytes(184) + b"\r\n",
                 segment=segment, created=1700000000.25 + seq)


def record(client_id: str, worker: str, stream_key: str = "s", bytes_sent: int = 0) -> ClientRecord:
    return ClientRecord(client_id=client_id, stream_key=stream_key, worker=worker, ip="192.0.2.7",
                        user_agent="VLC/3.0.21 LibVLC/3.0.21", connected_at=1700000000.5, bytes_sent=bytes_sent)


class Received:
    """Collects what a follower delivers."""

    def __init__(self) -> None:
        self.items: List[Tuple[Block, int]] = []

    def __call__(self, b: Block, epoch: int) -> None:
        self.items.append((b, epoch))

    @property
    def seqs(self) -> List[int]:
        return [b.seq for b, _ in self.items]

    @property
    def epochs(self) -> List[int]:
        return [e for _, e in self.items]


class CoordinatorContract:
    """Tests every coordinator passes. Subclasses say how to make one and how time passes."""

    lease = TIMINGS["lease_ms"] / 1000.0

    # -- provided by subclasses

    def make(self, worker_id: str) -> Deferred[Any]:
        raise NotImplementedError

    def wait(self, seconds: float) -> Deferred[None]:
        raise NotImplementedError

    def inject(self, coordinator: Any, stream_key: str, b: Block, epoch: int) -> Deferred[None]:
        """Put an entry in the mirror directly, bypassing the lease check (a stale or odd writer)."""
        raise NotImplementedError

    def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> Deferred[None]:
        raise NotImplementedError

    def lose_record(self, coordinator: Any, client_id: str, stream_key: str = "s") -> None:
        """Make the cluster forget one player's record behind its worker's back."""
        raise NotImplementedError

    # -- ownership

    @inlineCallbacks
    def test_reclaim_margin_is_the_settings(self) -> Any:
        """A coordinator tells how long a live owner may need to claim again, from its settings."""
        a = yield self.make("a")
        self.assertEqual(a.reclaim_margin, a.settings.reclaim_margin)
        self.assertGreater(a.reclaim_margin, 0)

    @inlineCallbacks
    def test_provides_interfaces(self) -> Any:
        """A coordinator and its followers provide ICoordinator and IFollower."""
        a = yield self.make("a")
        self.assertTrue(verifyObject(ICoordinator, a))
        follower = a.follow("s", lambda b, e: None)
        self.assertTrue(verifyObject(IFollower, follower))
        yield follower.stop()

    @inlineCallbacks
    def test_claim_unowned(self) -> Any:
        """Claiming an unowned stream gives a lease in this worker's name that owner() reports."""
        a = yield self.make("host-a:101")
        lease = yield a.claim("s")
        self.assertEqual(lease.owner, "host-a:101")
        self.assertGreaterEqual(lease.epoch, 1)
        self.assertEqual((yield a.owner("s")), lease)
        self.assertIsNone((yield a.owner("other")))

    @inlineCallbacks
    def test_one_winner_among_concurrent_claims(self) -> Any:
        """Of many concurrent claims from two workers exactly one wins."""
        a = yield self.make("a")
        b = yield self.make("b")
        results = yield gatherResults([c.claim("s") for _ in range(5) for c in (a, b)])
        winners = [r for r in results if r is not None]
        self.assertEqual(len(winners), 1, results)
        self.assertEqual((yield b.owner("s")), winners[0])

    @inlineCallbacks
    def test_claim_fails_while_owned(self) -> Any:
        """A live lease, kept by renewals, keeps every other claimer out."""
        a = yield self.make("a")
        b = yield self.make("b")
        lease = yield a.claim("s")
        for _ in range(6):
            yield self.wait(self.lease / 3)
            self.assertTrue((yield a.renew("s", lease)))
            self.assertIsNone((yield b.claim("s")))
        self.assertEqual((yield b.owner("s")), lease)

    @inlineCallbacks
    def test_takeover_after_expiry_has_higher_epoch(self) -> Any:
        """After a lease expires another worker takes over with a strictly higher epoch, and the old renew fails."""
        a = yield self.make("a")
        b = yield self.make("b")
        first = yield a.claim("s")
        yield self.wait(self.lease * 1.5)
        self.assertIsNone((yield b.owner("s")))
        second = yield b.claim("s")
        self.assertEqual(second.owner, "b")
        self.assertGreater(second.epoch, first.epoch)
        self.assertFalse((yield a.renew("s", first)))
        third_try = yield a.claim("s")
        self.assertIsNone(third_try)

    @inlineCallbacks
    def test_epoch_increases_on_every_claim(self) -> Any:
        """Every successful claim of a stream gets a higher epoch than the one before."""
        a = yield self.make("a")
        epochs = []
        for _ in range(4):
            lease = yield a.claim("s")
            epochs.append(lease.epoch)
            yield a.release("s", lease)
        self.assertEqual(epochs, sorted(set(epochs)))

    @inlineCallbacks
    def test_release_only_own_lease(self) -> Any:
        """Releasing frees our own lease but never a newer owner's."""
        a = yield self.make("a")
        b = yield self.make("b")
        old = yield a.claim("s")
        yield a.release("s", old)
        self.assertIsNone((yield a.owner("s")))
        new = yield b.claim("s")
        yield a.release("s", old)
        self.assertEqual((yield a.owner("s")), new)
        self.assertFalse((yield a.renew("s", old)))
        self.assertTrue((yield b.renew("s", new)))

    # -- aliases (the same stream asked by content id and by infohash)

    @inlineCallbacks
    def test_alias_of_an_owned_key_redirects_a_claim(self) -> Any:
        """Once id:x's owner recorded that it is infohash:y, a claim of infohash:y is redirected to id:x (unless aliases are not followed)."""
        a = yield self.make("a")
        b = yield self.make("b")
        lease = yield a.claim("id:x")
        self.assertIsNone((yield a.alias("id:x", "infohash:y")))
        self.assertEqual((yield b.claim("infohash:y")), Redirect("id:x"))
        self.assertIsNone((yield b.owner("infohash:y")))
        self.assertEqual((yield b.claim("id:x")), None)
        plain = yield b.claim("infohash:y", aliases=False)
        self.assertIsInstance(plain, Lease)
        self.assertEqual((yield a.owner("id:x")), lease)

    @inlineCallbacks
    def test_alias_answers_the_owner_of_the_other_key(self) -> Any:
        """Recording an alias whose other key is owned answers that owner's lease, and later claims of the first key go to it."""
        a = yield self.make("a")
        b = yield self.make("b")
        c = yield self.make("c")
        theirs = yield b.claim("infohash:y")
        ours = yield a.claim("id:x")
        self.assertEqual((yield a.alias("id:x", "infohash:y")), theirs)
        yield a.release("id:x", ours)
        self.assertEqual((yield c.claim("id:x")), Redirect("infohash:y"))

    @inlineCallbacks
    def test_an_owned_key_is_never_redirected(self) -> Any:
        """A claim of a key someone owns is refused as ever, even when its alias is owned too."""
        a = yield self.make("a")
        b = yield self.make("b")
        c = yield self.make("c")
        yield b.claim("infohash:y")
        yield a.claim("id:x")
        yield a.alias("id:x", "infohash:y")
        self.assertIsNone((yield c.claim("id:x")))
        self.assertIsNone((yield c.claim("infohash:y")))

    @inlineCallbacks
    def test_alias_of_an_unowned_key_is_not_followed(self) -> Any:
        """An alias whose other key nobody owns (its owner stopped or died) does not redirect: the claim wins."""
        a = yield self.make("a")
        b = yield self.make("b")
        lease = yield a.claim("id:x")
        yield a.alias("id:x", "infohash:y")
        yield a.release("id:x", lease)
        won = yield b.claim("infohash:y")
        self.assertEqual(won.owner, "b")
        dead = yield self.make("dead")
        yield dead.claim("id:z")
        yield dead.alias("id:z", "infohash:w")
        yield dead._crash()
        yield self.wait(self.lease * 1.5)
        won = yield b.claim("infohash:w")
        self.assertEqual(won.owner, "b")

    @inlineCallbacks
    def test_alias_expires(self) -> Any:
        """An alias not learned again within alias_ttl is forgotten: claims are no longer redirected."""
        a = yield self.make("a")
        b = yield self.make("b")
        lease = yield a.claim("id:x")
        yield a.alias("id:x", "infohash:y")
        for _ in range(int(TIMINGS["alias_ttl"] / (self.lease / 3)) + 2):
            yield self.wait(self.lease / 3)
            self.assertTrue((yield a.renew("id:x", lease)))
        won = yield b.claim("infohash:y")
        self.assertEqual(won.owner, "b")

    @inlineCallbacks
    def test_concurrent_alias_and_claim_never_both_miss(self) -> Any:
        """An alias recorded while another worker claims the other key at the same moment: either the alias answers that worker's lease or the claim is redirected, never neither."""
        a = yield self.make("a")
        b = yield self.make("b")
        for i in range(20):
            content, infohash = f"id:x{i}", f"infohash:y{i}"
            yield a.claim(content)
            if i % 2:
                answer, claimed = yield gatherResults([a.alias(content, infohash), b.claim(infohash)])
            else:
                claimed, answer = yield gatherResults([b.claim(infohash), a.alias(content, infohash)])
            if isinstance(claimed, Lease):
                self.assertEqual(answer, claimed)
            else:
                self.assertEqual(claimed, Redirect(content))
                self.assertIsNone(answer)

    # -- mirror

    @inlineCallbacks
    def test_follow_starts_at_newest_keyframe_byte_exact(self) -> Any:
        """A follower starts at the newest keyframe block and receives blocks byte-exact with their epoch."""
        a = yield self.make("a")
        b = yield self.make("b")
        lease = yield a.claim("s")
        published = [block(0, True), block(1), block(2), block(3, True), block(4)]
        for p in published:
            a.publish("s", lease, p)
        yield self.wait(0.05)
        got = Received()
        follower = b.follow("s", got)
        self.addCleanup(follower.stop)
        yield self.until(lambda: len(got.items) >= 2)
        late = block(5)
        a.publish("s", lease, late)
        yield self.until(lambda: len(got.items) >= 3)
        self.assertEqual(got.items, [(published[3], lease.epoch), (published[4], lease.epoch), (late, lease.epoch)])

    @inlineCallbacks
    def test_follow_from_start(self) -> Any:
        """A follower asked to start from the start receives the oldest mirrored block first."""
        a = yield self.make("a")
        lease = yield a.claim("s")
        published = [block(0), block(1, True), block(2)]
        for p in published:
            a.publish("s", lease, p)
        yield self.wait(0.05)
        got = Received()
        follower = a.follow("s", got, from_start=True)
        self.addCleanup(follower.stop)
        yield self.until(lambda: len(got.items) >= 3)
        self.assertEqual([b for b, _ in got.items], published)

    @inlineCallbacks
    def test_follow_with_a_backlog_starts_that_far_back(self) -> Any:
        """A follower with a backlog starts at the newest keyframe block created at least that long before the newest block (the publisher's clock)."""
        a = yield self.make("a")
        b = yield self.make("b")
        lease = yield a.claim("s")
        for p in [block(0, True), block(1), block(2, True), block(3), block(4, True), block(5), block(6)]:
            a.publish("s", lease, p)  # created one second apart
        yield self.wait(0.05)
        runs = {}
        for backlog in (3.0, 2.0, 10.0, 0.0):
            got = Received()
            follower = b.follow("s", got, backlog=backlog)
            self.addCleanup(follower.stop)
            yield self.until(lambda: 6 in got.seqs)
            runs[backlog] = got.seqs
        self.assertEqual(runs, {3.0: [2, 3, 4, 5, 6], 2.0: [4, 5, 6], 10.0: [0, 1, 2, 3, 4, 5, 6], 0.0: [4, 5, 6]})

    @inlineCallbacks
    def test_follow_backlog_stays_in_the_newest_keyframes_segment(self) -> Any:
        """A follower's backlog does not reach back past a change of segment before the newest keyframe."""
        a = yield self.make("a")
        b = yield self.make("b")
        lease = yield a.claim("s")
        for p in [block(0, True), block(1), block(2, True, segment=1), block(3, segment=1), block(4, True, segment=1),
                  block(5, segment=1)]:
            a.publish("s", lease, p)
        yield self.wait(0.05)
        got = Received()
        follower = b.follow("s", got, backlog=10.0)
        self.addCleanup(follower.stop)
        yield self.until(lambda: 5 in got.seqs)
        self.assertEqual(got.seqs, [2, 3, 4, 5])

    @inlineCallbacks
    def test_follow_before_anything_is_published_waits_for_a_keyframe(self) -> Any:
        """A follower of an empty mirror delivers nothing before the first keyframe block, then everything."""
        a = yield self.make("a")
        b = yield self.make("b")
        got = Received()
        follower = b.follow("s", got)
        self.addCleanup(follower.stop)
        yield self.wait(0.1)
        lease = yield a.claim("s")
        for p in [block(0), block(1), block(2, True), block(3)]:
            a.publish("s", lease, p)
        yield self.until(lambda: len(got.items) >= 2)
        yield self.wait(0.05)
        self.assertEqual(got.seqs, [2, 3])

    @inlineCallbacks
    def test_stale_owner_cannot_publish(self) -> Any:
        """Blocks published under a lost lease never reach followers; the new owner's do."""
        a = yield self.make("a")
        b = yield self.make("b")
        old = yield a.claim("s")
        got = Received()
        follower = b.follow("s", got)
        self.addCleanup(follower.stop)
        yield self.wait(0.05)
        a.publish("s", old, block(0, True))
        yield self.until(lambda: len(got.items) >= 1)
        yield self.wait(self.lease * 1.5)
        new = yield b.claim("s")
        a.publish("s", old, block(1))
        b.publish("s", new, block(0, True, segment=0))
        a.publish("s", old, block(2))
        b.publish("s", new, block(1, segment=0))
        yield self.until(lambda: len(got.items) >= 3)
        yield self.wait(0.05)
        self.assertEqual([(b.seq, e) for b, e in got.items], [(0, old.epoch), (0, new.epoch), (1, new.epoch)])
        self.assertGreaterEqual(a.stats().get("publish_fenced", 0), 2)

    @inlineCallbacks
    def test_lower_epoch_never_delivered(self) -> Any:
        """Once a block of some epoch was delivered, blocks of lower epochs are dropped."""
        a = yield self.make("a")
        got = Received()
        follower = a.follow("s", got)
        self.addCleanup(follower.stop)
        yield self.wait(0.05)
        yield self.inject(a, "s", block(0, True), 7)
        yield self.inject(a, "s", block(1), 5)
        yield self.inject(a, "s", block(7, True), 3)
        yield self.inject(a, "s", block(1), 7)
        yield self.inject(a, "s", block(0, True), 9)
        yield self.until(lambda: len(got.items) >= 3)
        yield self.wait(0.05)
        self.assertEqual([(b.seq, e) for b, e in got.items], [(0, 7), (1, 7), (0, 9)])

    @inlineCallbacks
    def test_gap_resumes_at_next_keyframe(self) -> Any:
        """After a hole in the sequence (a trimmed or recreated mirror) delivery resumes at the next keyframe."""
        a = yield self.make("a")
        got = Received()
        follower = a.follow("s", got)
        self.addCleanup(follower.stop)
        yield self.wait(0.05)
        for seq, key in [(0, True), (1, False), (2, False), (5, False), (6, False), (7, True), (8, False)]:
            yield self.inject(a, "s", block(seq, key), 4)
        yield self.until(lambda: len(got.items) >= 5)
        yield self.wait(0.05)
        self.assertEqual(got.seqs, [0, 1, 2, 7, 8])

    @inlineCallbacks
    def test_stopped_follower_delivers_nothing_more(self) -> Any:
        """After stop() returns no more blocks are delivered, and its Deferred fires."""
        a = yield self.make("a")
        lease = yield a.claim("s")
        got = Received()
        follower = a.follow("s", got)
        yield self.wait(0.05)
        a.publish("s", lease, block(0, True))
        yield self.until(lambda: len(got.items) == 1)
        stopped = follower.stop()
        a.publish("s", lease, block(1))
        yield stopped
        yield self.wait(0.2)
        self.assertEqual(got.seqs, [0])

    @inlineCallbacks
    def test_stream_gone_deletes_mirror_and_metadata(self) -> Any:
        """After stream_gone a new follower finds no mirror and the cluster view no metadata."""
        a = yield self.make("a")
        lease = yield a.claim("s")
        a.update_stream("s", {"state": "live"})
        a.publish("s", lease, block(0, True))
        yield self.wait(0.05)
        yield a.release("s", lease)
        a.stream_gone("s")
        yield self.wait(0.05)
        got = Received()
        follower = a.follow("s", got, from_start=True)
        self.addCleanup(follower.stop)
        yield self.wait(0.2)
        self.assertEqual(got.items, [])
        view = yield a.cluster_view()
        self.assertNotIn("s", view["streams"])

    @inlineCallbacks
    def test_stream_gone_from_old_owner_spares_new_owner(self) -> Any:
        """A former owner's late stream_gone leaves the new owner's mirror and metadata alone."""
        a = yield self.make("a")
        b = yield self.make("b")
        yield a.claim("s")
        yield self.wait(self.lease * 1.5)
        new = yield b.claim("s")
        b.update_stream("s", {"state": "live"})
        b.publish("s", new, block(0, True))
        yield self.wait(0.05)
        a.stream_gone("s")
        yield self.wait(0.05)
        view = yield b.cluster_view()
        self.assertEqual(view["streams"]["s"]["metadata"], {"state": "live"})
        got = Received()
        follower = a.follow("s", got, from_start=True)
        self.addCleanup(follower.stop)
        yield self.until(lambda: len(got.items) == 1)

    # -- players and cluster view

    @inlineCallbacks
    def test_client_count_is_cluster_wide(self) -> Any:
        """Players joined on any worker count everywhere until they leave."""
        a = yield self.make("a")
        b = yield self.make("b")
        a.client_joined(record("c1", "a"))
        a.client_joined(record("c2", "a"))
        b.client_joined(record("c3", "b"))
        b.client_joined(record("c4", "b", stream_key="other"))
        yield self.wait(0.05)
        self.assertEqual((yield a.client_count("s")), 3)
        self.assertEqual((yield b.client_count("s")), 3)
        a.client_left(record("c2", "a"))
        yield self.wait(0.05)
        self.assertEqual((yield b.client_count("s")), 2)
        self.assertEqual((yield b.client_count("other")), 1)
        self.assertEqual((yield b.client_count("nobody")), 0)

    @inlineCallbacks
    def test_dead_workers_players_age_out(self) -> Any:
        """A dead worker's players stop counting after the client TTL, while players refreshed by delivery stay."""
        a = yield self.make("a")
        b = yield self.make("b")
        a.client_joined(record("c1", "a"))
        b.client_joined(record("c2", "b"))
        yield self.wait(0.05)
        self.assertEqual((yield b.client_count("s")), 2)
        yield a._crash()
        sent = 0
        for _ in range(10):
            yield self.wait(0.15)
            sent += 1000
            b.client_progress(record("c2", "b", bytes_sent=sent))
        self.assertEqual((yield b.client_count("s")), 1)
        view = yield b.cluster_view()
        self.assertNotIn("a", view["players"])
        self.assertEqual([p["client_id"] for p in view["players"]["b"]], ["c2"])
        self.assertGreater(view["players"]["b"][0]["bytes_sent"], 0)

    @inlineCallbacks
    def test_progress_without_new_bytes_keeps_a_player_counted(self) -> Any:
        """A player whose bytes do not change (paused) stays counted as long as progress is reported."""
        a = yield self.make("a")
        b = yield self.make("b")
        a.client_joined(record("c1", "a", bytes_sent=500))
        for _ in range(8):
            yield self.wait(TIMINGS["client_ttl"] / 4)
            a.client_progress(record("c1", "a", bytes_sent=500))
        self.assertEqual((yield b.client_count("s")), 1)

    @inlineCallbacks
    def test_progress_recreates_a_lost_record(self) -> Any:
        """A progress write creates a player's record the cluster lost, and the record still expires without refreshes."""
        a = yield self.make("a")
        b = yield self.make("b")
        a.client_joined(record("c1", "a"))
        yield self.wait(0.05)
        self.lose_record(a, "c1")
        self.assertEqual((yield b.client_count("s")), 0)
        yield self.wait(TIMINGS["progress_interval"])
        a.client_progress(record("c1", "a", bytes_sent=100))
        yield self.wait(0.05)
        self.assertEqual((yield b.client_count("s")), 1)
        view = yield b.cluster_view()
        self.assertEqual(view["players"]["a"][0]["bytes_sent"], 100)
        yield self.wait(TIMINGS["client_ttl"] + 0.2)
        self.assertEqual((yield b.client_count("s")), 0)

    @inlineCallbacks
    def test_players_not_refreshed_expire(self) -> Any:
        """A player whose delivery stopped (no progress) disappears after the client TTL even on a live worker."""
        a = yield self.make("a")
        a.client_joined(record("c1", "a"))
        yield self.wait(0.05)
        self.assertEqual((yield a.client_count("s")), 1)
        yield self.wait(TIMINGS["client_ttl"] + 0.2)
        self.assertEqual((yield a.client_count("s")), 0)

    @inlineCallbacks
    def test_cluster_view(self) -> Any:
        """The cluster view lists live workers, streams with owner, epoch and metadata, and every worker's players."""
        a = yield self.make("host-a:1")
        b = yield self.make("host-b:2")
        lease = yield a.claim("s")
        a.update_stream("s", {"state": "live", "bitrate": 4000000, "engine": "http://e:6878"})
        a.update_stream("s", {"state": "recovering"})
        a.client_joined(record("c1", "host-a:1", bytes_sent=10))
        b.client_joined(record("c2", "host-b:2"))
        yield self.wait(0.2)
        view = yield b.cluster_view()
        self.assertTrue(view["available"])
        self.assertEqual(sorted(view["workers"]), ["host-a:1", "host-b:2"])
        self.assertEqual(view["workers"]["host-a:1"]["pid"], os.getpid())
        stream = view["streams"]["s"]
        self.assertEqual((stream["owner"], stream["epoch"]), ("host-a:1", lease.epoch))
        self.assertEqual(stream["metadata"], {"state": "recovering", "bitrate": "4000000", "engine": "http://e:6878"})
        self.assertEqual(stream["clients"], 2)
        self.assertEqual(view["players"]["host-a:1"], [
            {"client_id": "c1", "stream_key": "s", "worker": "host-a:1", "ip": "192.0.2.7",
             "user_agent": "VLC/3.0.21 LibVLC/3.0.21", "connected_at": 1700000000.5, "bytes_sent": 10},
        ])
        self.assertEqual(ClientRecord(**view["players"]["host-b:2"][0]), record("c2", "host-b:2"))

    @inlineCallbacks
    def test_stop_removes_worker_and_its_players(self) -> Any:
        """A stopped worker disappears from the cluster view at once, with its players."""
        a = yield self.make("a")
        b = yield self.make("b")
        a.client_joined(record("c1", "a"))
        yield self.wait(0.2)
        self.assertIn("a", (yield b.cluster_view())["workers"])
        yield a.stop()
        view = yield b.cluster_view()
        self.assertNotIn("a", view["workers"])
        self.assertNotIn("a", view["players"])
        self.assertEqual((yield b.client_count("s")), 0)

    @inlineCallbacks
    def test_dead_worker_ages_out_of_view(self) -> Any:
        """A worker that stops heartbeating leaves the cluster view after the worker TTL."""
        a = yield self.make("a")
        b = yield self.make("b")
        yield self.wait(0.2)
        self.assertIn("a", (yield b.cluster_view())["workers"])
        yield a._crash()
        yield self.wait(TIMINGS["worker_ttl"] + 0.2)
        view = yield b.cluster_view()
        self.assertEqual(list(view["workers"]), ["b"])


class MemoryContractTests(CoordinatorContract, TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000.0)
        self.cluster = MemoryCluster(self.clock)

    def make(self, worker_id: str) -> Deferred[Any]:
        coordinator = MemoryCoordinator(worker_id, self.clock, self.cluster, CoordSettings(**TIMINGS))
        coordinator.start()
        self.addCleanup(coordinator.stop)
        return succeed(coordinator)

    def wait(self, seconds: float) -> Deferred[None]:
        steps = max(1, int(round(seconds / 0.01)))
        for _ in range(steps):
            self.clock.advance(seconds / steps)
        return succeed(None)

    def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> Deferred[None]:
        for _ in range(int(timeout / 0.01)):
            if predicate():
                return succeed(None)
            self.clock.advance(0.01)
        raise AssertionError("condition not reached")

    def lose_record(self, coordinator: Any, client_id: str, stream_key: str = "s") -> None:
        del self.cluster.clients[client_id]

    def inject(self, coordinator: Any, stream_key: str, b: Block, epoch: int) -> Deferred[None]:
        from collections import deque

        from acetwist.coord.memory import _Mirror

        cluster = coordinator.cluster
        mirror = cluster.mirror(stream_key)
        if mirror is None:
            mirror = cluster.mirrors[stream_key] = _Mirror(deque(maxlen=50), 0.0)
        mirror.entries.append((cluster.next_id(), b, epoch))
        mirror.expires = cluster.now() + 60
        for follower in list(cluster.followers.get(stream_key, ())):
            follower.pump()
        return succeed(None)


class RedisHarness:
    """A real redis-server per test, and coordinators on it with short timings (no tests here)."""

    timeout = 30

    def setUp(self) -> None:
        from tests.redis_server import RedisServer

        self.server = RedisServer.for_test(self)

    def settings(self, **kw: Any) -> Any:
        from acetwist.coord.redis import RedisSettings

        options = dict(TIMINGS, prefix="acetwist-test", command_timeout=0.5, follow_block=0.3,
                       reconnect_max_delay=0.2, max_in_flight=16)
        options.update(kw)
        return RedisSettings.from_url(self.server.url, **options)

    @inlineCallbacks
    def make(self, worker_id: str, settled: bool = True, **kw: Any) -> Any:
        """A started coordinator; unless not C{settled}, on a data set Redis has held for an hour."""
        from acetwist.coord.redis import RedisCoordinator

        settings = self.settings(**kw)
        if settled and not self.server.scan(settings.prefix + ":cluster:since"):
            self.server.age_data_set(settings.prefix)
        coordinator = RedisCoordinator(settings, worker_id, reactor)
        self.addCleanup(coordinator.stop)
        yield coordinator.start()
        self.assertTrue(coordinator.connected)
        return coordinator

    def wait(self, seconds: float) -> Deferred[None]:
        return deferLater(reactor, seconds, lambda: None)

    @inlineCallbacks
    def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("condition not reached")
            yield deferLater(reactor, 0.01, lambda: None)

    def lose_record(self, coordinator: Any, client_id: str, stream_key: str = "s") -> None:
        self.server.command("DEL", coordinator.keys.client(client_id))
        self.server.command("ZREM", coordinator.keys.clients(stream_key), client_id)

    def inject(self, coordinator: Any, stream_key: str, b: Block, epoch: int) -> Deferred[None]:
        self.server.command(
            "XADD", coordinator.keys.mirror(stream_key), "*", "data", b.data,
            "keyframe", "1" if b.keyframe else "0", "psi", b.psi, "epoch", epoch, "seq", b.seq,
            "segment", b.segment, "created", repr(b.created),
        )
        return succeed(None)


class RedisContractTests(RedisHarness, CoordinatorContract, TestCase):
    pass
