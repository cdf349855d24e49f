"""Backpressure per player: a stalled or slow player never slows the others or grows memory without bound."""

from typing import Any, List

from twisted.internet.defer import inlineCallbacks

from acetwist.testing import Player, wait_for
from tests.integration import SimulatorProxyTestCase

MAX_LAG = 1024 * 1024


class BackpressureTests(SimulatorProxyTestCase):
    sim_config = {"prebuffer": 0.2, "burst": 1.0, "bitrate": 8_000_000}
    proxy_config = dict(SimulatorProxyTestCase.proxy_config, client_max_lag=MAX_LAG, client_stall_timeout=3.0)

    def channel(self) -> Any:
        [channel] = self.proxy.registry.channels()
        return channel

    def sink_of(self, player: Player) -> Any:
        channels = self.proxy.registry.channels()
        if not channels:
            return None
        for sink, info in channels[0].sinks.items():
            if info.user_agent == player.user_agent:
                return sink
        return None

    @inlineCallbacks
    def test_stalled_player_is_bounded_then_dropped_while_others_keep_full_rate(self) -> Any:
        """Among ten readers, a player that never reads keeps a bounded queue, is dropped after the stall timeout, and nobody else loses data."""
        normal: List[Player] = [self.play(limit=10**9, user_agent=f"normal-{i}") for i in range(10)]
        stalled = self.play(limit=10**9, user_agent="stalled")
        yield wait_for(self.reactor, lambda: stalled.received > 0)
        stalled.pause()
        lags: List[int] = []

        def stalled_still_there() -> bool:
            sink = self.sink_of(stalled)
            if sink is not None:
                lags.append(sink.lag_bytes)
            return sink is None

        yield wait_for(self.reactor, stalled_still_there, timeout=20)
        self.assertTrue(lags)
        self.assertLessEqual(max(lags), MAX_LAG + 512 * 1024)
        self.assertTrue(stalled.done.called or stalled.received < self.channel().bytes_in)
        channel = self.channel()
        self.assertGreater(channel.bytes_in, 4_000_000)
        for player in normal:
            # every normal player has everything the engine sent, but the newest partial block or two
            self.assertGreaterEqual(player.received, channel.bytes_in - 512 * 1024, player.user_agent)
            self.assertEqual(player.checker.cc_errors, 0)
            self.assertIsNone(player.end_reason)

    @inlineCallbacks
    def test_slow_reader_skips_to_newest_keyframe_instead_of_being_dropped(self) -> Any:
        """A player reading slower than the stream falls past the lag bound and skips ahead (counted) without being disconnected."""
        # a tenth of the stream's rate: it keeps reading, but falls behind by ~0.9 MB/s
        slow = self.play(limit=10**9, user_agent="slow", max_rate=100_000)
        yield wait_for(self.reactor, lambda: (self.sink_of(slow) is not None and self.sink_of(slow).skips > 0),
                       timeout=30)
        self.assertFalse(slow.done.called)
        [client] = [c for c in self.channel().status()["clients"] if c["user_agent"] == "slow"]
        self.assertGreater(client["skips"], 0)
        self.assertTrue(slow.checker.aligned_at_start)
        self.assertEqual(slow.checker.resyncs, 0)
