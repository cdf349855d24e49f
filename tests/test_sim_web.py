"""Tests for the simulator's HTTP API, in memory on a task.Clock: replies, session rules, timing and HLS."""

import json
from typing import Any, Dict, Tuple

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from acetwist import ts
from acetwist.sim.config import SimConfig
from acetwist.sim.contents import DEFAULT_CONTENTS
from acetwist.sim.service import Simulator
from acetwist.sim.testing import MemoryClient, MemoryResponse

A, B, C = DEFAULT_CONTENTS[:3]
HOST = "127.0.0.1:6878"
BASE = f"http://{HOST}"


class WebTestCase(SynchronousTestCase):
    config: Dict[str, Any] = dict(prebuffer=1, burst=1, bitrate=1_000_000, gop=1, idle_timeout=60)

    def setUp(self) -> None:
        self.clock = Clock()
        self.sim = Simulator(SimConfig.from_values(self.config), self.clock)
        self.engine = self.sim.engine
        self.addCleanup(self.engine.shutdown)

    def counters(self) -> Dict[str, Any]:
        return self.engine.counters.snapshot()

    def get(self, path: str, host: str = HOST) -> MemoryClient:
        if path.startswith("http://"):
            path = "/" + path.split("/", 3)[3]
        client = MemoryClient(self.sim.site, self.clock, host=host).get(path)
        self.clock.advance(0)
        return client

    def json_of(self, path: str) -> Any:
        response = self.get(path).response()
        self.assertEqual(response.status, 200, response.raw[:300])
        return json.loads(response.body)

    def start(self, content: Any = A, path: str = "/ace/getstream", **params: str) -> Dict[str, Any]:
        query = "&".join([f"id={content.content_id}", "format=json"] + [f"{k}={v}" for k, v in params.items()])
        document = self.json_of(f"{path}?{query}")
        self.assertIsNone(document["error"])
        return document["response"]

    def play(self, reply: Dict[str, Any]) -> Tuple[MemoryClient, MemoryResponse]:
        """Follow playback_url to /content once the session is ready; return the body connection."""
        redirect = self.get(reply["playback_url"])
        for _ in range(500):
            if redirect.response().status is not None:
                break
            self.clock.advance(0.01)
        response = redirect.response()
        self.assertEqual(response.status, 302, response.raw[:200])
        body = self.get(response.headers["location"])
        return body, body.response()


class HealthTests(WebTestCase):
    def test_get_version(self) -> None:
        """get_version answers result {code, platform, version} with error null."""
        document = self.json_of("/webui/api/service?method=get_version")
        self.assertIsNone(document["error"])
        self.assertEqual(document["result"]["platform"], "linux")
        self.assertIsInstance(document["result"]["code"], int)
        self.assertRegex(document["result"]["version"], r"^\d+\.\d+\.\d+$")

    def test_get_version_jsonp(self) -> None:
        """format=jsonp&callback=cb wraps the same document as cb({...});."""
        body = self.get("/webui/api/service?method=get_version&format=jsonp&callback=cb").response().body
        self.assertTrue(body.startswith(b"cb({") and body.endswith(b"});"), body)
        self.assertEqual(json.loads(body[3:-2])["result"]["version"], "3.2.3")

    def test_unknown_webui_method(self) -> None:
        """An unknown method answers result null, error 'unknown method'."""
        self.assertEqual(self.json_of("/webui/api/service?method=nope"), {"result": None, "error": "unknown method"})

    def test_server_api(self) -> None:
        """get_status and get_network_connection_status answer in the api_version=3 envelope."""
        status = self.json_of("/server/api?api_version=3&method=get_status")
        self.assertTrue(status["result"]["playlist_loaded"])
        self.assertEqual(status["result"]["version"]["platform"], "linux")
        self.assertEqual(self.json_of("/server/api?api_version=3&method=get_network_connection_status"),
                         {"result": {"connected": True}})
        self.assertEqual(self.json_of("/server/api?api_version=3&method=nope")["error"]["message"], "unknown method")

    def test_unknown_path_and_method(self) -> None:
        """An unknown path is a 404; a POST to an engine route is a 405."""
        self.assertEqual(self.get("/nothing/here").response().status, 404)
        client = MemoryClient(self.sim.site, self.clock).request("POST", "/ace/getstream?id=x")
        self.assertEqual(client.response().status, 405)


class StartTests(WebTestCase):
    def test_json_reply_shape(self) -> None:
        """format=json answers absolute URLs on the request's host, the content's infohash and a 40-hex session id."""
        reply = self.start(A)
        token = reply["playback_url"].rsplit("/", 1)[1]
        self.assertRegex(token, r"^[0-9a-f]{32}$")
        self.assertEqual(reply["playback_url"], f"{BASE}/ace/r/{A.infohash}/{token}")
        self.assertEqual(reply["stat_url"], f"{BASE}/ace/stat/{A.infohash}/{token}")
        self.assertEqual(reply["command_url"], f"{BASE}/ace/cmd/{A.infohash}/{token}")
        self.assertEqual(reply["infohash"], A.infohash)
        self.assertRegex(reply["playback_session_id"], r"^[0-9a-f]{40}$")
        self.assertNotIn(token, reply["playback_session_id"])
        self.assertEqual((reply["is_live"], reply["is_encrypted"], reply["client_session_id"]), (1, 0, -1))
        self.assertNotIn("event_url", reply)
        self.assertEqual(self.counters()["json_calls"], {A.content_id: 1})

    def test_envelope_text(self) -> None:
        """The reply body starts with {"response": {  and errors with {"response": null, "error": "."""
        body = self.get(f"/ace/getstream?id={A.content_id}&format=json").response().body
        self.assertTrue(body.startswith(b'{"response": {"playback_url": "'), body[:60])
        body = self.get(f"/ace/getstream?id={'0' * 40}&format=json").response().body
        self.assertEqual(body, b'{"response": null, "error": "failed to load content"}')

    def test_urls_follow_the_host_header(self) -> None:
        """Absolute URLs are built from the Host header the client sent."""
        response = self.get(f"/ace/getstream?id={A.content_id}&format=json", host="engine.example:7000").response()
        reply = json.loads(response.body)["response"]
        for key in ("playback_url", "stat_url", "command_url"):
            self.assertTrue(reply[key].startswith("http://engine.example:7000/ace/"), reply[key])

    def test_client_session_id_and_event_url(self) -> None:
        """client_session_id is echoed; use_api_events=1 adds event_url as the first field."""
        reply = self.start(A, client_session_id="77", use_api_events="1")
        self.assertEqual(reply["client_session_id"], 77)
        self.assertEqual(list(reply)[0], "event_url")
        self.assertIn("/ace/event/", reply["event_url"])

    def test_selector_precedence(self) -> None:
        """content_id beats id, id beats infohash, infohash beats url, url beats magnet."""
        cases = [
            (f"content_id={A.content_id}&id={B.content_id}", A),
            (f"id={A.content_id}&infohash={B.infohash}", A),
            (f"infohash={B.infohash}&url={C.url}", B),
            (f"url={C.url}&magnet={A.magnet.replace('&', '%26')}", C),
            (f"magnet={A.magnet.replace('&', '%26')}", A),
        ]
        for query, expected in cases:
            reply = self.json_of(f"/ace/getstream?{query}&format=json")["response"]
            self.assertEqual(reply["infohash"], expected.infohash, query)

    def test_first_selector_wins_even_when_unknown(self) -> None:
        """An unknown id fails even if a valid infohash is also given."""
        document = self.json_of(f"/ace/getstream?id={'a' * 40}&infohash={A.infohash}&format=json")
        self.assertEqual(document, {"response": None, "error": "failed to load content"})

    def test_id_given_an_infohash_fails(self) -> None:
        """id=<an infohash> is 'failed to load content' (JSON) or a text 500 (redirect mode)."""
        document = self.json_of(f"/ace/getstream?id={A.infohash}&format=json")
        self.assertEqual(document, {"response": None, "error": "failed to load content"})
        response = self.get(f"/ace/getstream?id={A.infohash}").response()
        self.assertEqual(response.status, 500)
        self.assertIn(b"failed to load content", response.body)
        counters = self.counters()
        self.assertEqual((counters["unknown_content_calls"], counters["start_errors"]), (2, 2))
        self.assertEqual(counters["sessions_opened"], 0)

    def test_missing_selector(self) -> None:
        """A start call naming no content is 'missing content id' (JSON) or a text 400."""
        self.assertEqual(self.json_of("/ace/getstream?format=json")["error"], "missing content id")
        self.assertEqual(self.get("/ace/getstream").response().status, 400)

    def test_redirect_mode(self) -> None:
        """Without format=json the start call opens a session and 302s to its playback_url."""
        response = self.get(f"/ace/getstream?id={A.content_id}").response()
        self.assertEqual(response.status, 302)
        session = self.engine.sessions[A.infohash]
        self.assertEqual(response.headers["location"], f"{BASE}/ace/r/{A.infohash}/{session.token}")
        self.assertEqual(self.counters()["redirect_calls"], {A.content_id: 1})

    def test_manifest_routes(self) -> None:
        """/ace/manifest.m3u8 and /hls/manifest.m3u8 answer an /ace/m/<ih>/<token>.m3u8 playback_url."""
        for path in ("/ace/manifest.m3u8", "/hls/manifest.m3u8"):
            reply = self.start(B, path=path)
            self.assertRegex(reply["playback_url"], rf"^{BASE}/ace/m/{B.infohash}/[0-9a-f]{{32}}\.m3u8$")

    def test_session_exists_while_the_reply_is_slow(self) -> None:
        """With slow_json the session exists (and counts) from the moment the call arrives."""
        self.engine.set_fault("slow_json", content=A, ms=1000)
        client = self.get(f"/ace/getstream?id={A.content_id}&format=json")
        self.clock.advance(0.5)
        self.assertEqual(client.raw(), b"")
        self.assertIn(A.infohash, self.engine.sessions)
        self.assertEqual(self.counters()["sessions_opened"], 1)
        self.clock.advance(0.5)
        reply = json.loads(client.response().body)["response"]
        self.assertEqual(reply["playback_session_id"], self.engine.sessions[A.infohash].playback_session_id)


class PlaybackTests(WebTestCase):
    def test_no_headers_until_prebuffer_from_session_creation(self) -> None:
        """The playback URL sends nothing until prebuffer seconds after the JSON call, then 302 to /content/<ih>/0.N."""
        reply = self.start(A)
        self.clock.advance(0.5)
        redirect = self.get(reply["playback_url"])
        self.clock.advance(0.49)
        self.assertEqual(redirect.raw(), b"")
        self.clock.advance(0.02)
        response = redirect.response()
        self.assertEqual(response.status, 302)
        self.assertRegex(response.headers["location"], rf"^{BASE}/content/{A.infohash}/0\.\d{{12}}$")

    def test_body_is_valid_ts_with_burst_then_pacing(self) -> None:
        """The /content body is video/mp2t, aligned TS: a burst at once, then about the bitrate per second."""
        body, response = self.play(self.start(A))
        self.assertEqual(response.status, 200)
        self.assertEqual(response.headers["content-type"], "video/mp2t")
        burst = len(response.body)
        rate = self.engine.template.byte_rate
        self.assertAlmostEqual(burst / rate, 1.0, delta=0.05)
        for _ in range(50):
            self.clock.advance(0.04)
        grown = len(body.response().body) - burst
        self.assertAlmostEqual(grown / rate, 2.0, delta=0.1)
        checker = ts.TSChecker()
        checker.feed(body.response().body)
        self.assertTrue(checker.aligned_at_start)
        self.assertEqual(checker.cc_errors, 0)
        self.assertTrue(checker.first_video_random_access)
        self.assertEqual(self.counters()["live_readers"], 1)

    def test_second_reader_gets_a_corrupt_reply_and_the_first_continues(self) -> None:
        """A second concurrent reader gets two raw status lines and a close; the first keeps streaming."""
        reply = self.start(A)
        first, _ = self.play(reply)
        location = f"/content/{A.infohash}/{self.engine.sessions[A.infohash].content_key}"
        second = self.get(location)
        self.assertEqual(second.raw(), b"HTTP/1.1 200 OK\r\nHTTP/1.1 200 OK\r\n")
        self.assertTrue(second.transport.closed)
        before = len(first.response().body)
        self.clock.advance(0.5)
        self.assertGreater(len(first.response().body), before)
        self.assertFalse(first.transport.closed)
        self.assertEqual(self.counters()["concurrent_reader_rejections"], 1)

    def test_reader_may_reconnect_after_closing(self) -> None:
        """After the reader hangs up, the same playback URL can be read again."""
        reply = self.start(A)
        first, _ = self.play(reply)
        first.hang_up()
        self.clock.advance(0)
        again, response = self.play(reply)
        self.assertEqual(response.status, 200)
        self.assertEqual(self.counters()["concurrent_reader_rejections"], 0)

    def test_new_json_call_supersedes(self) -> None:
        """A new JSON call for the content resets the old reader; old stat, stop and playback answer as unknown."""
        old = self.start(A)
        reader, _ = self.play(old)
        new = self.start(A)
        self.clock.advance(0)
        self.assertTrue(reader.transport.aborted)
        self.assertEqual(self.json_of(old["stat_url"]), {"response": None, "error": "unknown playback session id"})
        self.assertEqual(self.json_of(old["command_url"] + "?method=stop")["error"], "unknown playback session id")
        self.assertEqual(self.get(old["playback_url"]).response().status, 403)
        self.assertIsNone(self.json_of(new["stat_url"])["error"])
        counters = self.counters()
        self.assertEqual((counters["sessions_opened"], counters["sessions_superseded"]), (2, 1))
        self.assertEqual((counters["stop_calls"], counters["stops_unknown"]), (1, 1))

    def test_stop_once_then_unknown(self) -> None:
        """stop answers ok once and ends the reader cleanly; a second stop, stat and playback see an unknown session."""
        reply = self.start(A)
        reader, _ = self.play(reply)
        self.assertEqual(self.json_of(reply["command_url"] + "?method=stop"), {"response": "ok", "error": None})
        self.clock.advance(0)
        self.assertTrue(reader.response().complete)
        self.assertFalse(reader.transport.aborted)
        self.assertEqual(self.json_of(reply["command_url"] + "?method=stop"),
                         {"response": None, "error": "unknown playback session id"})
        self.assertEqual(self.json_of(reply["stat_url"])["error"], "unknown playback session id")
        self.assertEqual(self.get(reply["playback_url"]).response().status, 500)
        counters = self.counters()
        self.assertEqual((counters["stop_calls"], counters["stops_unknown"], counters["sessions_stopped"]), (2, 1, 1))

    def test_unknown_playback_url_is_404(self) -> None:
        """A playback URL that never existed answers 404."""
        self.assertEqual(self.get(f"/ace/r/{A.infohash}/{'0' * 32}").response().status, 404)

    def test_head_has_no_side_effects(self) -> None:
        """HEAD on a playback URL answers headers only and opens nothing."""
        client = MemoryClient(self.sim.site, self.clock).request("HEAD", f"/ace/r/{A.infohash}/{'0' * 32}")
        self.assertEqual(client.response().status, 200)
        self.assertEqual(self.counters()["playback_gets"], 0)


class IdleTests(WebTestCase):
    config = dict(WebTestCase.config, idle_timeout=5)

    def poll_for(self, url: str, seconds: int) -> None:
        for _ in range(seconds // 2):
            self.clock.advance(2)
            self.get(url)

    def test_stat_polls_keep_a_session_alive(self) -> None:
        """Polling stat counts as activity: the session outlives idle_timeout while polled, then expires."""
        reply = self.start(A)
        self.poll_for(reply["stat_url"], 20)
        self.assertIn(A.infohash, self.engine.sessions)
        self.clock.advance(5.1)
        self.assertNotIn(A.infohash, self.engine.sessions)
        self.assertEqual(self.counters()["sessions_expired"], 1)
        self.assertEqual(self.json_of(reply["stat_url"])["error"], "unknown playback session id")

    def test_skip_player_activity(self) -> None:
        """A stat poll with skip_player_activity=1 does not keep the session alive."""
        reply = self.start(A)
        self.poll_for(reply["stat_url"] + "?skip_player_activity=1", 6)
        self.assertNotIn(A.infohash, self.engine.sessions)

    def test_reader_keeps_alive_and_its_departure_starts_the_clock(self) -> None:
        """A connected reader keeps the session alive; idle_timeout after it leaves the session expires."""
        reply = self.start(A)
        reader, _ = self.play(reply)
        self.clock.advance(30)
        self.assertIn(A.infohash, self.engine.sessions)
        reader.hang_up()
        self.clock.advance(0)
        self.clock.advance(4.9)
        self.assertIn(A.infohash, self.engine.sessions)
        self.clock.advance(0.2)
        self.assertNotIn(A.infohash, self.engine.sessions)

    def test_set_player_activity_timeout(self) -> None:
        """command set_player_activity_timeout changes the session's idle limit."""
        reply = self.start(A)
        self.assertEqual(self.json_of(reply["command_url"] + "?method=set_player_activity_timeout&timeout=30"),
                         {"response": "ok", "error": None})
        self.clock.advance(20)
        self.assertIn(A.infohash, self.engine.sessions)
        self.clock.advance(10.1)
        self.assertNotIn(A.infohash, self.engine.sessions)


class StatNoKeepAliveTests(WebTestCase):
    config = dict(WebTestCase.config, idle_timeout=5, stat_keeps_alive=False)

    def test_stat_does_not_count_when_configured(self) -> None:
        """With stat_keeps_alive off, a polled session with no reader still expires."""
        reply = self.start(A)
        for _ in range(3):
            self.clock.advance(2)
            self.get(reply["stat_url"])
        self.assertNotIn(A.infohash, self.engine.sessions)


class StatAndCommandTests(WebTestCase):
    def test_stat_goes_prebuf_then_dl_with_advancing_livepos(self) -> None:
        """stat reports prebuf until ready, then dl; livepos values are strings that advance each second."""
        reply = self.start(A)
        stat = self.json_of(reply["stat_url"])["response"]
        self.assertEqual(stat["status"], "prebuf")
        self.assertEqual(stat["playback_session_id"], reply["playback_session_id"])
        self.clock.advance(1.0)
        first = self.json_of(reply["stat_url"])["response"]
        self.assertEqual(first["status"], "dl")
        self.assertGreater(first["peers"], 0)
        self.assertTrue(all(isinstance(v, str) for v in first["livepos"].values()))
        self.clock.advance(1.0)
        second = self.json_of(reply["stat_url"])["response"]
        self.assertEqual(int(second["livepos"]["last_ts"]), int(first["livepos"]["last_ts"]) + 1)
        self.assertGreater(second["downloaded"], first["downloaded"])
        for key in ("speed_down", "speed_up", "uploaded", "total_progress", "is_live", "infohash",
                    "client_session_id", "disk_cache_stats", "progress"):
            self.assertIn(key, second)

    def test_command_methods(self) -> None:
        """liveseek, set_stream and set_player_activity_timeout answer ok; bad arguments and other methods do not."""
        reply = self.start(A)
        self.clock.advance(2)
        cmd = reply["command_url"]
        last = int(self.json_of(reply["stat_url"])["response"]["livepos"]["last_ts"])
        ok = {"response": "ok", "error": None}
        self.assertEqual(self.json_of(f"{cmd}?method=liveseek&pos={last - 10}"), ok)
        self.assertEqual(self.json_of(f"{cmd}?method=liveseek&pos={last + 1000}")["error"], "position out of range")
        self.assertEqual(self.json_of(f"{cmd}?method=set_stream&stream_index=1"), ok)
        self.assertEqual(self.json_of(reply["stat_url"])["response"]["selected_stream_index"], 1)
        self.assertEqual(self.json_of(f"{cmd}?method=set_player_activity_timeout&timeout=x")["response"], None)
        self.assertEqual(self.json_of(f"{cmd}?method=dance"), {"response": None, "error": "unknown method"})
        self.assertEqual(self.json_of(cmd)["error"], "unknown method")
        self.assertEqual(self.counters()["command_calls"], 6)

    def test_event_long_poll(self) -> None:
        """event_url holds the request, answers a livepos event, and 'unknown playback session id' after stop."""
        reply = self.start(A, use_api_events="1")
        poll = self.get(reply["event_url"])
        self.clock.advance(4.9)
        self.assertEqual(poll.raw(), b"")
        self.clock.advance(0.2)
        self.assertEqual(json.loads(poll.response().body)["response"]["event"], "livepos")
        poll = self.get(reply["event_url"])
        self.get(reply["command_url"] + "?method=stop")
        self.clock.advance(0.1)
        self.assertEqual(json.loads(poll.response().body)["error"], "unknown playback session id")


class HLSTests(WebTestCase):
    def test_playlist_waits_then_lists_identical_valid_segments(self) -> None:
        """The playlist holds until ready, then lists absolute /ace/c/ segments, byte-identical for every reader."""
        reply = self.start(A, path="/ace/manifest.m3u8")
        playlist = self.get(reply["playback_url"])
        self.clock.advance(0.5)
        self.assertEqual(playlist.raw(), b"")
        self.clock.advance(5)
        response = playlist.response()
        self.assertEqual(response.status, 200)
        text = response.body.decode()
        self.assertTrue(text.startswith("#EXTM3U\n#EXT-X-VERSION:3\n"))
        self.assertIn("#EXT-X-MEDIA-SEQUENCE:0", text)
        segments = [line for line in text.splitlines() if line.startswith("http")]
        self.assertGreaterEqual(len(segments), 1)
        self.assertTrue(segments[0].startswith(f"{BASE}/ace/c/{A.infohash}/0.ts"))
        one, two = self.get(segments[0]).response(), self.get(segments[0]).response()
        self.assertEqual(one.status, 200)
        self.assertEqual(one.body, two.body)
        checker = ts.TSChecker()
        checker.feed(one.body)
        self.assertTrue(checker.aligned_at_start)
        self.assertEqual(checker.cc_errors, 0)
        self.assertTrue(checker.first_video_random_access)
        self.assertEqual(self.get(f"/ace/c/{A.infohash}/999.ts").response().status, 404)

    def test_playlist_after_stop_and_supersede(self) -> None:
        """After stop the old playlist answers 500; after a new session supersedes it, 403."""
        reply = self.start(A, path="/ace/manifest.m3u8")
        self.get(reply["command_url"] + "?method=stop")
        self.assertEqual(self.get(reply["playback_url"]).response().status, 500)
        old = self.start(B, path="/ace/manifest.m3u8")
        self.start(B, path="/ace/manifest.m3u8")
        self.assertEqual(self.get(old["playback_url"]).response().status, 403)

    def test_media_sequence_grows_and_segments_are_contiguous(self) -> None:
        """Across refreshes media sequence grows, and consecutive segments join into one clean TS of the test card."""
        reply = self.start(A, path="/ace/manifest.m3u8")
        self.clock.advance(1)
        sequences, bodies = [], {}
        for _ in range(8):
            self.clock.advance(2)
            text = self.get(reply["playback_url"]).response().body.decode()
            sequences.append(int(text.split("#EXT-X-MEDIA-SEQUENCE:")[1].split()[0]))
            for line in text.splitlines():
                if line.startswith("http") and line not in bodies:
                    bodies[line] = self.get(line).response().body
        self.assertEqual(sequences, sorted(sequences))
        self.assertGreater(sequences[-1], sequences[0])
        numbers = sorted(int(url.rsplit("/", 1)[1][:-3]) for url in bodies)
        self.assertEqual(numbers, list(range(numbers[0], numbers[0] + len(numbers))))
        self.assertGreaterEqual(len(numbers), 8)
        checker = ts.TSChecker()
        for n in numbers:
            checker.feed(bodies[f"{BASE}/ace/c/{A.infohash}/{n}.ts"])
        self.assertTrue(checker.aligned_at_start)
        self.assertTrue(checker.psi_before_first_video)
        self.assertTrue(checker.first_video_random_access)
        self.assertEqual((checker.cc_errors, checker.resyncs), (0, 0))
        self.assertEqual(checker.video_pid, 0x100)
        # one random-access point per GOP (1 s), two GOPs per segment
        self.assertEqual(len(checker.random_access_points), 2 * len(numbers))


class EncryptedTests(WebTestCase):
    config = dict(WebTestCase.config, encrypted="channel-1")

    def test_getstream_says_encrypted_and_its_ts_url_refuses(self) -> None:
        """getstream for an encrypted content opens a session that says is_encrypted 1; its TS URL answers 500."""
        reply = self.start(A)
        self.assertEqual(reply["is_encrypted"], 1)
        self.assertEqual(self.counters()["sessions_live"], 1)
        self.clock.advance(2)
        response = self.get(reply["playback_url"]).response()
        self.assertEqual(response.status, 500)
        self.assertIn(b"encrypted", response.body)
        self.assertEqual(self.counters()["encrypted_refusals"], 1)
        self.assertEqual(self.json_of(reply["stat_url"])["response"]["is_encrypted"], 1)
        self.assertEqual(self.start(B)["is_encrypted"], 0)

    def test_redirect_mode_leads_to_the_refusal_too(self) -> None:
        """Without format=json, getstream redirects to the TS URL, which refuses the encrypted content."""
        redirect = self.get(f"/ace/getstream?id={A.content_id}").response()
        self.assertEqual(redirect.status, 302)
        self.assertEqual(self.get(redirect.headers["location"]).response().status, 500)

    def test_manifest_supersedes_and_serves_hls(self) -> None:
        """The manifest call supersedes the getstream session and its playlist and segments work."""
        old = self.start(A)
        reply = self.start(A, path="/ace/manifest.m3u8")
        self.assertEqual(reply["is_encrypted"], 1)
        self.assertTrue(reply["playback_url"].endswith(".m3u8"))
        self.assertEqual(self.counters()["sessions_superseded"], 1)
        self.assertEqual(self.json_of(old["command_url"] + "?method=stop")["error"], "unknown playback session id")
        self.clock.advance(2)
        text = self.get(reply["playback_url"]).response().body.decode()
        segment = [line for line in text.splitlines() if line.startswith("http")][0]
        response = self.get(segment).response()
        self.assertEqual(response.status, 200)
        checker = ts.TSChecker()
        checker.feed(response.body)
        self.assertTrue(checker.first_video_random_access)
        self.assertEqual(checker.cc_errors, 0)

    def test_every_content_with_a_star(self) -> None:
        """encrypted=* makes every content encrypted; set_encrypted changes one at run time."""
        engine = Simulator(SimConfig.from_values(dict(self.config, encrypted="*")), self.clock).engine
        self.addCleanup(engine.shutdown)
        self.assertTrue(all(engine.is_encrypted(c) for c in DEFAULT_CONTENTS))
        engine.set_encrypted("channel-2", False)
        self.assertFalse(engine.is_encrypted(B))
        self.assertTrue(engine.is_encrypted(C))


class JsonRefusedTests(WebTestCase):
    def test_getstream_json_refused_opens_no_session(self) -> None:
        """With json_refused, getstream format=json answers a JSON error and opens nothing; manifest still works."""
        self.engine.set_fault("json_refused", content=A.content_id)
        document = self.json_of(f"/ace/getstream?id={A.content_id}&format=json")
        self.assertEqual(document, {"response": None, "error": "unsupported format: json"})
        self.assertEqual(self.counters()["sessions_opened"], 0)
        self.assertEqual(self.get(f"/ace/getstream?id={A.content_id}").response().status, 302)
        self.assertTrue(self.start(A, path="/ace/manifest.m3u8")["playback_url"].endswith(".m3u8"))
        self.assertIsNone(self.json_of(f"/ace/getstream?id={B.content_id}&format=json")["error"])
