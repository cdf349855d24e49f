"""HLS through the proxy's routes, on a task clock with a fake engine: playlists, segments, viewers, errors."""

from __future__ import annotations

import json
import re
from typing import Any, List, Tuple

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from acetwist import ts
from acetwist.config import Settings
from acetwist.errors import ErrorKind
from acetwist.hls.frontend import channel_token, key_of_token
from acetwist.service import ProxyService
from acetwist.sim.tsgen import gop_template
from acetwist.testing import FakePool
from tests.fakes import FakeCoordinator, FakeEngine

ID = "0123456789abcdef0123456789abcdef01234567"
PLAYLIST = f"/ace/manifest.m3u8?id={ID}"


class HlsRouteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_000)
        self.engine = FakeEngine()
        self.settings = Settings.defaults(engine="http://127.0.0.1:9", grace=5.0)
        self.service = ProxyService(self.settings, self.clock, coordinator=FakeCoordinator(),  # type: ignore[arg-type]
                                    pool=FakePool(("http://127.0.0.1:9", self.engine)))
        self.treq = StubTreq(self.service.app.resource())
        self.template = gop_template(2_000_000, 1.0)
        self.packet = 0

    def tearDown(self) -> None:
        self.service.registry.stop_all()
        self.clock.advance(60)

    def get(self, path: str, method: str = "GET", **kw: Any) -> Any:
        """Start a request; its Deferred fires once the route answers."""
        return self.treq.request(method, "http://proxy" + path, **kw)

    def answer(self, pending: Any) -> Tuple[Any, bytes]:
        self.treq.flush()
        response = self.successResultOf(pending)
        return response, self.successResultOf(response.content())

    def stream(self, gops: int) -> None:
        """The engine answers (once) and sends C{gops} GOPs, paced by the clock."""
        if not self.engine.readers:
            self.engine.answer()
        reader = self.engine.readers[-1]
        for _ in range(gops):
            reader.feed(self.template.read(self.packet, self.template.packets))
            self.packet += self.template.packets
            self.clock.advance(1.0)

    def uris(self, playlist: bytes) -> List[str]:
        return re.findall(r"^(/ace/hls/\S+)$", playlist.decode(), re.M)

    def test_the_first_playlist_waits_for_two_segments_then_lists_them(self) -> None:
        """A playlist request made before the channel has two segments is answered once the second is cut."""
        pending = self.get(PLAYLIST)
        self.assertNoResult(pending)
        self.stream(4)
        self.assertNoResult(pending)
        self.stream(1)
        response, body = self.answer(pending)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/vnd.apple.mpegurl"])
        self.assertEqual(response.headers.getRawHeaders("cache-control"), ["no-cache"])
        self.assertEqual(response.headers.getRawHeaders("access-control-allow-origin"), ["*"])
        text = body.decode()
        self.assertTrue(text.startswith("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n"))
        self.assertIn("#EXTINF:2.000,", text)
        self.assertNotIn("#EXT-X-ENDLIST", text)
        self.assertEqual(len(self.uris(body)), 2)

    def test_segments_are_served_whole_and_start_with_pat_pmt_and_a_keyframe(self) -> None:
        """Every listed segment answers video/mp2t with its length; its packets begin PAT, PMT, random access."""
        pending = self.get(PLAYLIST)
        self.stream(7)
        self.answer(pending)
        _, body = self.answer(self.get(PLAYLIST))
        uris = self.uris(body)
        self.assertEqual(len(uris), 3)
        for uri in uris:
            response, data = self.answer(self.get(uri))
            self.assertEqual(response.code, 200)
            self.assertEqual(response.headers.getRawHeaders("content-type"), ["video/mp2t"])
            self.assertEqual(len(data) % ts.PACKET_SIZE, 0)
            packets = list(ts.split_packets(data))
            self.assertEqual([ts.packet_pid(p) for p in packets[:2]], [ts.PAT_PID, 0x1000])
            self.assertTrue(ts.random_access(packets[2]))
        self.assertEqual(self.engine.json_calls, 1)

    def test_a_ts_player_and_an_hls_viewer_share_one_engine_session(self) -> None:
        """getstream and the playlist for the same content make one JSON call, and both get data."""
        player = self.get(f"/ace/getstream?id={ID}")
        viewer = self.get(PLAYLIST)
        self.stream(5)
        response, body = self.answer(viewer)
        self.assertEqual(response.code, 200)
        self.assertEqual(self.engine.json_calls, 1)
        channel = self.service.registry.channels()[0]
        clients = {client["kind"]: client for client in channel.status()["clients"]}
        self.assertEqual(sorted(clients), ["hls", "ts"])
        self.assertGreater(clients["ts"]["bytes_sent"], 0)
        self.assertGreater(clients["hls"]["bytes_sent"], 0)
        self.assertEqual(self.successResultOf(player).code, 200)

    def test_head_answers_headers_without_an_engine_call(self) -> None:
        """HEAD on the playlist answers its headers and starts nothing."""
        response, body = self.answer(self.get(PLAYLIST, "HEAD"))
        self.assertEqual((response.code, body), (200, b""))
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["application/vnd.apple.mpegurl"])
        self.assertEqual(self.engine.json_calls, 0)
        self.assertEqual(self.service.registry.channels(), [])

    def test_the_alias_path_and_bad_selectors(self) -> None:
        """/hls/manifest.m3u8 is the same playlist; a bad id is a JSON 400; POST is a 405."""
        pending = self.get(f"/hls/manifest.m3u8?id={ID}&pid=ignored")
        self.stream(5)
        response, _ = self.answer(pending)
        self.assertEqual(response.code, 200)
        response, body = self.answer(self.get("/ace/manifest.m3u8?id=nothex"))
        self.assertEqual((response.code, json.loads(body)["status"]), (400, 400))
        response, _ = self.answer(self.get(PLAYLIST, "POST"))
        self.assertEqual(response.code, 405)

    def test_an_engine_refusal_is_the_same_json_error_as_getstream(self) -> None:
        """A playlist waiting for a channel the engine refuses gets the 502 and JSON body a TS player gets."""
        pending = self.get(PLAYLIST)
        self.engine.refuse(ErrorKind.REFUSED)
        response, body = self.answer(pending)
        self.assertEqual(response.code, 502)
        self.assertIn("failed to load content", json.loads(body)["error"])

    def test_unknown_tokens_and_segments_out_of_the_window_are_404(self) -> None:
        """A malformed token, a stream this proxy does not serve, and a segment long gone are JSON 404s."""
        pending = self.get(PLAYLIST)
        self.stream(5)
        self.answer(pending)
        for _ in range(27):  # the viewer keeps fetching while the window slides
            self.stream(1)
            _, body = self.answer(self.get(PLAYLIST))
        first = self.uris(body)[0]
        token, sequence = re.match(r"/ace/hls/(\w+)/(\d+)\.ts", first).groups()  # type: ignore[union-attr]
        for path in (f"/ace/hls/zzz/{sequence}.ts", f"/ace/hls/{channel_token('id:' + 'f' * 40)}/{sequence}.ts",
                     f"/ace/hls/{token}/{int(sequence) - 5}.ts", f"/ace/hls/{token}/{int(sequence) + 50}.ts"):
            response, body = self.answer(self.get(path))
            self.assertEqual(response.code, 404, path)
            self.assertEqual(json.loads(body)["status"], 404)

    def test_a_segment_being_cut_is_answered_once_it_is_complete(self) -> None:
        """A request for the next segment waits for it, then gets it."""
        pending = self.get(PLAYLIST)
        self.stream(5)
        _, body = self.answer(pending)
        token, sequence = re.match(r"/ace/hls/(\w+)/(\d+)\.ts",  # type: ignore[union-attr]
                                   self.uris(body)[-1]).groups()
        following = self.get(f"/ace/hls/{token}/{int(sequence) + 1}.ts")
        self.treq.flush()
        self.assertNoResult(following)
        self.stream(2)
        response, data = self.answer(following)
        self.assertEqual(response.code, 200)
        self.assertGreater(len(data), 0)

    def test_with_a_token_the_segment_uris_carry_it(self) -> None:
        """With --token the playlist's URIs carry the token, and a segment without it is refused."""
        self.service.app.settings = self.service.app.hls.settings = self.settings.replace(token="s3cret")
        pending = self.get(PLAYLIST + "&token=s3cret")
        self.stream(5)
        _, body = self.answer(pending)
        uri = self.uris(body)[0]
        self.assertTrue(uri.endswith("?token=s3cret"), uri)
        self.assertEqual(self.answer(self.get(uri))[0].code, 200)
        self.assertEqual(self.answer(self.get(uri.split("?")[0]))[0].code, 401)

    def test_a_viewer_that_stops_fetching_leaves_then_the_grace_stops_the_session_once(self) -> None:
        """No request for --hls-idle removes the viewer; the grace then stops the engine session exactly once."""
        pending = self.get(PLAYLIST)
        self.stream(5)
        self.answer(pending)
        channel = self.service.registry.channels()[0]
        for _ in range(5):  # keeps fetching: stays
            self.stream(2)
            self.answer(self.get(PLAYLIST))
        self.assertEqual(len(channel.sinks), 1)
        self.assertEqual(self.engine.stop_calls, 0)
        self.clock.advance(self.settings.hls_idle_timeout)
        self.assertEqual(len(channel.sinks), 0)
        self.assertEqual(self.engine.stop_calls, 0)
        self.clock.advance(self.settings.grace + 1)
        self.assertEqual(self.engine.stop_calls, 1)
        self.clock.advance(60)
        self.assertEqual(self.engine.stop_calls, 1)

    def test_a_viewer_is_one_player_per_address_and_user_agent(self) -> None:
        """Repeated requests from one viewer are one player in /status, with kind, bytes and last request."""
        pending = self.get(PLAYLIST, headers={"User-Agent": "AppleCoreMedia/1.0"})
        self.stream(5)
        self.answer(pending)
        self.answer(self.get(PLAYLIST, headers={"User-Agent": "AppleCoreMedia/1.0"}))
        self.answer(self.get(PLAYLIST, headers={"User-Agent": "VLC/3.0"}))
        _, body = self.answer(self.get("/status"))
        clients = json.loads(body)["channels"][0]["clients"]
        self.assertEqual(sorted(c["user_agent"] for c in clients), ["AppleCoreMedia/1.0", "VLC/3.0"])
        self.assertTrue(all(c["kind"] == "hls" and c["bytes_sent"] > 0 and "last_request" in c for c in clients))
        _, metrics = self.answer(self.get("/metrics"))
        self.assertIn(b'acetwist_hls_viewers 2.0', metrics)

    def test_tokens_name_the_stream_key(self) -> None:
        """A segment token reads back as the stream it was made for, by id or by infohash."""
        self.assertEqual(key_of_token(channel_token(f"id:{ID}")), ("id", ID))
        self.assertEqual(key_of_token(channel_token(f"infohash:{ID}")), ("infohash", ID))
        self.assertIsNone(key_of_token("x" + ID))
