"""
HLS end to end: the real simulator, the real proxy on loopback, and a real
decoder (the imageio-ffmpeg wheel's ffmpeg) reading the proxy's playlists.
"""

from __future__ import annotations

import re
from typing import Any, Generator, List, Tuple

from twisted.internet.defer import Deferred, DeferredList, inlineCallbacks
from twisted.internet.task import deferLater

from acetwist import ts
from acetwist.testing import fetch, wait_for
from acetwist.testing.decoder import DecodeResult, decode, decoder_unavailable
from tests.integration import SimulatorProxyTestCase

UNAVAILABLE = decoder_unavailable()


def playlist_entries(body: bytes) -> Tuple[int, int, List[Tuple[float, str]]]:
    """(target duration, media sequence, [(EXTINF, URI)]) of a media playlist."""
    text = body.decode()
    target = int(re.search(r"^#EXT-X-TARGETDURATION:(\d+)$", text, re.M).group(1))  # type: ignore[union-attr]
    sequence = int(re.search(r"^#EXT-X-MEDIA-SEQUENCE:(\d+)$", text, re.M).group(1))  # type: ignore[union-attr]
    entries = [(float(d), uri) for d, uri in re.findall(r"^#EXTINF:([0-9.]+),\n(\S+)$", text, re.M)]
    return target, sequence, entries


class HlsThroughProxyTests(SimulatorProxyTestCase):
    proxy_config = {**SimulatorProxyTestCase.proxy_config, "hls_idle": 2.0, "grace": 1.0}

    def playlist_url(self, content: Any = None) -> str:
        return f"{self.proxy.url}/ace/manifest.m3u8?id={(content or self.content).content_id}"

    @inlineCallbacks
    def test_playlists_and_consecutive_segments_follow_the_rules(self) -> Generator[Deferred[Any], Any, None]:
        """Across refreshes, three consecutive segments are listed with growing sequence numbers, each whole TS from PAT/PMT and a keyframe, and together without a continuity error."""
        status, headers, body = yield fetch(self.reactor, self.playlist_url())
        self.assertEqual(status, 200, body)
        self.assertEqual(headers.getRawHeaders("content-type"), ["application/vnd.apple.mpegurl"])
        target, first_sequence, entries = playlist_entries(body)
        wanted = {first_sequence + len(entries) - 1 + k for k in range(3)}
        segments = {}
        for _ in range(40):  # refresh every half second, at most 20 s
            status, _, body = yield fetch(self.reactor, self.playlist_url())
            self.assertEqual(status, 200)
            text = body.decode()
            self.assertTrue(text.startswith("#EXTM3U\n#EXT-X-VERSION:3\n"))
            self.assertNotIn("#EXT-X-ENDLIST", text)
            target, sequence, entries = playlist_entries(body)
            self.assertGreaterEqual(sequence, first_sequence)
            for offset, (duration, uri) in enumerate(entries):
                self.assertLessEqual(duration, target)
                self.assertTrue(uri.endswith(f"/{sequence + offset}.ts"), uri)
                if sequence + offset in wanted and sequence + offset not in segments:
                    status, headers, data = yield fetch(self.reactor, self.proxy.url + uri)
                    self.assertEqual(status, 200)
                    self.assertEqual(headers.getRawHeaders("content-type"), ["video/mp2t"])
                    segments[sequence + offset] = (duration, data)
            if len(segments) == 3:
                break
            yield deferLater(self.reactor, 0.5, lambda: None)
        self.assertEqual(sorted(segments), sorted(wanted))
        together = ts.TSChecker()
        for sequence in sorted(segments):
            duration, data = segments[sequence]
            self.assertAlmostEqual(duration, 2.0, places=2)  # the simulator's 1 s GOPs, a 2 s target
            checker = ts.TSChecker()
            checker.feed(data)
            self.assertTrue(checker.aligned_at_start)
            self.assertTrue(checker.psi_before_first_video)
            self.assertTrue(checker.first_video_random_access)
            self.assertEqual(checker.resyncs, 0)
            self.assertEqual(len(checker.random_access_points), 2)  # whole GOPs: two of them
            together.feed(data)
        self.assertEqual(together.cc_errors, 0, together.cc_errors_by_pid)

    @inlineCallbacks
    def test_a_ts_player_and_an_hls_viewer_share_one_session(self) -> Generator[Deferred[Any], Any, None]:
        """A TS player and an HLS viewer of one content make one engine JSON call and one session, and both get data."""
        player = self.play()
        status, _, body = yield fetch(self.reactor, self.playlist_url())
        self.assertEqual(status, 200)
        _, _, entries = playlist_entries(body)
        status, _, data = yield fetch(self.reactor, self.proxy.url + entries[-1][1])
        self.assertEqual(status, 200)
        self.assertGreater(len(data), 100_000)
        yield wait_for(self.reactor, lambda: player.received > 200_000, timeout=10)
        self.assertEqual(self.json_calls(), 1)
        self.assertEqual(self.sessions_opened(), 1)
        self.assertCleanTS(player)

    @inlineCallbacks
    def test_a_viewer_that_stops_fetching_ends_the_session_once(self) -> Generator[Deferred[Any], Any, None]:
        """While the viewer fetches there is no engine stop; after --hls-idle and the grace there is exactly one."""
        for _ in range(10):  # 5 s of fetching, longer than the 2 s idle time
            status, _, _ = yield fetch(self.reactor, self.playlist_url())
            self.assertEqual(status, 200)
            yield deferLater(self.reactor, 0.5, lambda: None)
        self.assertEqual(self.counters()["stop_calls"], 0)
        self.assertEqual(len(self.proxy.service.registry.channels()), 1)
        yield wait_for(self.reactor, lambda: self.counters()["stop_calls"] >= 1, timeout=10)
        yield deferLater(self.reactor, 1.0, lambda: None)
        self.assertEqual(self.counters()["stop_calls"], 1)
        self.assertEqual(self.counters()["sessions_stopped"], 1)
        self.assertEqual(self.proxy.service.registry.channels(), [])


class HlsDecoderTests(SimulatorProxyTestCase):
    skip = UNAVAILABLE
    timeout = 90

    @inlineCallbacks
    def test_a_decoder_reads_20_s_of_hls_and_one_joining_live_too(self) -> Generator[Deferred[Any], Any, None]:
        """ffmpeg decodes 20 s of a cold channel's HLS with no error, and a second ffmpeg that joins the live channel later decodes 10 s with none."""
        url = f"{self.proxy.url}/ace/manifest.m3u8?id={self.content.content_id}"
        cold = decode(self.reactor, url, 20, deadline=60)
        yield deferLater(self.reactor, 6.0, lambda: None)
        joining = decode(self.reactor, url, 10, deadline=45)
        results = yield DeferredList([cold, joining], fireOnOneErrback=True, consumeErrors=True)
        for _, result in results:
            assert isinstance(result, DecodeResult)
            self.assertEqual(result.exit_code, 0, result.describe())
            self.assertTrue(result.found_h264_and_aac, result.describe())
            self.assertEqual(result.errors, (), result.describe())
        self.assertGreaterEqual(results[0][1].frames, 20 * 25 - 5, results[0][1].describe())
        self.assertGreaterEqual(results[1][1].frames, 10 * 25 - 5, results[1][1].describe())
        self.assertEqual(self.sessions_opened(), 1)
