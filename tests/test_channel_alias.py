"""
The same stream asked by content id on one worker and by infohash on another,
on task.Clock: claims redirected to the owned key, an owner deferring to the
worker that owns the infohash its session names, and the registry moving
players between the two keys' channels.
"""

from typing import Tuple

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from acetwist.channel import Channel, ClientInfo
from acetwist.config import Settings
from acetwist.coord.memory import MemoryCluster, MemoryCoordinator
from acetwist.coord.settings import CoordSettings
from acetwist.errors import ErrorKind
from acetwist.interfaces import Block, ICoordinator, Lease
from acetwist.registry import MAX_REDIRECTS, Registry
from acetwist.testing import FakePool
from acetwist.upstream import Selector
from tests.fakes import FakeCoordinator, FakeEngine, FakeSink, gop

ID = "1" * 40
HASH = "ab" * 20
BY_ID = f"id:{ID}"
BY_HASH = f"infohash:{HASH}"


def settings() -> Settings:
    return Settings.defaults(grace=5.0, first_byte_timeout=30.0, idle_timeout=5.0, backoff=1.0,
                             reconnect_attempts=2, session_attempts=1, recovery_first_byte_timeout=4.0, lease=3.0)


class Worker:
    """One worker's registry on a coordinator, its channels opening sessions on C{engine}."""

    def __init__(self, clock: Clock, engine: FakeEngine, coordinator: ICoordinator) -> None:
        self.clock = clock
        self.engine = engine
        self.coordinator = coordinator
        self.settings = settings()
        self.registry = Registry(self.make_channel, clock=clock)

    def make_channel(self, selector: Selector, registry: Registry) -> Channel:
        return Channel(selector, pool=FakePool.of(self.engine), settings=self.settings, clock=self.clock,  # type: ignore[arg-type]
                       coordinator=self.coordinator, on_gone=registry.forget, on_canonical=registry.canonical,
                       on_redirect=registry.redirect)

    def join(self, kind: str, value: str, client_id: str = "c") -> Tuple[Channel, FakeSink]:
        channel = self.registry.channel_for(Selector(kind, value))
        sink = FakeSink()
        channel.add_client(sink, ClientInfo(client_id, "127.0.0.1", "test", self.clock.seconds()))
        channel.start()
        return channel, sink


def block(seq: int) -> Block:
    return Block(seq, gop(seq), True, b"", 0, 0.0)


class RedirectTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.engine = FakeEngine()
        self.coordinator = FakeCoordinator()
        self.worker = Worker(self.clock, self.engine, self.coordinator)
        self.registry = self.worker.registry

    def test_a_redirected_claim_moves_the_players_to_a_follower_of_the_other_key(self) -> None:
        """A claim of infohash:Y redirected to id:X (owned elsewhere) moves the player to this worker's id:X channel, which follows its owner; no engine call."""
        self.coordinator.redirects[BY_HASH] = BY_ID
        self.coordinator.owners[BY_ID] = Lease("w1", 4)
        asked, sink = self.worker.join("infohash", HASH)
        self.assertEqual(asked.final, "stopped")
        serving = self.registry.get(BY_ID)
        assert serving is not None
        self.assertEqual(serving.role, "follower")
        self.assertEqual(list(serving.sinks), [sink])
        self.assertIs(self.registry.get(BY_HASH), serving)
        self.assertEqual(self.coordinator.claimed, [(BY_HASH, True), (BY_ID, True)])
        self.coordinator.followers[-1].on_block(block(0), 4)
        self.assertIn("wake", sink.events)
        self.assertIsNone(sink.error)
        self.assertEqual(self.engine.json_calls, 0)

    def test_a_later_request_for_the_redirected_key_goes_straight_to_the_other_channel(self) -> None:
        """After a redirect, another player asking by the redirected key joins the other key's channel without a claim."""
        self.coordinator.redirects[BY_HASH] = BY_ID
        self.coordinator.owners[BY_ID] = Lease("w1", 4)
        self.worker.join("infohash", HASH, "first")
        serving, _ = self.worker.join("infohash", HASH, "second")
        self.assertEqual(serving.key, BY_ID)
        self.assertEqual(len(serving.sinks), 2)
        self.assertEqual(len(self.coordinator.claimed), 2)

    def test_a_redirect_to_a_channel_this_worker_runs_joins_it(self) -> None:
        """A redirect to a key this worker already has a channel for moves the players into that channel."""
        self.coordinator.owners[BY_ID] = Lease("w1", 4)
        running, first = self.worker.join("id", ID, "first")
        del self.coordinator.owners[BY_ID]
        self.coordinator.redirects[BY_HASH] = BY_ID
        _, second = self.worker.join("infohash", HASH, "second")
        self.assertEqual(set(running.sinks), {first, second})
        self.assertIs(self.registry.get(BY_HASH), running)
        self.assertEqual(self.registry.channels(), [running])

    def test_a_redirect_cycle_ends_with_a_cluster_error(self) -> None:
        """Two keys redirected to each other (their owners vanishing in between) give the player a 503, not a loop."""
        self.coordinator.redirects[BY_HASH] = BY_ID
        self.coordinator.redirects[BY_ID] = BY_HASH
        _, sink = self.worker.join("infohash", HASH)
        self.assertIsNotNone(sink.error)
        self.assertEqual(sink.error.status, 503)
        self.assertIs(sink.error.kind, ErrorKind.CLUSTER)
        self.assertEqual(len(self.coordinator.claimed), MAX_REDIRECTS + 1)
        self.assertEqual(self.registry.channels(), [])
        self.assertEqual(self.engine.json_calls, 0)

    def test_a_redirect_chain_is_bounded(self) -> None:
        """A chain of redirects stops after MAX_REDIRECTS hops with a 503 for the player."""
        keys = [f"id:{n}" for n in "abcdefgh"]
        for here, there in zip(keys, keys[1:]):
            self.coordinator.redirects[here] = there
        _, sink = self.worker.join("id", "a")
        self.assertEqual(sink.error.status, 503)
        self.assertEqual(len(self.coordinator.claimed), MAX_REDIRECTS + 1)
        self.assertEqual(self.registry.channels(), [])

    def test_a_follower_whose_owner_deferred_follows_the_other_key(self) -> None:
        """A follower of id:X whose owner vanished and whose takeover claim is redirected moves its players to infohash:Y."""
        self.coordinator.owners[BY_ID] = Lease("w1", 4)
        following, sink = self.worker.join("id", ID)
        first_follower = self.coordinator.followers[-1]
        first_follower.on_block(block(0), 4)
        del self.coordinator.owners[BY_ID]  # w1 deferred to w2, which owns infohash:Y
        self.coordinator.owners[BY_HASH] = Lease("w2", 9)
        self.coordinator.redirects[BY_ID] = BY_HASH
        for _ in range(10):
            self.clock.advance(1.0)
        self.assertEqual(following.final, "stopped")
        self.assertTrue(first_follower.stopped)
        serving = self.registry.get(BY_HASH)
        assert serving is not None
        self.assertEqual((serving.role, list(serving.sinks)), ("follower", [sink]))
        self.assertIs(self.registry.get(BY_ID), serving)
        self.assertEqual(self.coordinator.claimed[-2:], [(BY_ID, True), (BY_HASH, True)])
        self.assertEqual(self.engine.json_calls, 0)
        self.assertIsNone(sink.error)

    def test_an_owner_reclaiming_its_lease_ignores_aliases(self) -> None:
        """An owner whose renew was refused claims its key again without following aliases."""
        channel, _ = self.worker.join("id", ID)
        self.coordinator.renew_ok = False
        self.clock.advance(1.0)
        self.assertEqual(self.coordinator.claimed, [(BY_ID, True), (BY_ID, False)])
        self.assertEqual(channel.role, "owner")


class DeferTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.engine = FakeEngine()
        self.coordinator = FakeCoordinator()
        self.worker = Worker(self.clock, self.engine, self.coordinator)
        self.registry = self.worker.registry

    def live_by_id(self) -> Tuple[Channel, FakeSink]:
        channel, sink = self.worker.join("id", ID)
        self.engine.answer(infohash=HASH)
        self.engine.readers[-1].feed(gop(0))
        return channel, sink

    def test_an_owner_defers_to_the_worker_owning_the_infohash_its_session_names(self) -> None:
        """When the session of id:X names infohash:Y and another worker owns infohash:Y, the players follow that worker and the session is stopped."""
        self.coordinator.owners[BY_HASH] = Lease("w2", 9)
        by_id, sink = self.live_by_id()
        self.assertEqual(self.coordinator.aliases, [(BY_ID, BY_HASH)])
        self.assertEqual(by_id.role, "owner")  # the decision is taken on the next turn
        self.clock.advance(0)
        self.assertEqual(by_id.final, "stopped")
        self.assertEqual(self.engine.stopped, ["pid-0"])
        self.assertIn(BY_ID, self.coordinator.released)
        serving = self.registry.get(BY_HASH)
        assert serving is not None
        self.assertEqual((serving.role, list(serving.sinks)), ("follower", [sink]))
        self.assertIs(self.registry.get(BY_ID), serving)
        self.assertIn("rebind", sink.events)
        self.assertIsNone(sink.error)
        self.coordinator.followers[-1].on_block(block(5), 9)
        self.assertEqual(self.engine.json_calls, 1)

    def test_an_owner_keeps_its_session_when_nobody_owns_the_infohash(self) -> None:
        """With the infohash unowned the alias is recorded and the id's owner keeps reading its session."""
        by_id, sink = self.live_by_id()
        self.clock.advance(0)
        self.assertEqual(self.coordinator.aliases, [(BY_ID, BY_HASH)])
        self.assertEqual((by_id.role, by_id.final), ("owner", None))
        self.assertEqual(self.engine.stopped, [])
        self.assertIs(self.registry.get(BY_HASH), by_id)

    def test_an_owner_keeps_its_session_when_the_infohash_lease_is_its_own(self) -> None:
        """A lease on the infohash in this worker's own name (being released) is no reason to defer."""
        self.coordinator.owners[BY_HASH] = Lease(self.coordinator.worker_id, 3)
        by_id, _ = self.live_by_id()
        self.clock.advance(0)
        self.assertEqual((by_id.role, by_id.final), ("owner", None))
        self.assertEqual(self.engine.stopped, [])

    def test_an_answer_after_the_channel_ended_changes_nothing(self) -> None:
        """The cluster's answer arriving after the channel stopped creates no channel and touches no player."""
        self.coordinator.pending_aliases = []
        by_id, _ = self.live_by_id()
        by_id.stop("test")
        self.coordinator.pending_aliases[0].callback(Lease("w2", 9))
        self.clock.advance(0)
        self.assertEqual(self.registry.channels(), [])
        self.assertEqual(self.coordinator.claimed, [(BY_ID, True)])

    def test_an_unanswered_alias_keeps_the_session(self) -> None:
        """When the cluster cannot record the alias the owner keeps its session."""
        self.coordinator.pending_aliases = []
        by_id, _ = self.live_by_id()
        self.coordinator.pending_aliases[0].errback(RuntimeError("Redis away"))
        self.clock.advance(0)
        self.assertEqual((by_id.role, by_id.final), ("owner", None))
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_a_local_merge_records_the_alias_too(self) -> None:
        """When id and infohash merge inside one worker, the alias is recorded for the other workers as well."""
        self.worker.join("infohash", HASH)
        self.engine.answer(0, infohash=HASH)
        self.worker.join("id", ID)
        self.engine.answer(1, infohash=HASH)
        self.assertEqual(self.coordinator.aliases, [(BY_ID, BY_HASH)])
        self.assertEqual(len(self.registry.channels()), 1)


class SupersededFirstSessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.engine = FakeEngine()
        self.coordinator = FakeCoordinator()
        self.worker = Worker(self.clock, self.engine, self.coordinator)
        self.registry = self.worker.registry

    def test_a_first_session_lost_before_any_data_claims_again_once(self) -> None:
        """A granted first session the engine forgets before any data (superseded) makes the channel claim and open again, once; the second loss fails the players."""
        channel, sink = self.worker.join("id", ID)
        self.engine.answer()
        self.engine.readers[-1].gone(403, b"unknown playback session id")
        self.assertIsNone(sink.error)
        self.assertEqual(self.coordinator.claimed, [(BY_ID, True), (BY_ID, True)])
        self.assertIn(BY_ID, self.coordinator.released)
        self.assertEqual((channel.role, self.engine.json_calls), ("owner", 2))
        self.engine.answer()
        self.engine.readers[-1].gone(403, b"unknown playback session id")
        self.assertEqual(sink.error.status, 502)
        self.assertIs(sink.error.kind, ErrorKind.GONE)
        self.assertEqual(len(self.coordinator.claimed), 2)

    def test_a_first_session_that_delivered_is_not_restarted(self) -> None:
        """Once data arrived, a lost session goes up the recovery ladder: no new claim."""
        channel, sink = self.worker.join("id", ID)
        self.engine.answer()
        self.engine.readers[-1].feed(gop(0))
        self.engine.readers[-1].cut()
        self.assertEqual(len(self.coordinator.claimed), 1)
        self.assertIsNone(sink.error)

    def test_a_refused_start_call_is_not_restarted(self) -> None:
        """An engine that cannot be reached for the start call fails the players without a second claim."""
        _, sink = self.worker.join("id", ID)
        self.engine.refuse(ErrorKind.UNREACHABLE)
        self.assertEqual(sink.error.status, 503)
        self.assertEqual(len(self.coordinator.claimed), 1)

    def test_a_superseded_first_session_follows_the_alias_owner(self) -> None:
        """An id channel whose first session was superseded before any data is redirected to the infohash another worker owns."""
        channel, sink = self.worker.join("id", ID)
        self.engine.answer(infohash=HASH)
        self.coordinator.redirects[BY_ID] = BY_HASH
        self.coordinator.owners[BY_HASH] = Lease("w2", 9)
        self.engine.readers[-1].gone(403, b"unknown playback session id")
        self.assertEqual(channel.final, "stopped")
        serving = self.registry.get(BY_ID)
        assert serving is not None
        self.assertEqual((serving.key, serving.role, list(serving.sinks)), (BY_HASH, "follower", [sink]))
        self.assertEqual(self.engine.json_calls, 1)
        self.clock.advance(0)  # the cluster's answer to the first grant changes nothing now
        self.assertEqual(self.registry.channels(), [serving])


class TwoWorkersTests(SynchronousTestCase):
    """Two registries on one in-memory cluster and one engine: the races of the Redis deployment, on a clock."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.engine = FakeEngine()
        cluster = MemoryCluster(self.clock)
        timings = CoordSettings(lease_ms=3000)
        self.w1 = Worker(self.clock, self.engine, MemoryCoordinator("w1", self.clock, cluster, timings))
        self.w2 = Worker(self.clock, self.engine, MemoryCoordinator("w2", self.clock, cluster, timings))

    def feed(self, reader: int, *gops: int) -> None:
        for n in gops:
            self.engine.readers[reader].feed(gop(n))
        self.clock.advance(0.1)

    def test_simultaneous_id_and_infohash_end_as_one_session(self) -> None:
        """id:X on one worker and infohash:Y on the other, both claimed before either engine call returns: the id's owner defers, one session stays, both players get its data."""
        by_id, id_player = self.w1.join("id", ID)
        by_hash, hash_player = self.w2.join("infohash", HASH)
        self.assertEqual((by_id.role, by_hash.role), ("owner", "owner"))
        self.engine.answer(1, infohash=HASH)  # the infohash call was answered first
        self.engine.answer(0, infohash=HASH)
        self.clock.advance(0)
        self.assertEqual(by_id.final, "stopped")
        self.assertEqual(self.engine.stopped, ["pid-0"])
        follower = self.w1.registry.get(BY_HASH)
        assert follower is not None
        self.assertEqual((follower.role, list(follower.sinks)), ("follower", [id_player]))
        self.assertEqual(by_hash.role, "owner")
        hash_reader = next(r for r in self.engine.readers if r.url == self.engine.session(1).playback_url)
        hash_reader.feed(gop(0))
        hash_reader.feed(gop(1))
        self.clock.advance(0.1)
        self.assertIn("wake", hash_player.events)
        self.assertIn("wake", id_player.events)
        self.assertGreater(len(follower.ring), 0)
        self.assertEqual((id_player.error, hash_player.error), (None, None))
        self.assertEqual(self.engine.json_calls, 2)

    def test_an_infohash_session_superseded_by_the_ids_call_before_any_data(self) -> None:
        """The infohash's session answered first, then superseded by the id's call before its first byte: the infohash's owner claims again, and one session serves both players."""
        by_id, id_player = self.w1.join("id", ID)
        by_hash, hash_player = self.w2.join("infohash", HASH)
        hash_session = self.engine.answer(1, infohash=HASH)
        hash_reader = self.engine.readers[-1]
        # the id's start call reaches the engine: the infohash's session is superseded before any data
        hash_reader.gone(403, b"unknown playback session id")
        self.assertIsNone(hash_player.error)
        self.assertEqual(by_hash.role, "owner")  # claimed again, before the id's owner said anything
        self.engine.answer(0, infohash=HASH)  # the id's session, superseded in its turn by the new call
        self.clock.advance(0)
        self.assertEqual(by_id.final, "stopped")
        follower = self.w1.registry.get(BY_HASH)
        assert follower is not None
        self.assertEqual((follower.role, list(follower.sinks)), ("follower", [id_player]))
        self.engine.answer(2, infohash=HASH)
        live = self.engine.readers[-1]
        self.assertEqual(live.url, self.engine.session(2).playback_url)
        self.assertNotEqual(live.url, hash_session.playback_url)
        live.feed(gop(0))
        live.feed(gop(1))
        self.clock.advance(0.1)
        self.assertIn("wake", hash_player.events)
        self.assertIn("wake", id_player.events)
        self.assertEqual((id_player.error, hash_player.error), (None, None))
        self.assertEqual(self.engine.json_calls, 3)

    def test_an_infohash_request_after_the_alias_is_known_makes_no_engine_call(self) -> None:
        """Once id:X's owner has learned infohash:Y, a request by infohash:Y on the other worker follows it with no engine call."""
        by_id, _ = self.w1.join("id", ID)
        self.engine.answer(infohash=HASH)
        self.clock.advance(0)
        self.feed(-1, 0, 1)
        asked, hash_player = self.w2.join("infohash", HASH)
        self.assertEqual(asked.final, "stopped")
        follower = self.w2.registry.get(BY_HASH)
        assert follower is not None
        self.assertEqual((follower.key, follower.role), (BY_ID, "follower"))
        self.feed(-1, 2)
        self.assertIn("wake", hash_player.events)
        self.assertEqual(self.engine.json_calls, 1)
        self.assertEqual(by_id.role, "owner")

    def test_an_id_request_after_a_deferral_follows_the_infohash(self) -> None:
        """After an id owner deferred to the infohash's owner, a new request by id on a third registry goes to the infohash without an engine call."""
        self.test_simultaneous_id_and_infohash_end_as_one_session()
        calls = self.engine.json_calls
        w3 = Worker(self.clock, self.engine, MemoryCoordinator("w3", self.clock, self.w1.coordinator.cluster,  # type: ignore[attr-defined]
                                                               CoordSettings(lease_ms=3000)))
        asked, player = w3.join("id", ID)
        self.assertEqual(asked.final, "stopped")
        serving = w3.registry.get(BY_ID)
        assert serving is not None
        self.assertEqual((serving.key, serving.role), (BY_HASH, "follower"))
        self.assertEqual(self.engine.json_calls, calls)
