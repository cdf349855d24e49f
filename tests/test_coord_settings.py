"""
How the coordinators' timings relate to each other and to the proxy's
options: the takeover margin covers the reconnection delay, the data-set
marker expires before a refreshed player record can, and C{--heartbeat} and
C{--lease} reach both coordinators.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from acetwist.config import Settings
from acetwist.coord.memory import MemoryCoordinator
from acetwist.coord.settings import CoordSettings, RedisSettings, heartbeat_timings
from acetwist.service import make_coordinator

#: Every --heartbeat the proxy accepts, from 0.1 s to 10 s.
HEARTBEATS = [0.1, 0.5, 1.0, 2.0, 5.0, 7.5, 8.0, 10.0]


class ReclaimMarginTests(SynchronousTestCase):
    def test_margin_covers_the_reconnect_delay(self) -> None:
        """With Redis, the takeover margin is longer than any reconnection delay, whatever reconnect_max_delay is."""
        from acetwist.coord.link import Link

        for top in (0.1, 0.2, 1.0, 2.0, 5.0, 30.0):
            settings = RedisSettings(reconnect_max_delay=top)
            self.assertGreaterEqual(settings.reclaim_margin, top + 0.5)
            link = Link(settings, Clock(), 1, "test")
            delays = [link.retry_delay(attempt) for attempt in range(1, 40) for _ in range(50)]
            self.assertLessEqual(max(delays), top)
            self.assertGreater(max(delays), top * 0.8)
            self.assertLessEqual(link.retry_delay(1), 0.5)

    def test_defaults_keep_todays_margin(self) -> None:
        """The default Redis margin is 2.5 s (reconnect_max_delay 2 s + 0.5 s); in memory it is 0.5 s."""
        self.assertEqual(RedisSettings().reclaim_margin, 2.5)
        self.assertEqual(CoordSettings().reclaim_margin, 0.5)


class DataSetTests(SynchronousTestCase):
    def test_marker_expires_before_a_refreshed_record(self) -> None:
        """The data-set marker, refreshed every heartbeat, expires no later than a record refreshed by progress would, and outlives two heartbeats."""
        for heartbeat in HEARTBEATS:
            s = RedisSettings(**heartbeat_timings(heartbeat))
            self.assertLessEqual(s.data_set_ttl, s.client_ttl - s.progress_interval - s.heartbeat_interval + 1e-9)
            self.assertGreaterEqual(s.data_set_ttl, 2 * s.heartbeat_interval - 1e-9)

    def test_settle_after_reconnect_covers_a_reconnect_and_a_rewrite(self) -> None:
        """After a reconnection counts wait for every worker to reconnect and rewrite its players' records."""
        s = RedisSettings(**heartbeat_timings(2.0))
        self.assertEqual(s.settle_after_reconnect, s.reclaim_margin + s.progress_interval + s.heartbeat_interval)

    def test_heartbeat_timings_keep_ttls_above_the_refresh(self) -> None:
        """TTLs stay at their defaults for usual heartbeats and at least three refreshes long for slow ones."""
        self.assertEqual(heartbeat_timings(2.0), {"heartbeat_interval": 2.0, "progress_interval": 2.0,
                                                  "worker_ttl": 15.0, "client_ttl": 30.0})
        for heartbeat in HEARTBEATS:
            t = heartbeat_timings(heartbeat)
            self.assertGreaterEqual(t["worker_ttl"], 3 * heartbeat)
            self.assertGreaterEqual(t["client_ttl"], 3 * heartbeat)


class MakeCoordinatorTests(SynchronousTestCase):
    def test_memory_gets_heartbeat_and_lease(self) -> None:
        """Without --redis, --heartbeat and --lease set the memory coordinator's intervals and lease."""
        c = make_coordinator(Settings.defaults(heartbeat=1.0, lease=4.0), Clock(), "w1")
        assert isinstance(c, MemoryCoordinator)
        s = c.settings
        self.assertEqual((s.heartbeat_interval, s.progress_interval, s.lease_ms), (1.0, 1.0, 4000))
        self.assertEqual((s.worker_ttl, s.client_ttl), (15.0, 30.0))

    def test_redis_gets_heartbeat_lease_and_prefix(self) -> None:
        """With --redis, --heartbeat, --lease and --redis-prefix reach the Redis coordinator (built, not started)."""
        from acetwist.coord.redis import RedisCoordinator

        settings = Settings.defaults(heartbeat=1.0, lease=3.0, redis="redis://127.0.0.1:1/2", redis_prefix="px")
        c = make_coordinator(settings, Clock(), "w1")
        self.addCleanup(c.stop)
        assert isinstance(c, RedisCoordinator)
        s = c.settings
        self.assertEqual((s.heartbeat_interval, s.progress_interval, s.lease_ms), (1.0, 1.0, 3000))
        self.assertEqual((s.worker_ttl, s.client_ttl), (15.0, 30.0))
        self.assertEqual((s.host, s.port, s.db, s.prefix), ("127.0.0.1", 1, 2, "px"))
        self.assertEqual(c.reclaim_margin, 2.5)

    def test_slow_heartbeat_lengthens_the_ttls(self) -> None:
        """A 10 s heartbeat keeps workers for 30 s and player records for 40 s."""
        c = make_coordinator(Settings.defaults(heartbeat=10.0), Clock(), "w1")
        assert isinstance(c, MemoryCoordinator)
        self.assertEqual((c.settings.worker_ttl, c.settings.client_ttl), (30.0, 40.0))
