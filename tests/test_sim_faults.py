"""Tests for the simulator's failure modes as a client sees them (in memory, on a task.Clock), and for fault specs."""

import json

from twisted.trial.unittest import SynchronousTestCase

from acetwist import ts
from acetwist.sim import faults
from acetwist.sim.faults import FaultError
from tests.test_sim_web import A, B, WebTestCase


class SpecTests(SynchronousTestCase):
    def test_spec_syntax(self) -> None:
        """NAME[:k=v,...][@CONTENT] splits into name, content and raw parameters."""
        self.assertEqual(faults.parse_spec("cut:after_bytes=300000,how=close@channel-1"),
                         ("cut", "channel-1", {"after_bytes": "300000", "how": "close"}))
        self.assertEqual(faults.parse_spec("stall"), ("stall", None, {}))
        self.assertEqual(faults.parse_spec(" down:mode=503 "), ("down", None, {"mode": "503"}))

    def test_bad_specs(self) -> None:
        """Empty specs, a dangling '@' and parameters without '=' are FaultErrors."""
        for bad in ["", "cut@", "cut:after_bytes", "cut:=5"]:
            self.assertRaises(FaultError, faults.parse_spec, bad)

    def test_validate_types_and_fills_defaults(self) -> None:
        """String parameters are typed and defaults filled in."""
        self.assertEqual(faults.validate("gap", {"ms": "250"}), {"ms": 250, "after_ms": 0})
        self.assertEqual(faults.validate("down", {}), {"mode": "refuse"})
        self.assertEqual(faults.validate("http_error", {"status": 403.0}), {"status": 403})
        self.assertRaises(FaultError, faults.validate, "http_error", {"status": True})

    def test_every_kind_describes_itself(self) -> None:
        """Every fault kind has a description and documented parameters."""
        for kind in faults.FAULTS.values():
            described = kind.describe()
            self.assertTrue(described["description"])
            for param in described["params"].values():
                self.assertTrue(param["help"])


class StartFaultTests(WebTestCase):
    def test_failed_content(self) -> None:
        """failed_content answers the JSON error (or a text 500) and opens no session."""
        self.engine.set_fault("failed_content", content=A)
        self.assertEqual(self.json_of(f"/ace/getstream?id={A.content_id}&format=json"),
                         {"response": None, "error": "failed to load content"})
        self.assertEqual(self.get(f"/ace/getstream?id={A.content_id}").response().status, 500)
        self.assertIsNone(self.json_of(f"/ace/getstream?id={B.content_id}&format=json")["error"])
        counters = self.counters()
        self.assertEqual((counters["sessions_opened"], counters["start_errors"]), (1, 2))
        self.assertEqual(counters["json_calls"], {A.content_id: 1, B.content_id: 1})

    def test_failed_content_with_message_and_times(self) -> None:
        """failed_content takes a message, and with times=1 only the next call fails."""
        self.engine.set_fault("failed_content", message="failed to get manifest", times=1)
        self.assertEqual(self.json_of(f"/ace/getstream?id={A.content_id}&format=json")["error"],
                         "failed to get manifest")
        self.assertIsNone(self.json_of(f"/ace/getstream?id={A.content_id}&format=json")["error"])

    def test_garbage_json(self) -> None:
        """garbage_json answers HTTP 200 with a body that is not JSON."""
        self.engine.set_fault("garbage_json")
        response = self.get(f"/ace/getstream?id={A.content_id}&format=json").response()
        self.assertEqual(response.status, 200)
        self.assertRaises(ValueError, json.loads, response.body)


class PlaybackFaultTests(WebTestCase):
    def test_slow_first_byte(self) -> None:
        """slow_first_byte delays the playback reply by its ms after the GET, even once the session is ready."""
        reply = self.start(A)
        self.clock.advance(2)
        self.engine.set_fault("slow_first_byte", ms=700)
        redirect = self.get(reply["playback_url"])
        self.clock.advance(0.69)
        self.assertEqual(redirect.raw(), b"")
        self.clock.advance(0.02)
        self.assertEqual(redirect.response().status, 302)

    def test_no_peers_hangs_without_headers(self) -> None:
        """With no_peers the playback URL sends nothing for as long as it lasts and stat stays prebuf/0 peers."""
        self.engine.set_fault("no_peers", content=A)
        reply = self.start(A)
        redirect = self.get(reply["playback_url"])
        self.clock.advance(60)
        self.assertEqual(redirect.raw(), b"")
        stat = self.json_of(reply["stat_url"])["response"]
        self.assertEqual((stat["status"], stat["peers"], stat["progress"]), ("prebuf", 0, 0))
        self.engine.clear_faults("no_peers")
        self.clock.advance(0.05)
        self.assertEqual(redirect.response().status, 302)

    def test_http_error(self) -> None:
        """http_error makes the playback URL answer that status at once."""
        self.engine.set_fault("http_error", content=A, status=403)
        reply = self.start(A)
        self.assertEqual(self.get(reply["playback_url"]).response().status, 403)
        self.assertEqual(self.counters()["playback_gets"], 1)

    def test_extra_redirect_hops(self) -> None:
        """redirect adds 302 hops between the playback URL and the bytes."""
        self.engine.set_fault("redirect", hops=2)
        reply = self.start(A)
        self.clock.advance(1)
        location = self.get(reply["playback_url"]).response().headers["location"]
        hops = 0
        while True:
            response = self.get(location).response()
            if response.status != 302:
                break
            location = response.headers["location"]
            hops += 1
        self.assertEqual(hops, 2)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body[:1], b"\x47")

    def test_misaligned_body(self) -> None:
        """misaligned makes the body start with junk, which a TS checker skips."""
        self.engine.set_fault("misaligned", content=A, bytes=77)
        _, response = self.play(self.start(A))
        checker = ts.TSChecker()
        checker.feed(response.body)
        self.assertFalse(checker.aligned_at_start)
        self.assertEqual(checker.skipped_bytes, 77)

    def test_cut_resets_the_reader(self) -> None:
        """cut after_bytes resets the reader after that many body bytes."""
        self.engine.set_fault("cut", after_bytes=10_000)
        reader, response = self.play(self.start(A))
        self.clock.advance(0)
        self.assertEqual(len(response.body), 10_000)
        self.assertTrue(reader.transport.aborted)


class EngineFaultTests(WebTestCase):
    def test_stall_hangs_everything_but_webui_and_resumes(self) -> None:
        """A stall holds stat, stop and start calls (counted on arrival) but not /webui; clearing it lets them answer."""
        reply = self.start(A)
        self.engine.set_fault("stall")
        stat = self.get(reply["stat_url"])
        stop = self.get(reply["command_url"] + "?method=stop")
        start = self.get(f"/ace/getstream?id={B.content_id}&format=json")
        self.clock.advance(30)
        for client in (stat, stop, start):
            self.assertEqual(client.raw(), b"")
        self.assertEqual(self.counters()["stop_calls"], 1)
        self.assertEqual(self.json_of("/webui/api/service?method=get_version")["error"], None)
        self.engine.clear_faults("stall")
        self.clock.advance(0.05)
        self.assertEqual(json.loads(stop.response().body), {"response": "ok", "error": None})
        self.assertEqual(stat.response().status, 200)
        self.assertIsNone(json.loads(start.response().body)["error"])

    def test_stall_of_one_content_spares_the_others(self) -> None:
        """A content's stall holds its own requests only."""
        a, b = self.start(A), self.start(B)
        self.engine.set_fault("stall", content=A)
        held = self.get(a["stat_url"])
        self.clock.advance(1)
        self.assertEqual(held.raw(), b"")
        self.assertIsNone(self.json_of(b["stat_url"])["error"])

    def test_down_503_spares_only_the_control_api(self) -> None:
        """down mode=503 answers 503 everywhere (webui included) except under /_sim."""
        self.engine.set_fault("down", mode="503")
        self.assertEqual(self.get("/webui/api/service?method=get_version").response().status, 503)
        self.assertEqual(self.get(f"/ace/getstream?id={A.content_id}&format=json").response().status, 503)
        self.assertEqual(self.get("/_sim/counters").response().status, 200)

    def test_down_reset_drops_connections(self) -> None:
        """down mode=reset resets each engine request."""
        self.engine.set_fault("down", mode="reset")
        self.assertTrue(self.get("/webui/api/service?method=get_version").transport.aborted)

    def test_down_per_content(self) -> None:
        """A content's down (503) affects only that content."""
        self.engine.set_fault("down", content=A, mode="503")
        self.assertEqual(self.get(f"/ace/getstream?id={A.content_id}&format=json").response().status, 503)
        self.assertIsNone(self.json_of(f"/ace/getstream?id={B.content_id}&format=json")["error"])

    def test_down_cuts_open_streams(self) -> None:
        """Setting down resets the playback connections that are open."""
        reader, _ = self.play(self.start(A))
        self.engine.set_fault("down", mode="503")
        self.clock.advance(0)
        self.assertTrue(reader.transport.aborted)

    def test_restart_forgets_sessions_and_cuts_readers(self) -> None:
        """A restart resets readers, and old stat and stop answer 'unknown playback session id'."""
        reply = self.start(A)
        reader, _ = self.play(reply)
        self.engine.restart()
        self.clock.advance(0)
        self.assertTrue(reader.transport.aborted)
        self.assertEqual(self.json_of(reply["stat_url"])["error"], "unknown playback session id")
        self.assertEqual(self.get(reply["playback_url"]).response().status, 404)
        self.assertIsNone(self.json_of(f"/ace/getstream?id={A.content_id}&format=json")["error"])
