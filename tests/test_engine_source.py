"""The owner's engine source on task.Clock, with a hand-driven engine."""

from typing import List

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from acetwist.channel.engine_source import EngineCore, EngineSource, Granted
from acetwist.config import Settings
from acetwist.engine_api import HLS
from acetwist.errors import EngineError, ErrorKind
from acetwist.upstream import EngineSession, PlaybackEnd, Selector
from acetwist.testing import FakePool
from tests.fakes import FakeEngine, gop

ID = "1" * 40
GONE = EngineError(502, "engine playback answered HTTP 404", kind=ErrorKind.GONE)


class EngineSourceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.engine = FakeEngine()
        self.pool = FakePool.of(self.engine)
        self.settings = Settings.defaults(first_byte_timeout=30.0, idle_timeout=5.0, backoff=1.0, reconnect_attempts=3,
                                          session_attempts=2, recovery_first_byte_timeout=4.0)
        self.data: List[bytes] = []
        self.failures: List[EngineError] = []
        self.incidents = 0
        self.handed_over: List[EngineSession] = []
        self.source = self.make_source()

    def make_source(self, had_data: bool = False) -> EngineSource:
        def on_session(granted: Granted) -> bool:
            if granted.session.infohash == "cd" * 20:
                self.handed_over.append(granted.session)
                return False
            return True

        def on_recovering() -> None:
            self.incidents += 1

        return EngineSource(EngineCore(self.pool, Selector("id", ID), self.settings, self.clock,
                                       on_data=self.data.append, on_session=on_session, on_recovering=on_recovering,
                                       on_failed=self.failures.append, had_data=had_data, key="id:" + ID))

    def granted(self, session: EngineSession) -> Granted:
        """C{session} as another channel hands it over: with a reservation on our engine."""
        reservation = self.successResultOf(self.pool.reserve("id:" + ID))
        reservation.commit(session)
        return Granted(session, reservation)

    def go_live(self) -> None:
        self.source.start()
        self.engine.answer()
        self.engine.readers[-1].feed(gop(0))
        self.source.block_cut()

    def test_phases_follow_the_stream(self) -> None:
        """The source is starting, then prebuffering once the session opens, live on the first block, recovering after a cut."""
        self.source.start()
        self.assertEqual(self.source.phase, "starting")
        self.engine.answer()
        self.assertEqual(self.source.phase, "prebuffering")
        self.engine.readers[-1].feed(gop(0))
        self.source.block_cut()
        self.assertEqual(self.source.phase, "live")
        self.engine.readers[-1].end("cut")
        self.assertEqual((self.source.phase, self.incidents), ("recovering", 1))
        self.clock.advance(1.0)
        self.engine.readers[-1].feed(gop(1))
        self.source.block_cut()
        self.assertEqual(self.source.phase, "live")

    def test_an_hls_session_is_read_as_hls_and_its_splices_mark_the_ring(self) -> None:
        """A session of format hls is read with read_hls; a splice from the current read marks the ring, a stale one not."""
        self.source.start()
        self.engine.answer(format=HLS)
        reader = self.engine.readers[-1]
        self.assertIsNotNone(reader.on_splice)
        self.assertTrue(reader.url.endswith(".m3u8"))
        reader.feed(gop(0))
        self.source.block_cut()
        reader.splice()
        reader.feed(gop(1))
        self.assertEqual((self.source.phase, self.incidents, self.data), ("live", 1, [gop(0), gop(1)]))
        reader.end("cut")
        self.assertEqual(self.incidents, 2)
        reader.on_splice()  # a late splice from the ended read
        self.assertEqual(self.incidents, 2)
        self.clock.advance(1.0)
        self.assertIsNotNone(self.engine.readers[-1].on_splice)  # the re-read is an HLS read too
        self.assertEqual(self.engine.json_calls, 1)

    def test_a_ts_session_is_read_progressively(self) -> None:
        """A session of format ts is read with read (no splice callback)."""
        self.source.start()
        self.engine.answer()
        self.assertIsNone(self.engine.readers[-1].on_splice)

    def test_a_late_engine_reply_after_stop_is_stopped_exactly_once_and_otherwise_ignored(self) -> None:
        """A session granted after the source stopped is stopped once and never read."""
        self.source.start()
        self.source.stop()
        session = self.engine.answer()
        self.source.stop()
        self.assertEqual(self.engine.stopped, [session.pid])
        self.assertEqual(self.engine.readers, [])
        self.assertEqual(self.failures, [])

    def test_stopping_while_waiting_for_a_rung_cancels_its_timer(self) -> None:
        """Leaving the waiting state cancels the rung's timer: no read follows the stop."""
        self.go_live()
        self.engine.readers[-1].end("cut")
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.source.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(60)
        self.assertEqual(len(self.engine.readers), 1)
        self.assertEqual(self.engine.stopped, ["pid-0"])

    def test_a_demoted_owner_stops_its_reader_but_not_the_engine_session(self) -> None:
        """Abandoning the source (another worker owns the stream) stops the reader and leaves the session alone."""
        self.go_live()
        self.source.abandon()
        self.assertTrue(self.engine.readers[0].stopped)
        self.assertEqual(self.engine.stop_calls, 0)

    def test_the_engine_saying_the_session_is_gone_opens_a_new_session_at_once(self) -> None:
        """After a cut, a 404 on the playback URL skips the remaining re-reads and opens a new session with no delay."""
        self.go_live()
        self.engine.readers[-1].end("cut")
        self.clock.advance(1.0)
        self.engine.readers[-1].end("engine playback answered HTTP 404", GONE)
        self.clock.advance(0)
        self.assertEqual(self.engine.json_calls, 2)
        self.assertEqual(self.engine.stopped, ["pid-0"])
        self.engine.answer()
        self.assertEqual(self.engine.readers[-1].first_byte_timeout, self.settings.first_byte_timeout)

    def test_connection_failures_climb_the_ladder_with_backoff(self) -> None:
        """Re-reads refused by a down engine are retried after 1, 2 and 4 s before a new session is asked for."""
        self.go_live()
        self.engine.readers[-1].end("cut")
        for delay in (1.0, 2.0, 4.0):
            self.clock.advance(delay - 0.01)
            count = len(self.engine.readers)
            self.clock.advance(0.01)
            self.assertEqual(len(self.engine.readers), count + 1)
            self.engine.readers[-1].end("refused", EngineError(503, "engine unreachable"))
        self.assertEqual(self.engine.json_calls, 1)
        self.clock.advance(8.0)
        self.assertEqual(self.engine.json_calls, 2)

    def test_an_empty_reply_before_any_data_is_read_again_until_the_deadline(self) -> None:
        """While the engine warms up empty replies are re-read; at the first-byte deadline the players get the error."""
        self.source.start()
        self.engine.answer()
        empty = EngineError(502, "engine ended the stream before any data", kind=ErrorKind.EMPTY)
        for _ in range(40):
            if self.failures:
                break
            self.engine.readers[-1].end("closed", empty)
            self.clock.advance(self.settings.backoff)
        self.assertEqual(self.failures, [empty])
        self.assertLessEqual(self.clock.seconds(), self.settings.first_byte_timeout)
        self.assertGreater(len(self.engine.readers), 10)

    def test_a_refusal_before_any_data_is_final(self) -> None:
        """An engine refusal of the first session fails the players at once, with no retry."""
        self.source.start()
        error = EngineError(502, "engine: failed to load content")
        self.engine.refuse(error)
        self.assertEqual(self.failures, [error])
        self.clock.advance(60)
        self.assertEqual(self.engine.json_calls, 1)

    def test_a_session_handed_over_meanwhile_is_used_if_our_call_fails(self) -> None:
        """A session adopted while our JSON call is pending is read if that call fails."""
        self.source.start()
        adopted = self.engine.session(9)
        self.source.adopt(self.granted(adopted))
        self.engine.refuse(EngineError(503, "busy"))
        self.assertEqual(self.failures, [])
        self.assertEqual(self.engine.readers[-1].url, adopted.playback_url)
        self.assertIs(self.source.session, adopted)

    def test_a_session_for_another_channels_stream_is_not_read(self) -> None:
        """When the channel hands a new session to another channel, the source reads nothing and stops nothing."""
        self.source.start()
        self.engine.answer(infohash="cd" * 20)
        self.assertEqual(len(self.handed_over), 1)
        self.assertEqual((self.engine.readers, self.engine.stopped), ([], []))
        self.source.stop()
        self.assertEqual(self.engine.stopped, [])

    def test_a_reader_that_reports_after_it_was_replaced_is_ignored(self) -> None:
        """An end reported by a reader that an adopted session replaced starts no recovery."""
        self.go_live()
        first = self.engine.readers[0]
        self.source.adopt(self.granted(self.engine.session(5)))
        incidents = self.incidents
        first.on_end(PlaybackEnd("late", first.bytes_read))
        self.assertEqual(self.incidents, incidents)
        self.assertEqual(len(self.clock.getDelayedCalls()), 0)

    def test_a_takeover_opens_a_new_session_without_rereading(self) -> None:
        """A source that starts with data already in the ring treats a failed first session as a rung, not a failure."""
        self.source = self.make_source(had_data=True)
        self.source.start()
        self.assertEqual((self.source.phase, self.incidents), ("recovering", 1))
        self.engine.refuse(EngineError(503, "busy"))
        self.assertEqual(self.failures, [])
        self.clock.advance(1.0)
        self.assertEqual(self.engine.json_calls, 2)
        self.engine.answer()
        self.assertEqual(len(self.engine.readers), 1)


def refused_connection() -> EngineError:
    """What a call to a dead engine fails with: no connection could be made."""
    error = EngineError(503, "engine unreachable: ConnectionRefusedError", retry_after=5, kind=ErrorKind.UNREACHABLE)
    error.engine_down = True
    return error


class FailoverTests(SynchronousTestCase):
    """Two engines: the ladder's last rung moves the channel to the other one."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.a, self.b = FakeEngine(), FakeEngine()
        self.b.base_url = "http://engine-b.invalid:6878"
        self.pool = FakePool(("a", self.a), ("b", self.b))
        self.settings = Settings.defaults(first_byte_timeout=30.0, idle_timeout=5.0, backoff=1.0, reconnect_attempts=2,
                                          session_attempts=1, recovery_first_byte_timeout=4.0, failover_timeout=20.0)
        self.failures: List[EngineError] = []
        self.source = EngineSource(EngineCore(self.pool, Selector("id", ID), self.settings, self.clock,
                                              on_data=lambda data: None, on_session=lambda granted: True,
                                              on_recovering=lambda: None, on_failed=self.failures.append,
                                              key="id:" + ID))

    def go_live_on_a(self) -> None:
        self.source.start()
        self.a.answer()
        self.a.readers[-1].feed(gop(0))
        self.source.block_cut()
        self.assertEqual(self.source.engine_id, "a")

    def test_an_engine_that_refuses_connections_is_left_at_once_for_another(self) -> None:
        """A cut followed by a refused connection skips the remaining rungs and opens a session on the other engine."""
        self.go_live_on_a()
        self.a.readers[-1].end("cut")
        self.clock.advance(1.0)
        self.a.readers[-1].end("refused", refused_connection())
        self.clock.advance(0)
        self.assertEqual(self.pool.failures, ["a"])
        self.assertEqual(self.b.json_calls, 1)
        self.b.answer()
        self.assertEqual(self.source.engine_id, "b")
        self.assertEqual(self.b.readers[-1].first_byte_timeout, self.settings.first_byte_timeout)
        self.assertEqual(self.a.stopped, ["pid-0"])  # the old session's stop was attempted
        self.assertEqual(self.pool.events, [("started", "a", "id:" + ID), ("ended", "a", "id:" + ID),
                                            ("started", "b", "id:" + ID)])

    def test_the_same_engine_is_tried_first_then_another(self) -> None:
        """Re-reads and a new session on the same engine come before the move to the other engine."""
        self.go_live_on_a()
        self.a.readers[-1].end("cut")
        for delay in (1.0, 2.0):
            self.clock.advance(delay)
            self.a.readers[-1].end("empty", EngineError(502, "x", kind=ErrorKind.EMPTY))
        self.clock.advance(4.0)
        self.assertEqual((self.a.json_calls, self.b.json_calls), (2, 0))
        self.a.refuse(EngineError(502, "engine: failed to load content"))
        self.clock.advance(0)
        self.assertEqual(self.b.json_calls, 1)

    def test_with_no_engine_eligible_the_channel_keeps_looking_until_the_failover_timeout(self) -> None:
        """While the other engine is down the source looks again with backoff, and gives up after --failover-timeout."""
        self.go_live_on_a()
        self.pool.down.add("b")
        self.a.readers[-1].end("refused", refused_connection())
        self.clock.advance(15.0)
        self.assertEqual((self.failures, self.b.json_calls), ([], 0))
        self.pool.down.discard("b")
        self.clock.advance(8.0)
        self.assertEqual(self.b.json_calls, 1)
        self.b.answer()
        self.assertEqual(self.source.engine_id, "b")

    def test_giving_up_when_no_engine_comes_back(self) -> None:
        """With every other engine down past the failover timeout, players get the lost-stream error."""
        self.go_live_on_a()
        self.pool.down.add("b")
        self.a.readers[-1].end("refused", refused_connection())
        for _ in range(10):
            self.clock.advance(8.0)
        self.assertEqual([e.kind for e in self.failures], [ErrorKind.LOST])

    def test_an_unreachable_engine_before_any_data_is_replaced_at_once(self) -> None:
        """A first session refused by a dead engine is asked of the other engine instead of failing the players."""
        self.source.start()
        self.a.refuse(refused_connection())
        self.assertEqual(self.failures, [])
        self.assertEqual(self.b.json_calls, 1)
        self.b.answer()
        self.assertEqual(self.source.engine_id, "b")

    def test_a_dropped_connection_does_not_make_the_engine_unhealthy(self) -> None:
        """A read the engine accepted and dropped (as it does to a superseded session) is not reported as a dead engine."""
        self.go_live_on_a()
        self.a.readers[-1].end("dropped", EngineError(503, "engine unreachable: ResponseNeverReceived",
                                                      kind=ErrorKind.UNREACHABLE))
        self.assertEqual(self.pool.failures, [])
        self.clock.advance(1.0)
        self.assertEqual(len(self.a.readers), 2)  # the ladder re-reads the same engine

    def test_one_engine_alone_gives_up_as_before(self) -> None:
        """A pool of one engine has no failover rung: every rung failing gives up without waiting."""
        self.pool = FakePool(("a", self.a))
        self.source = EngineSource(EngineCore(self.pool, Selector("id", ID), self.settings, self.clock,
                                              on_data=lambda data: None, on_session=lambda granted: True,
                                              on_recovering=lambda: None, on_failed=self.failures.append,
                                              key="id:" + ID))
        self.go_live_on_a()
        self.a.readers[-1].end("refused", refused_connection())
        for delay in (1.0, 2.0):
            self.clock.advance(delay)
            self.a.readers[-1].end("refused", refused_connection())
        self.clock.advance(4.0)
        self.a.refuse(refused_connection())
        self.assertEqual([e.kind for e in self.failures], [ErrorKind.LOST])

    def test_a_live_channel_leaves_an_engine_its_probes_call_unhealthy(self) -> None:
        """When the pool says the engine became unhealthy, a live channel moves to the other engine at once."""
        self.go_live_on_a()
        self.pool.mark_down("a")
        self.clock.advance(0)
        self.assertTrue(self.a.readers[-1].stopped)
        self.assertEqual(self.b.json_calls, 1)
        self.b.answer()
        self.assertEqual(self.source.engine_id, "b")

    def test_the_fakes_provide_the_pool_interfaces(self) -> None:
        """FakePool and its reservations provide IEnginePool and IReservation."""
        from zope.interface.verify import verifyObject

        from acetwist.engines.api import IEnginePool, IReservation

        self.assertTrue(verifyObject(IEnginePool, self.pool))
        self.assertTrue(verifyObject(IReservation, self.successResultOf(self.pool.reserve("k"))))
