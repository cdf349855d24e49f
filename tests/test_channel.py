"""Channel state machine on task.Clock, with a hand-driven engine and recording sinks."""


from acetwist.channel import Channel, ClientInfo
from acetwist.errors import ErrorKind
from acetwist.upstream import EngineError, Selector
from acetwist.testing import FakePool
from tests.channel_harness import ChannelHarness
from tests.fakes import FakeSink, gop

ID = "1" * 40


class ChannelTestCase(ChannelHarness):
    def join(self, kind: str = "id", value: str = ID) -> "tuple[Channel, FakeSink]":
        channel = self.registry.channel_for(Selector(kind, value))
        sink = FakeSink()
        sink.on_close = channel.remove_client
        channel.add_client(sink, ClientInfo("c", "127.0.0.1", "test", self.clock.seconds()))
        channel.start()
        return channel, sink

    def go_live(self) -> "tuple[Channel, FakeSink]":
        channel, sink = self.join()
        self.engine.answer()
        self.engine.readers[-1].feed(gop(0))
        self.clock.advance(0.1)  # flush the partial block
        return channel, sink


class StartTests(ChannelTestCase):
    def test_players_share_one_engine_session(self) -> None:
        """Three players asking for one stream make exactly one engine JSON call."""
        channel, _ = self.join()
        for _ in range(2):
            self.join()
        self.assertEqual(self.engine.json_calls, 1)
        self.assertEqual(len(channel.sinks), 3)

    def test_first_data_makes_the_channel_live_and_wakes_players(self) -> None:
        """After the session opens the channel prebuffers; the first block makes it live and wakes the sink."""
        channel, sink = self.join()
        self.assertEqual(channel.state, "starting")
        self.engine.answer()
        self.assertEqual(channel.state, "prebuffering")
        self.engine.readers[-1].feed(gop(0))
        self.clock.advance(0.1)
        self.assertEqual(channel.state, "live")
        self.assertIn("wake", sink.events)
        self.assertTrue(self.coordinator.published)

    def test_engine_error_reaches_every_waiting_player(self) -> None:
        """A JSON error fails every waiting player with the same error, and the channel is forgotten."""
        channel, first = self.join()
        _, second = self.join()
        self.engine.refuse(EngineError(502, "engine: failed to load content"))
        self.assertEqual(first.error.status, 502)
        self.assertIs(first.error, second.error)
        self.assertEqual(channel.state, "failed")
        self.assertEqual(self.registry.channels(), [])
        self.assertEqual(self.engine.stop_calls, 0)

    def test_no_data_before_deadline_fails_with_the_readers_error_and_stops_the_session(self) -> None:
        """When the playback read ends without data the players get its error and the session is stopped once."""
        channel, sink = self.join()
        self.engine.answer()
        self.engine.readers[-1].end("no data within 30 s", EngineError(504, "engine sent no data within 30 s"))
        self.assertEqual(sink.error.status, 504)
        self.assertEqual(self.engine.stopped, ["pid-0"])

    def test_empty_reply_while_warming_up_is_retried(self) -> None:
        """An empty 200 before the first byte means the engine is warming up: the same URL is read again."""
        channel, sink = self.join()
        self.engine.answer()
        self.engine.readers[-1].end("closed", EngineError(502, "engine ended the stream before any data",
                                                           kind=ErrorKind.EMPTY))
        self.clock.advance(self.settings.backoff)
        self.assertEqual(len(self.engine.readers), 2)
        self.assertEqual(self.engine.readers[1].url, self.engine.readers[0].url)
        self.assertIsNone(sink.error)

    def test_id_and_infohash_share_one_channel(self) -> None:
        """Once the engine names the infohash, a request by that infohash joins the id's channel."""
        channel, _ = self.join("id", ID)
        self.engine.answer(infohash="ab" * 20)
        other, _ = self.join("infohash", "ab" * 20)
        self.assertIs(other, channel)
        self.assertEqual(self.engine.json_calls, 1)

    def test_concurrent_id_and_infohash_merge_into_one_channel(self) -> None:
        """If id and infohash calls raced, the second reply hands its players to the first channel."""
        by_id, id_sink = self.join("id", ID)
        by_hash, hash_sink = self.join("infohash", "ab" * 20)
        self.engine.answer(0, infohash="ab" * 20)
        self.engine.answer(1, infohash="ab" * 20)
        # the infohash channel was registered first under its own key; the id channel hands over to it
        survivors = self.registry.channels()
        self.assertEqual(len(survivors), 1)
        survivor = survivors[0]
        self.assertEqual(set(survivor.sinks), {id_sink, hash_sink})
        self.assertEqual(survivor.session.pid, "pid-1")
        self.assertEqual(self.engine.stop_calls, 0)


class GraceTests(ChannelTestCase):
    def test_last_player_leaving_stops_the_session_once_after_grace(self) -> None:
        """The engine session is stopped exactly once, grace seconds after the last player left."""
        channel, sink = self.go_live()
        sink.leave()
        self.assertEqual(channel.state, "lingering")
        self.clock.advance(4.9)
        self.assertEqual(self.engine.stop_calls, 0)
        self.clock.advance(0.2)
        self.assertEqual(self.engine.stopped, ["pid-0"])
        self.assertEqual(channel.state, "stopped")
        self.assertTrue(self.engine.readers[0].stopped)
        self.assertEqual(self.registry.channels(), [])
        self.clock.advance(100)
        self.assertEqual(self.engine.stop_calls, 1)

    def test_player_arriving_during_grace_reuses_the_session(self) -> None:
        """A player joining during the grace period cancels the stop and shares the same session."""
        channel, sink = self.go_live()
        sink.leave()
        self.clock.advance(3)
        again, _ = self.join()
        self.assertIs(again, channel)
        self.assertEqual(channel.state, "live")
        self.clock.advance(10)
        self.assertEqual(self.engine.stop_calls, 0)
        self.assertEqual(self.engine.json_calls, 1)

    def test_stop_closes_started_players_cleanly_and_fails_waiting_ones(self) -> None:
        """Shutdown finishes players that have data and gives waiting players a 503."""
        channel, live = self.go_live()
        waiting = FakeSink()
        waiting.on_close = channel.remove_client
        channel.add_client(waiting, ClientInfo("w", "127.0.0.1", "t", 0))
        channel.stop("shutting down")
        self.assertIn("finish", live.events)
        self.assertEqual(waiting.error.status, 503)
        self.assertEqual(self.engine.stop_calls, 1)


class RecoveryTests(ChannelTestCase):
    def test_cut_rereads_the_same_url_and_players_stay(self) -> None:
        """A cut of a flowing stream re-reads the same playback URL after the backoff; players stay attached."""
        channel, sink = self.go_live()
        self.engine.readers[0].end("engine closed the stream")
        self.assertEqual(channel.state, "recovering")
        self.clock.advance(1.0)
        self.assertEqual(len(self.engine.readers), 2)
        self.assertEqual(self.engine.readers[1].url, self.engine.readers[0].url)
        self.engine.readers[1].feed(gop(1))
        self.clock.advance(0.1)
        self.assertEqual(channel.state, "live")
        self.assertIn(sink, channel.sinks)
        self.assertIsNone(sink.error)
        self.assertEqual(channel.recoveries, 1)

    def test_failed_rereads_open_a_new_session(self) -> None:
        """When re-reads of the same URL bring nothing, the ladder opens a new engine session."""
        channel, sink = self.go_live()
        self.engine.readers[0].end("cut")
        self.clock.advance(1.0)
        self.engine.readers[1].end("refused", EngineError(503, "x"))
        self.clock.advance(2.0)
        self.engine.readers[2].end("refused", EngineError(503, "x"))
        self.clock.advance(4.0)
        self.assertEqual(self.engine.json_calls, 2)
        self.assertEqual(self.engine.stopped, ["pid-0"])
        self.engine.answer()
        self.engine.readers[3].feed(gop(0))
        self.clock.advance(0.1)
        self.assertEqual(channel.state, "live")
        self.assertIsNone(sink.error)

    def test_every_rung_failing_disconnects_players(self) -> None:
        """Only when every rung fails are players failed (aborted), and the sessions stopped."""
        channel, sink = self.go_live()
        self.engine.readers[0].end("cut")
        for delay in (1.0, 2.0):
            self.clock.advance(delay)
            self.engine.readers[-1].end("refused", EngineError(503, "x"))
        self.clock.advance(4.0)
        self.engine.refuse(EngineError(503, "engine unreachable"))
        self.assertEqual(channel.state, "failed")
        self.assertIsNotNone(sink.error)
        self.assertEqual(self.registry.channels(), [])


class ClusterTests(ChannelTestCase):
    def test_fake_coordinator_provides_the_interface(self) -> None:
        """The coordinator double used here implements ICoordinator."""
        from zope.interface.verify import verifyObject

        from acetwist.interfaces import ICoordinator

        self.assertTrue(verifyObject(ICoordinator, self.coordinator))

    def test_non_owner_follows_the_mirror_and_never_calls_the_engine(self) -> None:
        """When another worker owns the stream, the channel serves its mirrored blocks and makes no engine call."""
        from acetwist.interfaces import Block, Lease

        self.coordinator.other_owner = Lease("other", 7)
        channel, sink = self.join()
        self.assertEqual(channel.role, "follower")
        self.assertEqual(self.engine.json_calls, 0)
        [follower] = self.coordinator.followers
        follower.on_block(Block(0, gop(0), True, b"", 0, 0.0), 7)
        self.assertEqual(channel.state, "live")
        self.assertIn("wake", sink.events)
        self.assertEqual(len(channel.ring), 1)
        self.assertEqual(self.coordinator.published, [])

    def test_follower_takes_over_when_the_owner_is_gone(self) -> None:
        """A follower with players claims the stream once it has seen no owner for longer than a live owner needs to re-claim."""
        RECLAIM_MARGIN = self.coordinator.reclaim_margin
        from acetwist.interfaces import Block, Lease

        self.coordinator.other_owner = Lease("other", 7)
        channel, sink = self.join()
        self.coordinator.followers[0].on_block(Block(0, gop(0), True, b"", 0, 0.0), 7)
        self.coordinator.other_owner = None
        self.clock.advance(RECLAIM_MARGIN)
        self.assertEqual(channel.role, "follower")
        for _ in range(6):
            self.clock.advance(1.0)
        self.assertEqual(channel.role, "owner")
        self.assertTrue(self.coordinator.followers[0].stopped)
        self.assertEqual(self.engine.json_calls, 1)
        self.engine.answer()
        self.engine.readers[-1].feed(gop(1))
        self.clock.advance(0.1)
        self.assertEqual(channel.state, "live")
        self.assertIsNone(sink.error)
        self.assertEqual(self.coordinator.published[-1][0], channel.lease.epoch)

    def test_follower_waits_while_the_cluster_cannot_answer(self) -> None:
        """Unanswered owner queries (Redis away) never count towards a takeover."""
        from twisted.internet.defer import fail

        from acetwist.interfaces import Lease

        self.coordinator.other_owner = Lease("other", 7)
        channel, sink = self.join()
        self.coordinator.other_owner = None
        self.coordinator.owner = lambda key: fail(Exception("redis away"))  # type: ignore[method-assign]
        for _ in range(30):
            self.clock.advance(1.0)
        self.assertEqual(channel.role, "follower")
        self.assertEqual(self.engine.json_calls, 0)

    def test_hole_in_the_mirror_restarts_players_at_a_keyframe(self) -> None:
        """A gap in the mirrored sequence starts a new segment, so players resume at the next keyframe."""
        from acetwist.interfaces import Block, Lease

        self.coordinator.other_owner = Lease("other", 7)
        channel, sink = self.join()
        follower = self.coordinator.followers[0]
        follower.on_block(Block(10, gop(0), True, b"", 0, 0.0), 7)
        follower.on_block(Block(11, gop(1), True, b"", 0, 0.0), 7)
        self.assertEqual(channel.ring.segment, 1)
        follower.on_block(Block(15, gop(2), True, b"", 0, 0.0), 7)
        self.assertEqual(channel.ring.segment, 2)

    def test_lost_lease_nobody_else_took_is_reclaimed_without_a_new_session(self) -> None:
        """If the lease lapsed (say Redis restarted) and nobody took it, the owner claims a new epoch and keeps its session."""
        channel, sink = self.go_live()
        first_epoch = channel.lease.epoch
        self.coordinator.renew_ok = False
        self.clock.advance(self.settings.lease / 3)
        self.coordinator.renew_ok = True
        self.assertGreater(channel.lease.epoch, first_epoch)
        self.assertEqual(self.engine.json_calls, 1)
        self.assertFalse(self.engine.readers[0].stopped)

    def test_refused_claim_on_our_own_lease_keeps_us_owner(self) -> None:
        """A re-claim refused because this worker already holds the key does not make it a follower."""
        from acetwist.interfaces import Lease

        channel, sink = self.go_live()
        self.coordinator.other_owner = Lease(self.coordinator.worker_id, 42)
        self.clock.advance(self.settings.lease / 3)
        self.assertEqual(channel.role, "owner")
        self.assertEqual(channel.lease.epoch, 42)
        self.assertFalse(self.engine.readers[0].stopped)

    def test_lease_taken_by_another_worker_turns_the_owner_into_a_follower(self) -> None:
        """When another worker holds the lease, the former owner stops reading and follows, without stopping the session."""
        from acetwist.interfaces import Lease

        channel, sink = self.go_live()
        self.coordinator.other_owner = Lease("other", 99)
        self.clock.advance(self.settings.lease / 3)
        self.assertEqual(channel.role, "follower")
        self.assertTrue(self.engine.readers[0].stopped)
        self.assertEqual(self.engine.stop_calls, 0)
        self.assertIn(sink, channel.sinks)

    def test_owner_keeps_the_session_while_other_workers_have_players(self) -> None:
        """At grace expiry the owner counts players cluster-wide; it stops only once that count is zero."""
        channel, sink = self.go_live()
        self.coordinator.cluster_clients = 2
        sink.leave()
        self.clock.advance(self.settings.grace + 0.1)
        self.assertEqual(self.engine.stop_calls, 0)
        self.assertEqual(channel.state, "lingering")
        self.coordinator.cluster_clients = 0
        self.clock.advance(self.settings.grace + 0.1)
        self.assertEqual(self.engine.stop_calls, 1)
        self.assertEqual(self.coordinator.gone, [channel.key])

    def test_an_owner_that_cannot_count_the_cluster_keeps_the_session(self) -> None:
        """When the cluster-wide count fails at grace expiry the owner keeps lingering and asks again; it never counts 0."""
        from acetwist.coord.base import CoordinatorUnavailable

        channel, sink = self.go_live()
        self.coordinator.count_error = CoordinatorUnavailable("redis paused")
        sink.leave()
        for _ in range(30):
            self.clock.advance(1.0)
        self.assertEqual(self.engine.stop_calls, 0)
        self.assertEqual(channel.state, "lingering")
        self.coordinator.count_error = None
        self.clock.advance(self.settings.grace + 0.1)
        self.assertEqual(self.engine.stop_calls, 1)

    def test_heartbeat_reports_only_real_delivery(self) -> None:
        """Player records are refreshed when bytes were delivered since the last beat, not by the timer alone."""
        channel, sink = self.go_live()
        sink.bytes_sent = 1000
        self.clock.advance(self.settings.heartbeat)
        self.assertEqual([r.bytes_sent for r in self.coordinator.progress], [1000])
        self.clock.advance(self.settings.heartbeat)
        self.assertEqual(len(self.coordinator.progress), 1)
        sink.bytes_sent = 5000
        self.clock.advance(self.settings.heartbeat)
        self.assertEqual([r.bytes_sent for r in self.coordinator.progress], [1000, 5000])
        self.assertEqual(self.coordinator.metadata[-1]["state"], "live")


class ReviewRegressionTests(ChannelTestCase):
    def test_engine_reply_after_losing_the_lease_is_stopped_not_read(self) -> None:
        """A session the engine grants after this worker lost the stream to another is stopped, never read."""
        from acetwist.interfaces import Lease

        channel, sink = self.join()
        self.coordinator.other_owner = Lease("other", 99)
        self.clock.advance(self.settings.lease / 3)
        self.assertEqual(channel.role, "follower")
        self.engine.answer()
        self.assertEqual(self.engine.readers, [])
        self.assertEqual(self.engine.stopped, ["pid-0"])

    def test_adopted_session_cancels_pending_recovery_and_keeps_one_reader(self) -> None:
        """Adopting a handed-over session cancels scheduled recovery rungs, so exactly one reader stays active."""
        by_hash, _ = self.join("infohash", "ab" * 20)
        self.engine.answer(0, infohash="ab" * 20)
        self.engine.readers[0].feed(gop(0))
        self.clock.advance(0.1)
        self.engine.readers[0].end("superseded")  # schedules a re-read in 1 s
        self.join("id", ID)
        self.engine.answer(1, infohash="ab" * 20)  # the id channel hands over
        self.clock.advance(5)
        active = [r for r in self.engine.readers if not r.stopped]
        self.assertEqual(len(active), 1)
        self.assertEqual(active[0].url, self.engine.session(1).playback_url)

    def test_a_replaced_reader_is_stopped_so_it_reports_nothing(self) -> None:
        """When an adopted session replaces the one being read, the old reader is stopped and only the new one reads."""
        channel, sink = self.go_live()
        first = self.engine.readers[0]
        from acetwist.channel.engine_source import Granted
        from acetwist.testing import FakeReservation

        pool = FakePool.of(self.engine)
        channel.adopt_session(Granted(self.engine.session(7), FakeReservation(pool, self.engine.base_url, channel.key)))
        self.assertTrue(first.stopped)
        self.assertEqual([r.url for r in self.engine.readers if not r.stopped], [self.engine.session(7).playback_url])

    def test_sink_closing_during_start_leaves_no_ghost_record(self) -> None:
        """A player that is gone before its sink starts is recorded as joined, then left: never a ghost."""
        channel = self.registry.channel_for(Selector("id", ID))
        sink = FakeSink()
        sink.on_close = channel.remove_client
        sink.start = sink.leave  # type: ignore[method-assign]
        channel.add_client(sink, ClientInfo("ghost", "127.0.0.1", "t", 0))
        self.assertEqual([r.client_id for r in self.coordinator.joined], ["ghost"])
        self.assertEqual([r.client_id for r in self.coordinator.left], ["ghost"])

    def test_handover_moves_player_records_to_the_surviving_key(self) -> None:
        """Players handed to another channel leave the old stream key's records and join the new one's."""
        self.join("infohash", "ab" * 20)
        self.engine.answer(0, infohash="ab" * 20)
        self.join("id", ID)
        self.engine.answer(1, infohash="ab" * 20)
        left = [(r.client_id, r.stream_key) for r in self.coordinator.left]
        self.assertIn(("c", f"id:{ID}"), left)
        joined_keys = [r.stream_key for r in self.coordinator.joined]
        self.assertEqual(joined_keys.count(f"infohash:{'ab' * 20}"), 2)

    def test_handed_session_is_used_if_our_own_call_fails(self) -> None:
        """A session handed over while our own engine call is pending is used if that call fails."""
        by_id, id_sink = self.join("id", ID)
        by_hash, hash_sink = self.join("infohash", "ab" * 20)
        self.engine.answer(0, infohash="ab" * 20)  # id channel hands over to the pending infohash channel
        self.engine.refuse(EngineError(503, "busy"), 1)
        self.assertIsNone(hash_sink.error)
        self.assertEqual(by_hash.session.pid, "pid-0")
        self.assertEqual(self.engine.readers[-1].url, self.engine.session(0).playback_url)


class OneSessionPerContentTests(ChannelTestCase):
    def test_a_player_with_other_parameters_joins_the_running_channel(self) -> None:
        """A player adding pass-through parameters joins the content's channel; the opener's parameters are used."""
        first = self.registry.channel_for(Selector("id", ID, (("transcode_audio", "1"),)))
        first.start()
        second = self.registry.channel_for(Selector("id", ID, (("transcode_audio", "0"), ("_idx", "3"))))
        self.assertIs(second, first)
        self.assertEqual(self.engine.json_calls, 1)
        self.assertEqual(self.engine.selectors[0].extra, (("transcode_audio", "1"),))
        self.assertEqual(first.status()["parameters"], {"transcode_audio": "1"})

    def test_many_distinct_parameters_open_one_engine_session(self) -> None:
        """Fifty players with distinct _idx values share one channel and one engine session."""
        channels = {id(self.registry.channel_for(Selector("id", ID, (("_idx", str(n)),)))) for n in range(50)}
        for channel in self.registry.channels():
            channel.start()
        self.assertEqual(len(channels), 1)
        self.assertEqual(self.engine.json_calls, 1)


class FailedContentTests(ChannelTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.registry.failed_content_ttl = 10.0

    def test_a_refused_content_is_answered_from_memory_for_a_while(self) -> None:
        """After the engine refused a content, players asking for it within the ttl get the same 502 without an engine call."""
        channel, sink = self.join()
        self.engine.refuse(EngineError(502, "engine: failed to load content", kind=ErrorKind.REFUSED))
        self.clock.advance(9)
        with self.assertRaises(EngineError) as caught:
            self.registry.channel_for(Selector("id", ID))
        self.assertEqual((caught.exception.status, caught.exception.message, caught.exception.kind),
                         (sink.error.status, sink.error.message, sink.error.kind))
        self.assertEqual(self.engine.json_calls, 1)
        self.clock.advance(1)
        self.registry.channel_for(Selector("id", ID)).start()
        self.assertEqual(self.engine.json_calls, 2)

    def test_an_unreachable_engine_is_not_remembered(self) -> None:
        """Only the engine's refusal is remembered: after a 503 the next player asks the engine again."""
        self.join()
        self.engine.refuse(EngineError(503, "engine unreachable", kind=ErrorKind.UNREACHABLE))
        self.join()
        self.assertEqual(self.engine.json_calls, 2)

    def test_a_stream_that_played_is_not_remembered_as_refused(self) -> None:
        """A channel that had data and then failed does not block the next player."""
        channel, sink = self.go_live()
        self.engine.readers[-1].end("refused", EngineError(502, "x", kind=ErrorKind.REFUSED))
        for _ in range(40):  # every rung of the ladder is refused too
            self.clock.advance(8)
            if not channel.alive:
                break
            if self.engine.opens and not self.engine.opens[-1].called:
                self.engine.refuse(EngineError(502, "x", kind=ErrorKind.REFUSED))
            elif not self.engine.readers[-1].stopped:
                self.engine.readers[-1].end("refused", EngineError(502, "x", kind=ErrorKind.REFUSED))
        self.assertFalse(channel.alive)
        self.join()
        self.assertGreater(self.engine.json_calls, 1)


class MemoryTests(ChannelTestCase):
    def test_an_ended_channel_releases_its_blocks_and_is_freed_without_the_cycle_collector(self) -> None:
        """Once stopped and forgotten, a channel's ring holds no block and the channel is freed by reference counting alone."""
        import gc
        import weakref

        channel, sink = self.go_live()
        for n in range(1, 5):
            self.engine.readers[-1].feed(gop(n))
            self.clock.advance(0.1)
        ring = channel.ring
        self.assertGreater(len(ring), 0)
        gone = weakref.ref(channel)
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)
        sink.leave()
        self.clock.advance(self.settings.grace + 0.1)
        self.assertEqual((len(ring), ring.total_bytes), (0, 0))
        del channel, sink
        self.assertIsNone(gone(), gc.get_referrers(gone()) if gone() is not None else None)

    def test_a_failed_channel_is_freed_without_the_cycle_collector(self) -> None:
        """A channel the engine refused is freed by reference counting alone once the registry forgot it."""
        import gc
        import weakref

        channel, sink = self.join()
        gone = weakref.ref(channel)
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)
        self.engine.refuse(EngineError(502, "engine: failed to load content"))
        del channel, sink
        self.assertIsNone(gone())


class HeartbeatTests(ChannelTestCase):
    def test_players_waiting_through_a_recovery_stay_counted(self) -> None:
        """While the upstream recovers players get no bytes, yet their records are refreshed every beat."""
        channel, sink = self.go_live()
        sink.bytes_sent = 1000
        self.clock.advance(self.settings.heartbeat)
        self.engine.readers[-1].end("cut")
        before = len(self.coordinator.progress)
        self.clock.advance(self.settings.heartbeat)
        self.clock.advance(self.settings.heartbeat)
        self.assertEqual(channel.state, "recovering")
        self.assertEqual(len(self.coordinator.progress), before + 2)
