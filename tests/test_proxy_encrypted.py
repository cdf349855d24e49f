"""Encrypted content through the engine's HLS: the real simulator and the real proxy, TS players on loopback."""

from typing import Any

from twisted.internet.defer import DeferredList, inlineCallbacks

from acetwist.testing import wait_for
from acetwist.testing.decoder import DecodeResult, decode, decoder_unavailable
from tests.integration import SimulatorProxyTestCase


class EncryptedContentTests(SimulatorProxyTestCase):
    sim_config = dict(SimulatorProxyTestCase.sim_config, encrypted="channel-1")
    proxy_config = dict(SimulatorProxyTestCase.proxy_config, grace=0.5, stop_timeout=1.0)

    def assertSegmentsWhole(self, player: Any) -> None:
        """Clean TS, and the channel read its segments without a splice (no CC error anywhere, so none inside one)."""
        self.assertEqual(player.status, 200)
        self.assertCleanTS(player)
        [channel] = self.proxy.registry.channels()
        self.assertEqual(channel.recoveries, 0)

    @inlineCallbacks
    def test_ts_players_get_clean_ts_from_the_engines_hls_with_one_engine_session(self) -> Any:
        """Two TS players on encrypted content get clean TS read from the engine's HLS, through one engine session."""
        first = self.play(limit=1_500_000)
        yield wait_for(self.reactor, lambda: first.received > 0, timeout=15)
        second = self.play(limit=600_000)
        yield DeferredList([first.done, second.done])
        for player in (first, second):
            self.assertEqual(player.end_reason, "limit")
            self.assertSegmentsWhole(player)
        [channel] = self.proxy.registry.channels()
        self.assertEqual(channel.sessions_opened, 1)
        self.assertEqual(channel.status()["session_format"], "hls")
        counters = self.counters()
        # getstream (is_encrypted: 1), then manifest.m3u8, which superseded it: one session is live, an HLS one
        self.assertEqual(self.json_calls(), 2)
        self.assertEqual((counters["sessions_opened"], counters["sessions_live"]), (2, 1))
        self.assertEqual(counters["sessions_superseded"] + counters["sessions_stopped"], 1)
        self.assertEqual(self.sim.engine.sessions[self.content.infohash].kind, "hls")
        self.assertEqual((counters["playback_gets"], counters["encrypted_refusals"], counters["bytes_sent"]), (0, 0, 0))
        self.assertGreaterEqual(counters["hls_segment_gets"], 2)

    @inlineCallbacks
    def test_the_hls_session_is_stopped_once_after_the_grace(self) -> Any:
        """After the last player leaves, the HLS session is stopped once after the grace; no getstream session is left."""
        player = self.play(limit=600_000)
        yield player.done
        yield wait_for(self.reactor, lambda: not self.proxy.registry.channels(), timeout=10)
        yield wait_for(self.reactor, lambda: self.counters()["sessions_live"] == 0, timeout=5)
        counters = self.counters()
        self.assertEqual(counters["sessions_stopped"], 1)  # the HLS session, by the proxy
        # the getstream session: superseded by the manifest call, then its stop (sent once) found it gone
        self.assertEqual((counters["sessions_superseded"], counters["stop_calls"], counters["stops_unknown"]),
                         (1, 2, 1))
        self.assertEqual(counters["sessions_expired"], 0)

    @inlineCallbacks
    def test_a_getstream_that_refuses_json_falls_back_to_hls(self) -> Any:
        """A getstream that refuses format=json makes the proxy use manifest.m3u8: one engine session, clean TS."""
        self.fault("json_refused", self.other_content)
        player = self.play(self.stream_url(self.other_content), limit=600_000)
        yield player.done
        self.assertSegmentsWhole(player)
        counters = self.counters()
        self.assertEqual(self.json_calls(self.other_content), 2)
        self.assertEqual((counters["sessions_opened"], counters["stop_calls"]), (1, 0))
        self.assertEqual(self.sim.engine.sessions[self.other_content.infohash].kind, "hls")


class EncryptedContentHlsTests(SimulatorProxyTestCase):
    skip = decoder_unavailable()
    timeout = 60
    sim_config = dict(SimulatorProxyTestCase.sim_config, encrypted="channel-1")

    @inlineCallbacks
    def test_a_ts_player_and_an_hls_viewer_both_play_it(self) -> Any:
        """On encrypted content a TS player gets clean TS and ffmpeg decodes 10 s of the proxy's HLS without an error, over one engine session read as HLS."""
        player = self.play(limit=10**9)
        yield wait_for(self.reactor, lambda: player.received > 300_000, timeout=15)
        url = f"{self.proxy.url}/ace/manifest.m3u8?id={self.content.content_id}"
        result: DecodeResult = yield decode(self.reactor, url, 10, deadline=40)
        self.assertEqual(result.exit_code, 0, result.describe())
        self.assertTrue(result.found_h264_and_aac, result.describe())
        self.assertEqual(result.errors, (), result.describe())
        self.assertGreaterEqual(result.frames, 10 * 25 - 5, result.describe())
        self.assertCleanTS(player)
        [channel] = self.proxy.registry.channels()
        self.assertEqual((channel.sessions_opened, channel.status()["session_format"]), (1, "hls"))
        self.assertEqual(self.counters()["sessions_live"], 1)
