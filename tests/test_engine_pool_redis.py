"""Two engine pools (two workers) sharing a real redis-server count load together."""

from __future__ import annotations

from typing import Any, List

from twisted.internet import reactor
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.trial.unittest import TestCase

from acetwist.config import Settings
from acetwist.engine_api import EngineSession
from acetwist.engines import make_pool
from acetwist.engines.health import PROBE_PATH
from acetwist.engines.testing import FakeHTTP
from acetwist.errors import EngineError
from acetwist.testing import FakeEngine
from tests.test_coord_contract import RedisHarness

E1, E2 = "http://e1:6878", "http://e2:6878"


def session(n: int) -> EngineSession:
    return EngineSession(playback_url=f"{E1}/r/{n}", stat_url=None, command_url=None, infohash="ih",
                         playback_session_id=f"ps{n}", pid=f"p{n}")


class RedisPoolTests(RedisHarness, TestCase):
    @inlineCallbacks
    def pools(self, n: int, capacity: int) -> Any:
        http = FakeHTTP()
        for url in (E1, E2):
            http.route(url + PROBE_PATH, (200, {"result": {}}))
        settings = Settings.defaults(engines=(E1, E2), engine_max_streams=capacity)
        out: List[Any] = []
        for i in range(n):
            coordinator = yield self.make(f"w{i}")
            pool = make_pool(settings, reactor, coordinator, http=http, make_client=lambda url: FakeEngine())
            pool.start()
            self.addCleanup(pool.stop)
            out.append(pool)
        return out

    @inlineCallbacks
    def test_four_streams_at_once_over_two_workers(self) -> Any:
        """Two engines of capacity 2, four streams requested at the same moment (three on one worker): two per engine."""
        a, b = yield self.pools(2, capacity=2)
        calls = [a.reserve("id:1"), a.reserve("id:2"), a.reserve("id:3"), b.reserve("id:4")]
        results = yield DeferredList(calls, consumeErrors=True)
        self.assertTrue(all(ok for ok, _ in results), results)
        engines = sorted(r.engine_id for _, r in results)
        self.assertEqual(engines, [E1, E1, E2, E2])
        for n, (_, reservation) in enumerate(results):
            reservation.commit(session(n))
        yield self.assertFailure(b.reserve("id:5"), EngineError)
        self.assertEqual(self.server.command("ZCARD", f"acetwist-test:engine:{E1}:slots"), 2)

    @inlineCallbacks
    def test_a_crashed_workers_slots_free_themselves(self) -> Any:
        """Slots of a worker that stopped refreshing them no longer count once expired (their expiry is moved to now here)."""
        a, b = yield self.pools(2, capacity=1)
        for reservation in [(yield a.reserve("id:1")), (yield a.reserve("id:2"))]:
            reservation.commit(session(1))
        yield self.assertFailure(b.reserve("id:3"), EngineError)
        # The worker dies without releasing; instead of waiting the committed TTL (30 s), its slots' expiry is moved to 0.
        yield a.stop()
        for url in (E1, E2):
            key = f"acetwist-test:engine:{url}:slots"
            for member in self.server.command("ZRANGE", key, 0, -1):
                self.server.command("ZADD", key, "XX", 0, member)
        reservation = yield b.reserve("id:3")
        self.assertIn(reservation.engine_id, (E1, E2))
