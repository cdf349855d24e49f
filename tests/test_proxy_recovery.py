"""Mid-stream trouble: cuts, gaps, engine restarts and misaligned upstreams never disconnect players that can be saved."""

from typing import Any

from twisted.internet.defer import inlineCallbacks

from acetwist.testing import wait_for
from tests.integration import SimulatorProxyTestCase


class RecoveryTests(SimulatorProxyTestCase):
    proxy_config = dict(SimulatorProxyTestCase.proxy_config, idle_timeout=1.0, backoff=0.2,
                        recovery_first_byte_timeout=3.0, reconnect_attempts=2, session_attempts=2)

    def channel(self) -> Any:
        [channel] = self.proxy.registry.channels()
        return channel

    def assertAlignedThroughout(self, player: Any) -> None:
        self.assertTrue(player.checker.aligned_at_start)
        self.assertEqual(player.checker.resyncs, 0)
        self.assertEqual(player.checker.trailing_bytes % 188, player.checker.trailing_bytes)

    @inlineCallbacks
    def test_cut_is_recovered_without_disconnecting_players(self) -> Any:
        """When the engine cuts the stream, players stay connected and keep receiving aligned TS."""
        player = self.play(limit=2_500_000)
        yield wait_for(self.reactor, lambda: player.received > 500_000)
        self.fault("cut", self.content, after_bytes=300_000)
        yield player.done
        self.assertEqual(player.end_reason, "limit")
        self.assertGreaterEqual(self.channel().recoveries, 1)
        self.assertAlignedThroughout(player)

    @inlineCallbacks
    def test_gap_longer_than_idle_timeout_triggers_recovery(self) -> Any:
        """A silence longer than the idle timeout starts recovery; players resume after it."""
        player = self.play(limit=2_000_000)
        yield wait_for(self.reactor, lambda: player.received > 500_000)
        self.fault("gap", self.content, ms=2500)
        yield player.done
        self.assertEqual(player.end_reason, "limit")
        self.assertGreaterEqual(self.channel().recoveries, 1)
        self.assertAlignedThroughout(player)

    @inlineCallbacks
    def test_engine_restart_opens_a_new_session(self) -> Any:
        """After an engine restart forgets every session, the proxy opens a new one and players continue."""
        player = self.play(limit=2_500_000)
        yield wait_for(self.reactor, lambda: player.received > 500_000)
        self.sim.engine.restart()
        yield player.done
        self.assertEqual(player.end_reason, "limit")
        self.assertEqual(self.sessions_opened(), 2)
        self.assertAlignedThroughout(player)

    @inlineCallbacks
    def test_players_are_aborted_only_when_every_rung_fails(self) -> Any:
        """With the engine gone for good, players are disconnected by an abort, never by an error page in the TS."""
        player = self.play(limit=50_000_000, keep_bytes=True)
        yield wait_for(self.reactor, lambda: player.received > 300_000)
        self.fault("down", None, mode="refuse")
        yield player.done
        self.assertTrue(player.end_reason.startswith("aborted"), player.end_reason)
        self.assertNotIn(b"<html", bytes(player.data[-4096:]).lower())
        self.assertNotIn(b'"error"', bytes(player.data[-4096:]))
        yield wait_for(self.reactor, lambda: not self.proxy.registry.channels())

    @inlineCallbacks
    def test_misaligned_upstream_reaches_players_aligned(self) -> Any:
        """An upstream that starts mid-packet is resynchronised: players get aligned TS from byte 0."""
        self.fault("misaligned", self.content)
        player = self.play(limit=500_000)
        yield player.done
        self.assertCleanTS(player)
