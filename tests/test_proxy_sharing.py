"""Many players, one engine session: sharing, single-flight start, joins at a keyframe."""

from typing import Any

from twisted.internet.defer import DeferredList, inlineCallbacks

from acetwist import ts
from acetwist.testing import fetch, wait_for
from tests.integration import SimulatorProxyTestCase


class SharingTests(SimulatorProxyTestCase):
    @inlineCallbacks
    def test_twenty_players_share_one_engine_session(self) -> Any:
        """Twenty players on one channel cause one JSON call and one session, and each receives clean TS."""
        first = self.play(limit=400_000)
        yield wait_for(self.reactor, lambda: first.received > 0)
        others = [self.play(limit=400_000) for _ in range(19)]
        yield DeferredList([p.done for p in [first] + others])
        self.assertEqual(self.json_calls(), 1)
        self.assertEqual(self.sessions_opened(), 1)
        for player in [first] + others:
            self.assertEqual(player.status, 200)
            self.assertEqual(player.end_reason, "limit")
            self.assertCleanTS(player)

    @inlineCallbacks
    def test_fifty_simultaneous_cold_requests_make_one_session(self) -> Any:
        """Fifty players asking for a cold channel at the same moment make exactly one engine session."""
        players = [self.play(limit=200_000) for _ in range(50)]
        yield DeferredList([p.done for p in players])
        counters = self.counters()
        self.assertEqual(counters["sessions_opened"], 1)
        self.assertEqual(counters["sessions_superseded"], 0)
        self.assertEqual(self.json_calls(), 1)
        for player in players:
            self.assertCleanTS(player)

    @inlineCallbacks
    def test_id_and_matching_infohash_share_one_channel(self) -> Any:
        """A request by infohash joins the channel opened by the matching content id: no second session."""
        by_id = self.play(limit=300_000)
        yield wait_for(self.reactor, lambda: by_id.received > 0)
        by_hash = self.play(f"{self.proxy.url}/ace/getstream?infohash={self.content.infohash}", limit=300_000)
        yield DeferredList([by_id.done, by_hash.done])
        self.assertEqual(self.sessions_opened(), 1)
        self.assertEqual(self.counters()["sessions_superseded"], 0)
        self.assertCleanTS(by_hash)

    @inlineCallbacks
    def test_joiner_starts_with_pat_pmt_then_a_keyframe(self) -> Any:
        """A player joining a live channel gets PAT, PMT, then a random-access point, then the live stream."""
        first = self.play(limit=3_000_000)
        yield wait_for(self.reactor, lambda: first.received > 1_000_000)
        joiner = self.play(limit=300_000)
        yield joiner.done
        head = joiner.head
        self.assertEqual(ts.packet_pid(head, 0), ts.PAT_PID)
        self.assertIsNotNone(ts.parse_pmt(head[ts.PACKET_SIZE : 2 * ts.PACKET_SIZE]))
        third = head[2 * ts.PACKET_SIZE : 3 * ts.PACKET_SIZE]
        self.assertTrue(ts.random_access(third))
        self.assertCleanTS(joiner)
        self.assertEqual(self.sessions_opened(), 1)

    @inlineCallbacks
    def test_different_channels_get_their_own_sessions(self) -> Any:
        """Two contents are two channels with one session each."""
        a = self.play(limit=200_000)
        b = self.play(self.stream_url(self.other_content), limit=200_000)
        yield DeferredList([a.done, b.done])
        self.assertEqual(self.sessions_opened(), 2)
        self.assertEqual(self.json_calls(self.other_content), 1)
        self.assertCleanTS(a)
        self.assertCleanTS(b)

    @inlineCallbacks
    def test_status_shows_the_channel_and_its_players(self) -> Any:
        """/status lists the live channel with its session URLs and each player's ip, agent and bytes."""
        player = self.play(limit=10_000_000, user_agent="VLC/3.0.20 LibVLC/3.0.20")
        yield wait_for(self.reactor, lambda: player.received > 200_000)
        status, _, body = yield fetch(self.reactor, f"{self.proxy.url}/status")
        import json

        document = json.loads(body)
        self.assertEqual(status, 200)
        [channel] = document["channels"]
        self.assertEqual(channel["state"], "live")
        self.assertEqual(channel["infohash"], self.content.infohash)
        self.assertTrue(channel["stat_url"].startswith(self.sim.url))
        [client] = channel["clients"]
        self.assertEqual(client["ip"], "127.0.0.1")
        self.assertEqual(client["user_agent"], "VLC/3.0.20 LibVLC/3.0.20")
        self.assertGreater(client["bytes_sent"], 0)
        status, _, body = yield fetch(self.reactor, f"{self.proxy.url}/ace/status?id={self.content.content_id}")
        self.assertEqual(json.loads(body)["clients"], 1)


class OneSessionPerContentTests(SimulatorProxyTestCase):
    @inlineCallbacks
    def test_an_extra_parameter_joins_the_running_channel_without_a_second_session(self) -> Any:
        """A player adding transcode_audio joins the running channel: one engine session, none superseded, the first player uninterrupted."""
        first = self.play(limit=2_000_000)
        yield wait_for(self.reactor, lambda: first.received > 200_000)
        second = self.play(self.stream_url(transcode_audio="0"), limit=300_000)
        others = [self.play(self.stream_url(_idx=str(n)), limit=100_000) for n in range(5)]
        yield DeferredList([p.done for p in [first, second] + others])
        counters = self.counters()
        self.assertEqual(counters["sessions_opened"], 1)
        self.assertEqual(counters["sessions_superseded"], 0)
        self.assertEqual(self.json_calls(), 1)
        self.assertEqual(first.end_reason, "limit")
        self.assertCleanTS(first)
        self.assertCleanTS(second)

    @inlineCallbacks
    def test_a_refused_content_is_answered_from_memory(self) -> Any:
        """Players asking again for a content the engine refused get the same 502 without another engine call."""
        self.fault("failed_content", self.content)
        first = self.play()
        yield first.done
        again = [self.play() for _ in range(5)]
        yield DeferredList([p.done for p in again])
        self.assertEqual(first.status, 502)
        self.assertEqual([p.status for p in again], [502] * 5)
        self.assertEqual({p.json()["error"] for p in again}, {first.json()["error"]})
        self.assertEqual(self.json_calls(), 1)
