"""Engine failures before a player's first byte: an HTTP error with JSON, the same for every waiter, nothing left running."""

from typing import Any

from twisted.internet.defer import DeferredList, inlineCallbacks

from acetwist.testing import Player, start_proxy, wait_for
from tests.integration import SimulatorProxyTestCase


class FailureTests(SimulatorProxyTestCase):
    proxy_config = dict(SimulatorProxyTestCase.proxy_config, first_byte_timeout=1.5)

    @inlineCallbacks
    def assertAllGet(self, players: Any, status: int) -> Any:
        yield DeferredList([p.done for p in players])
        bodies = set()
        for player in players:
            self.assertEqual(player.status, status, player.end_reason)
            self.assertEqual(player.received, 0)
            document = player.json()
            self.assertEqual(document["status"], status)
            bodies.add(document["error"])
        self.assertEqual(len(bodies), 1, bodies)
        yield wait_for(self.reactor, lambda: not self.proxy.registry.channels(), timeout=5)

    @inlineCallbacks
    def test_failed_content_is_502_for_every_waiter(self) -> Any:
        """'failed to load content' from the engine is a 502 with a JSON body for every waiting player."""
        self.fault("failed_content", self.content)
        players = [self.play() for _ in range(3)]
        yield self.assertAllGet(players, 502)
        self.assertIn("failed to load content", players[0].json()["error"])

    @inlineCallbacks
    def test_unknown_content_is_502(self) -> Any:
        """A content id the engine does not know is a 502, not an empty 200."""
        player = self.play(f"{self.proxy.url}/ace/getstream?id={'f' * 40}")
        yield self.assertAllGet([player], 502)

    @inlineCallbacks
    def test_engine_down_is_503_with_retry_after(self) -> Any:
        """An engine that refuses connections gives 503 with Retry-After."""
        proxy = start_proxy(self.reactor, "http://127.0.0.1:1", **self.proxy_config)
        self.addCleanup(proxy.stop)
        player = Player(self.reactor, f"{proxy.url}/ace/getstream?id={self.content.content_id}").start()
        self.players.append(player)
        yield player.done
        self.assertEqual(player.status, 503)
        self.assertTrue(player.headers.getRawHeaders("retry-after"))
        self.assertEqual(player.json()["status"], 503)

    @inlineCallbacks
    def test_no_peers_is_504_at_the_deadline_and_the_session_is_stopped(self) -> Any:
        """A dead channel (playback hangs without headers) answers 504 at the first-byte deadline, then stops its session."""
        self.fault("no_peers", self.content)
        players = [self.play() for _ in range(2)]
        yield self.assertAllGet(players, 504)
        yield wait_for(self.reactor, lambda: self.counters()["stop_calls"] == 1)

    @inlineCallbacks
    def test_dead_channel_does_not_delay_another(self) -> Any:
        """While one channel hangs without data, another channel streams normally and fully."""
        self.fault("no_peers", self.content)
        dead = self.play()
        alive = self.play(self.stream_url(self.other_content), limit=400_000)
        yield alive.done
        self.assertIsNone(dead.status)  # still waiting
        self.assertCleanTS(alive)
        yield dead.done
        self.assertEqual(dead.status, 504)

    @inlineCallbacks
    def test_playback_http_error_is_502(self) -> Any:
        """A playback URL answering HTTP 403 is a 502, never copied to players."""
        self.fault("http_error", self.content, status=403)
        player = self.play()
        yield self.assertAllGet([player], 502)

    @inlineCallbacks
    def test_non_json_reply_is_502(self) -> Any:
        """A getstream reply that is not JSON is a 502."""
        self.fault("garbage_json", self.content)
        player = self.play()
        yield self.assertAllGet([player], 502)
