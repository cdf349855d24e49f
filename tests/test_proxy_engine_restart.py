"""
An engine restart under two players (issue 8): the old playback URL is gone
for good, so the proxy must open a new session at once instead of re-reading
a URL the engine answers 404 to, and players must not notice more than the
new session's prebuffer.
"""

import json
from typing import Any, List

from twisted.internet.defer import inlineCallbacks

from acetwist.testing import Player, fetch, wait_for
from tests.integration import SimulatorProxyTestCase

PREBUFFER = 0.5
#: issue 8's target: players receive data again within the engine's prebuffer + 2 s
ALLOWED_GAP = PREBUFFER + 2.0


class TimedPlayer(Player):
    """A Player that also records when each piece of the body arrived."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: List[float] = []

    def _data(self, data: bytes) -> None:
        self.arrivals.append(self.reactor.seconds())
        super()._data(data)

    def longest_silence_since(self, since: float) -> float:
        """The longest time between two consecutive pieces of the body, the second arriving after C{since}."""
        times = self.arrivals
        return max((b - a for a, b in zip(times, times[1:]) if b >= since), default=0.0)


class EngineRestartTests(SimulatorProxyTestCase):
    timeout = 60
    sim_config = {"prebuffer": PREBUFFER, "burst": 1.0, "bitrate": 2_000_000}
    # the recovery ladder at its defaults (backoff 1 s, three re-reads, two new sessions)
    proxy_config = {"grace": 1.0, "first_byte_timeout": 10.0}

    def play_timed(self) -> TimedPlayer:
        player = TimedPlayer(self.reactor, self.stream_url(), limit=1_000_000_000)
        self.players.append(player)
        player.start()
        return player

    @inlineCallbacks
    def test_players_get_data_again_within_the_prebuffer_after_an_engine_restart(self) -> Any:
        """After the engine restarts under two players, both receive data again within its prebuffer + 2 s on the same connection."""
        settings = self.proxy.service.settings
        self.assertEqual((settings.backoff, settings.reconnect_attempts), (1.0, 3))
        players = [self.play_timed(), self.play_timed()]
        yield wait_for(self.reactor, lambda: all(p.received > 300_000 for p in players), timeout=15)
        self.assertEqual(self.sessions_opened(), 1)

        code, _, body = yield fetch(self.reactor, f"{self.sim.url}/_sim/faults?name=restart&every_ms=100&times=1",
                                    b"POST")
        self.assertEqual(code, 200, body)
        armed_at = self.reactor.seconds()
        yield wait_for(self.reactor, lambda: self.counters()["restarts"] == 1, timeout=5)
        at_restart = [p.received for p in players]

        # bounded so that today's gap (about 16 s) can be measured and reported
        yield wait_for(self.reactor, lambda: all(p.received > r + 300_000 for p, r in zip(players, at_restart)),
                       timeout=35)
        gaps = [round(p.longest_silence_since(armed_at), 2) for p in players]
        for player in players:
            self.assertFalse(player.done.called, f"the player's connection ended: {player.end_reason}")
            self.assertTrue(player.checker.aligned_at_start)
            self.assertEqual(player.checker.resyncs, 0)
        self.assertEqual(self.counters()["restarts"], 1)
        self.assertEqual(self.sessions_opened(), 2)
        faults = json.loads((yield fetch(self.reactor, f"{self.sim.url}/_sim/faults"))[2])["faults"]
        self.assertEqual(faults, [])
        for gap in gaps:
            self.assertLessEqual(gap, ALLOWED_GAP, f"players went without data for {gaps} s (allowed {ALLOWED_GAP} s)")
