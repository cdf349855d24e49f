"""Tests for the simulator's engine state: contents, sessions, idle expiry, faults and counters (on a task.Clock)."""

from typing import Any, List

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from acetwist.sim.config import SimConfig
from acetwist.sim.contents import DEFAULT_CONTENTS, Catalog, Content, parse_contents
from acetwist.sim.engine import COUNTERS, Engine
from acetwist.sim.faults import FaultError

A, B, C = DEFAULT_CONTENTS[:3]


class FakeHold:
    def __init__(self, content: Any = None) -> None:
        self.content = content
        self.session = None
        self.ended: List[str] = []
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True

    def session_ended(self, reason: str) -> None:
        self.ended.append(reason)


def engine(**config: Any) -> Engine:
    return Engine(Clock(), SimConfig.from_values(config))


class ContentTests(SynchronousTestCase):
    def test_default_contents_are_three_distinct_deterministic_channels(self) -> None:
        """DEFAULT_CONTENTS has at least 3 channels with 40-hex ids and infohashes, all distinct and stable."""
        self.assertGreaterEqual(len(DEFAULT_CONTENTS), 3)
        values = [c.content_id for c in DEFAULT_CONTENTS] + [c.infohash for c in DEFAULT_CONTENTS]
        self.assertEqual(len(set(values)), len(values))
        for value in values:
            self.assertRegex(value, r"^[0-9a-f]{40}$")
        self.assertEqual(Content.named("channel-1"), DEFAULT_CONTENTS[0])
        self.assertEqual(DEFAULT_CONTENTS[0].name, "channel-1")

    def test_id_and_infohash_are_separate_namespaces(self) -> None:
        """An infohash looked up as a content id finds nothing, and the other way round."""
        catalog = Catalog(DEFAULT_CONTENTS)
        self.assertIs(catalog.by_content_id(A.content_id), A)
        self.assertIs(catalog.by_infohash(A.infohash), A)
        self.assertIsNone(catalog.by_content_id(A.infohash))
        self.assertIsNone(catalog.by_infohash(A.content_id))

    def test_url_and_magnet_select_contents(self) -> None:
        """A content's transport-file URL and magnet link select it."""
        catalog = Catalog(DEFAULT_CONTENTS)
        self.assertIs(catalog.by_url(B.url), B)
        self.assertIs(catalog.by_magnet(C.magnet), C)
        self.assertIsNone(catalog.by_magnet("magnet:?xt=urn:btih:" + "0" * 40))
        self.assertIsNone(catalog.by_url("http://example.com/nothing.acelive"))

    def test_contents_option_takes_a_count_or_names(self) -> None:
        """'5' gives channel-1..5 (starting with the defaults); 'news,sports' gives those names."""
        five = parse_contents("5")
        self.assertEqual(len(five), 5)
        self.assertEqual(five[:3], list(DEFAULT_CONTENTS))
        self.assertEqual([c.name for c in parse_contents("news, sports")], ["news", "sports"])
        for bad in ["0", "", "a b", "x,x", "5000"]:
            self.assertRaises(ValueError, parse_contents, bad)


class SessionTests(SynchronousTestCase):
    def test_tokens_differ_from_session_id(self) -> None:
        """The URL token is 32 hex, the playback_session_id 40 hex, and they are different values."""
        session = engine().start_session(A)
        self.assertRegex(session.token, r"^[0-9a-f]{32}$")
        self.assertRegex(session.playback_session_id, r"^[0-9a-f]{40}$")
        self.assertNotEqual(session.token, session.playback_session_id[:32])
        self.assertRegex(session.content_key, r"^0\.\d{12}$")

    def test_new_session_supersedes_the_old_one(self) -> None:
        """A second start for the same content ends the first as superseded and tells its requests."""
        e = engine()
        first = e.start_session(A)
        hold = FakeHold(A)
        first.add_hold(hold)
        second = e.start_session(A)
        self.assertEqual(first.ended, "superseded")
        self.assertEqual(hold.ended, ["superseded"])
        self.assertIs(e.sessions[A.infohash], second)
        self.assertIsNone(e.find_session(A.infohash, first.token))
        self.assertEqual(e.ended_reason(first.token), "superseded")
        counters = e.counters.snapshot()
        self.assertEqual((counters["sessions_opened"], counters["sessions_superseded"]), (2, 1))

    def test_contents_have_independent_sessions(self) -> None:
        """Sessions for different contents live side by side."""
        e = engine()
        a, b = e.start_session(A), e.start_session(B)
        self.assertIsNone(a.ended)
        self.assertIsNone(b.ended)
        self.assertEqual(e.counters.snapshot()["sessions_live"], 2)

    def test_prebuffer_then_ready(self) -> None:
        """A session is ready exactly prebuffer seconds after it was created, with burst seconds of media."""
        e = engine(prebuffer=2, burst=1.5)
        session = e.start_session(A)
        e.clock.advance(1.99)
        self.assertFalse(session.is_ready(e.clock.seconds()))
        e.clock.advance(0.01)
        self.assertTrue(session.is_ready(e.clock.seconds()))
        self.assertAlmostEqual(session.media_seconds(e.clock.seconds()), 1.5)
        e.clock.advance(3)
        self.assertAlmostEqual(session.media_seconds(e.clock.seconds()), 4.5)

    def test_idle_session_expires(self) -> None:
        """A session with no request on it expires idle_timeout seconds after its last activity."""
        e = engine(idle_timeout=10)
        session = e.start_session(A)
        e.clock.advance(6)
        session.touch()
        e.clock.advance(9.9)
        self.assertIsNone(session.ended)
        e.clock.advance(0.2)
        self.assertEqual(session.ended, "expired")
        self.assertEqual(e.counters.snapshot()["sessions_expired"], 1)
        self.assertEqual(e.ended_reason(session.token), "expired")

    def test_a_reader_keeps_the_session_alive(self) -> None:
        """While a request holds the session it never expires; the idle clock starts when it leaves."""
        e = engine(idle_timeout=5)
        session = e.start_session(A)
        hold = FakeHold(A)
        session.add_hold(hold)
        e.clock.advance(60)
        self.assertIsNone(session.ended)
        session.remove_hold(hold)
        e.clock.advance(4.9)
        self.assertIsNone(session.ended)
        e.clock.advance(0.2)
        self.assertEqual(session.ended, "expired")

    def test_player_activity_timeout_changes_expiry(self) -> None:
        """set_idle_timeout (command set_player_activity_timeout) shortens or lengthens the idle limit."""
        e = engine(idle_timeout=60)
        session = e.start_session(A)
        session.set_idle_timeout(2)
        e.clock.advance(2.1)
        self.assertEqual(session.ended, "expired")

    def test_stop_ends_once(self) -> None:
        """stop ends the session as stopped and leaves a tombstone; the engine forgets it."""
        e = engine()
        session = e.start_session(A)
        e.stop(session)
        self.assertEqual(session.ended, "stopped")
        self.assertNotIn(A.infohash, e.sessions)
        self.assertEqual(e.ended_reason(session.content_key), "stopped")

    def test_restart_forgets_everything(self) -> None:
        """restart ends every session as forgotten, keeps no tombstones, and counts it."""
        e = engine()
        a, b = e.start_session(A), e.start_session(B)
        e.stop(e.start_session(C))
        hold = FakeHold(A)
        a.add_hold(hold)
        e.restart()
        self.assertEqual((a.ended, b.ended), ("forgotten", "forgotten"))
        self.assertEqual(hold.ended, ["forgotten"])
        self.assertEqual(e.sessions, {})
        self.assertIsNone(e.ended_reason(a.token))
        counters = e.counters.snapshot()
        self.assertEqual((counters["restarts"], counters["sessions_forgotten"]), (1, 2))

    def test_restart_with_down_time(self) -> None:
        """restart(down_ms) leaves the engine down (refusing) for that long."""
        e = engine()
        e.restart(down_ms=500)
        self.assertEqual(e.down_mode(None), "refuse")
        e.clock.advance(0.5)
        self.assertIsNone(e.down_mode(None))

    def test_shutdown_cancels_every_timer(self) -> None:
        """After shutdown nothing is left on the clock and every hold was cut."""
        e = engine()
        e.start_session(A).start_gap(5)
        e.set_fault("down", mode="503", ms=5000)
        hold = FakeHold()
        e.holds.add(hold)
        e.shutdown()
        self.assertEqual(e.clock.getDelayedCalls(), [])
        self.assertTrue(hold.aborted)


class StarvationTests(SynchronousTestCase):
    def test_gap_freezes_the_media_clock(self) -> None:
        """During a gap the session's media position and livepos stand still; afterwards they advance again."""
        e = engine(prebuffer=0, burst=1)
        session = e.start_session(A)
        e.clock.advance(2)
        self.assertAlmostEqual(session.media_seconds(e.clock.seconds()), 3)
        session.start_gap(4)
        last = session.livepos(e.clock.seconds())["last_ts"]
        e.clock.advance(3.9)
        self.assertAlmostEqual(session.media_seconds(e.clock.seconds()), 3)
        self.assertEqual(session.livepos(e.clock.seconds())["last_ts"], last)
        self.assertEqual(session.stat(e.clock.seconds())["status"], "buf")
        e.clock.advance(1.1)
        self.assertAlmostEqual(session.media_seconds(e.clock.seconds()), 4)
        self.assertEqual(session.stat(e.clock.seconds())["status"], "dl")

    def test_no_peers_blocks_readiness_until_cleared(self) -> None:
        """With no_peers the session stays in prebuf with 0 peers and progress 0; clearing it makes it ready."""
        e = engine(prebuffer=1)
        e.set_fault("no_peers", content=A)
        session = e.start_session(A)
        e.clock.advance(30)
        stat = session.stat(e.clock.seconds())
        self.assertEqual((stat["status"], stat["peers"], stat["progress"]), ("prebuf", 0, 0))
        e.clear_faults("no_peers")
        self.assertTrue(session.is_ready(e.clock.seconds()))
        self.assertAlmostEqual(session.media_seconds(e.clock.seconds()), e.config.burst)

    def test_prebuf_progress_and_peers_rise(self) -> None:
        """Before it is ready, stat shows prebuf with rising progress and peers, then dl."""
        e = engine(prebuffer=4)
        session = e.start_session(A)
        seen = []
        for _ in range(4):
            stat = session.stat(e.clock.seconds())
            seen.append((stat["status"], stat["progress"], stat["peers"]))
            e.clock.advance(1)
        self.assertEqual([s[0] for s in seen], ["prebuf"] * 4)
        self.assertEqual(sorted(seen, key=lambda s: s[1]), seen)
        self.assertLess(seen[0][1], seen[-1][1])
        self.assertLess(seen[0][2], seen[-1][2])
        self.assertEqual(session.stat(e.clock.seconds())["status"], "dl")


class FaultTests(SynchronousTestCase):
    def test_content_fault_beats_engine_wide(self) -> None:
        """A content's own fault applies before the engine-wide one; other contents get the engine-wide one."""
        e = engine()
        wide = e.set_fault("http_error", status=500)
        own = e.set_fault("http_error", content=A.content_id, status=403)
        self.assertIs(e.fault("http_error", A), own)
        self.assertIs(e.fault("http_error", B), wide)

    def test_content_reference_by_name_id_or_infohash(self) -> None:
        """A fault's content may be named by name, content id or infohash; an unknown one is a FaultError."""
        e = engine()
        for ref in [A.name, A.content_id, A.infohash, A]:
            self.assertEqual(e.set_fault("silence", content=ref).content, A)
        self.assertRaises(FaultError, e.set_fault, "silence", content="nope")

    def test_same_fault_same_scope_replaces(self) -> None:
        """Setting a fault again in the same scope replaces it."""
        e = engine()
        e.set_fault("slow_json", content=A, ms=100)
        e.set_fault("slow_json", content=A, ms=200)
        self.assertEqual([f.params["ms"] for f in e.faults], [200])

    def test_times_removes_the_fault_when_used_up(self) -> None:
        """A fault with times=2 is gone after its second trigger."""
        e = engine()
        fault = e.set_fault("failed_content", times=2)
        e.trigger(fault)
        self.assertIn(fault, e.faults)
        e.trigger(fault)
        self.assertNotIn(fault, e.faults)
        self.assertEqual(e.counters.snapshot()["faults_triggered"], {"failed_content": 2})

    def test_down_with_ms_clears_itself(self) -> None:
        """down with ms is cleared by itself after that many milliseconds."""
        e = engine()
        e.set_fault("down", mode="503", ms=1500)
        e.clock.advance(1.4)
        self.assertEqual(e.down_mode(None), "503")
        e.clock.advance(0.1)
        self.assertIsNone(e.down_mode(None))

    def test_down_cuts_requests_in_scope(self) -> None:
        """Setting down aborts the requests of its scope and leaves the others."""
        e = engine()
        on_a, on_b = FakeHold(A), FakeHold(B)
        e.holds.update([on_a, on_b])
        e.set_fault("down", content=A, mode="503")
        self.assertEqual((on_a.aborted, on_b.aborted), (True, False))
        e.set_fault("down", mode="reset")
        self.assertTrue(on_b.aborted)

    def test_clear_by_name_and_scope(self) -> None:
        """clear_faults removes by name and scope ('*' any scope, None engine-wide only)."""
        e = engine()
        e.set_fault("silence")
        e.set_fault("silence", content=A)
        e.set_fault("stall", content=B)
        self.assertEqual(e.clear_faults("silence", None), 1)
        self.assertEqual(e.clear_faults("silence"), 1)
        self.assertEqual(e.clear_faults(), 1)
        self.assertEqual(e.faults, [])

    def test_bad_faults_are_refused_with_a_message(self) -> None:
        """Unknown names, unknown or bad parameters and refuse-per-content are FaultErrors that say why."""
        e = engine()
        cases = [
            (("nope",), {}, "unknown fault"),
            (("cut",), {}, "after_bytes or after_ms"),
            (("cut",), {"after_bytes": "lots"}, "not an integer"),
            (("gap",), {}, "needs parameter ms"),
            (("http_error",), {"status": 200}, "outside"),
            (("down",), {"mode": "sideways"}, "not one of"),
            (("down",), {"content": A, "mode": "refuse"}, "engine-wide only"),
            (("stall",), {"times": 1}, "takes no 'times'"),
            (("silence",), {"colour": "red"}, "takes no parameter colour"),
            (("misaligned",), {"mode": "mid_packet", "bytes": 200}, "1..187"),
        ]
        for args, params, message in cases:
            error = self.assertRaises(FaultError, e.set_fault, *args, **params)
            self.assertIn(message, str(error))
        self.assertEqual(e.faults, [])

    def test_periodic_restart(self) -> None:
        """restart every_ms forgets every session at that period, optionally down afterwards, until cleared."""
        e = engine()
        e.set_fault("restart", every_ms=1000, down_ms=200, down_mode="503")
        first = e.start_session(A)
        e.clock.advance(1)
        self.assertEqual(first.ended, "forgotten")
        self.assertEqual(e.down_mode(None), "503")
        e.clock.advance(0.2)
        self.assertIsNone(e.down_mode(None))
        second = e.start_session(A)
        e.clock.advance(0.8)
        self.assertEqual(second.ended, "forgotten")
        self.assertEqual(e.counters.snapshot()["restarts"], 2)
        e.clear_faults("restart")
        third = e.start_session(A)
        e.clock.advance(5)
        self.assertIsNone(third.ended)

    def test_restart_of_one_content(self) -> None:
        """A content's restart fault forgets only that content's session; times=1 makes it happen once."""
        e = engine()
        e.set_fault("restart", content=A, every_ms=500, times=1)
        a, b = e.start_session(A), e.start_session(B)
        e.clock.advance(0.5)
        self.assertEqual((a.ended, b.ended), ("forgotten", None))
        again = e.start_session(A)
        e.clock.advance(2)
        self.assertIsNone(again.ended)
        self.assertEqual(e.faults, [])
        self.assertRaises(FaultError, e.set_fault, "restart", content=A, every_ms=500, down_ms=100)

    def test_faults_from_config_are_in_force_at_start(self) -> None:
        """Faults given in the configuration are set when the engine starts."""
        e = engine(faults=["slow_json:ms=300@channel-2", {"name": "down", "mode": "503"}])
        self.assertEqual(e.fault("slow_json", B).params["ms"], 300)
        self.assertIsNone(e.fault("slow_json", A))
        self.assertEqual(e.down_mode(A), "503")


class CounterTests(SynchronousTestCase):
    def test_snapshot_has_every_documented_name(self) -> None:
        """The snapshot holds every counter name plus the gauges, and is a copy."""
        e = engine()
        snapshot = e.counters.snapshot()
        self.assertEqual(set(snapshot), set(COUNTERS) | {"sessions_live", "live_readers"})
        snapshot["json_calls"]["x"] = 1
        self.assertEqual(e.counters.snapshot()["json_calls"], {})
