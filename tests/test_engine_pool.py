"""
The engine pool on a task.Clock: probes, selection, reservations, the
orchestrator's list and events, status. Engines are FakeEngines, HTTP is
acetwist.engines.testing.FakeHTTP, load is counted in a MemoryLedger.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from acetwist.config import Settings
from acetwist.coord.memory import MemoryCluster, MemoryCoordinator
from acetwist.engine_api import EngineSession
from acetwist.engines import make_pool
from acetwist.engines.api import IEnginePool, IReservation
from acetwist.engines.events import EventSender
from acetwist.engines.health import PROBE_PATH
from acetwist.engines.http import JsonHTTP
from acetwist.engines.ledger import MemoryLedger, SlotTable
from acetwist.engines.pool import EnginePool, Reservation
from acetwist.engines.sources import OrchestratorSource, StaticSource
from acetwist.engines.testing import FakeHTTP
from acetwist.errors import EngineError, ErrorKind
from acetwist.testing import FakeEngine

ORCH = "http://orch:8000"
E1, E2, E3 = "http://e1:6878", "http://e2:6878", "http://e3:6878"
VERSION = {"result": {"code": 3020000, "platform": "linux", "version": "3.2.3"}, "error": None}


class Engine(FakeEngine):
    """A FakeEngine at a URL that records being closed."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.base_url = url
        self.closed = False

    def close(self) -> "Deferred[None]":
        self.closed = True
        return super().close()


def item(cid: str, port: int, **fields: Any) -> Dict[str, Any]:
    base = {"container_id": cid, "container_name": cid, "host": cid, "port": port, "forwarded": False,
            "health_status": "healthy", "draining": False, "stream_count": 0}
    base.update(fields)
    return base


def session(n: int, base: str = E1) -> EngineSession:
    return EngineSession(playback_url=f"{base}/ace/r/ih/{n}", stat_url=f"{base}/ace/stat/ih/{n}",
                         command_url=f"{base}/ace/cmd/ih/{n}", infohash="ih", playback_session_id=f"ps{n}",
                         pid=f"pid{n}")


class PoolHarness(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.http = FakeHTTP()
        self.table = SlotTable(self.clock)
        self.engines: Dict[str, List[Engine]] = {}
        self.unhealthy: List[str] = []

    def make_client(self, url: str) -> Engine:
        engine = Engine(url)
        self.engines.setdefault(url, []).append(engine)
        return engine

    def engine(self, url: str) -> Engine:
        return self.engines[url][-1]

    def answer_probes(self, *urls: str) -> None:
        for url in urls:
            self.http.route(url + PROBE_PATH, (200, VERSION))

    def pool(self, urls: Sequence[str] = (E1, E2, E3), *, capacity: Optional[int] = None,
             orchestrator: bool = False, worker: str = "w1", start: bool = True, **kw: Any) -> EnginePool:
        source: Any
        events = None
        if orchestrator:
            orch_http = JsonHTTP(self.http, self.clock, {"X-API-Key": "k"})
            source = OrchestratorSource(ORCH, orch_http, self.clock, 5.0)
            events = EventSender(orch_http, self.clock, lambda: source.events_base)
        else:
            source = StaticSource(urls)
        pool = EnginePool(source, clock=self.clock, ledger=MemoryLedger(self.clock, self.table),
                          make_client=self.make_client, probes=JsonHTTP(self.http, self.clock), worker_id=worker,
                          capacity=capacity, check_interval=10.0, events=events, **kw)
        pool.on_unhealthy(self.unhealthy.append)
        if start:
            pool.start()
        self.addCleanup(pool.stop)
        return pool

    def reserve(self, pool: EnginePool, key: str = "id:aa", **kw: Any) -> Reservation:
        reservation = self.successResultOf(pool.reserve(key, **kw))
        assert isinstance(reservation, Reservation)
        return reservation

    def refused(self, pool: EnginePool, key: str = "id:aa", **kw: Any) -> EngineError:
        error = self.failureResultOf(pool.reserve(key, **kw), EngineError).value
        assert isinstance(error, EngineError)
        return error

    def orchestrator_list(self, *items: Dict[str, Any], capacity: Optional[int] = None) -> None:
        self.http.route(f"{ORCH}/api/v1/engines", (200, list(items)))
        if capacity is not None:
            self.http.route(f"{ORCH}/api/v1/proxy/config", (200, {"max_streams_per_engine": capacity}))

    def events(self) -> List[Any]:
        return [(r.url.rsplit("/", 1)[1], r.body) for r in self.http.requests if "/events/" in r.url]


class InterfaceTests(PoolHarness):
    def test_provides_the_interfaces(self) -> None:
        """The pool provides IEnginePool and its reservations IReservation."""
        self.answer_probes(E1)
        pool = self.pool([E1])
        verifyObject(IEnginePool, pool)
        verifyObject(IReservation, self.reserve(pool))


class ProbeTests(PoolHarness):
    def test_every_engine_is_probed_at_start_and_every_interval(self) -> None:
        """Each engine gets GET /webui/api/service?method=get_version at start, then every check interval."""
        self.answer_probes(E1, E2)
        self.pool([E1, E2])
        self.assertEqual(sorted(r.url for r in self.http.requests), [E1 + PROBE_PATH, E2 + PROBE_PATH])
        self.clock.advance(10)
        self.assertEqual(len(self.http.sent(PROBE_PATH)), 4)

    def test_a_new_engine_is_not_eligible_until_its_first_probe_answers(self) -> None:
        """Before its first probe answers an engine takes nothing; a reservation waits for that probe."""
        self.http.route(E1 + PROBE_PATH, None)
        pool = self.pool([E1])
        self.assertFalse(pool.eligible())
        d = pool.reserve("id:aa")
        self.assertNoResult(d)
        self.http.held[0].callback(_response(200))
        self.assertEqual(self.successResultOf(d).engine_id, E1)

    def test_first_probe_wait_is_bounded(self) -> None:
        """A first probe that never answers ends at its deadline, and the reservation fails with 503."""
        self.http.route(E1 + PROBE_PATH, None)
        pool = self.pool([E1])
        d = pool.reserve("id:aa")
        self.clock.advance(5)
        error = self.failureResultOf(d, EngineError).value
        self.assertEqual((error.status, error.kind), (503, ErrorKind.LIMIT))

    def test_two_failed_probes_make_an_engine_unhealthy_until_one_succeeds(self) -> None:
        """One failed probe is tolerated, the second in a row makes the engine unhealthy, a success heals it."""
        self.answer_probes(E1)
        pool = self.pool([E1])
        self.http.route(E1 + PROBE_PATH, (500, {}))
        self.clock.advance(10)
        self.assertTrue(pool.healthy(E1))
        self.assertEqual(self.unhealthy, [])
        self.http.refuse(E1 + PROBE_PATH)
        self.clock.advance(10)
        self.assertFalse(pool.healthy(E1))
        self.assertEqual(self.unhealthy, [E1])
        self.assertEqual(self.refused(pool).kind, ErrorKind.LIMIT)
        self.answer_probes(E1)
        self.clock.advance(10)
        self.assertTrue(pool.healthy(E1))
        self.reserve(pool)
        self.assertEqual(self.unhealthy, [E1])

    def test_a_probe_timeout_is_a_failure(self) -> None:
        """A probe with no answer within its deadline counts as failed."""
        self.answer_probes(E1)
        pool = self.pool([E1])
        self.http.route(E1 + PROBE_PATH, None)
        self.clock.advance(10)
        self.clock.advance(5)
        self.clock.advance(5)
        self.clock.advance(5)
        self.assertFalse(pool.healthy(E1))
        self.assertIn("probe", pool.status()[0]["last_error"])

    def test_a_connection_failure_of_a_real_call_counts_at_once(self) -> None:
        """connection_failed makes the engine unhealthy at once (and says so once); the next good probe heals it."""
        self.answer_probes(E1, E2)
        pool = self.pool([E1, E2])
        pool.connection_failed(E1)
        pool.connection_failed(E1)
        pool.connection_failed("unknown engine")
        self.assertEqual(self.unhealthy, [E1])
        self.assertEqual([self.reserve(pool, f"id:{n}").engine_id for n in range(3)], [E2] * 3)
        self.clock.advance(10)
        self.assertTrue(pool.healthy(E1))

    def test_an_engine_back_is_used_at_the_first_request(self) -> None:
        """With nothing eligible, a request probes unhealthy engines at once (at most once a second each) and uses one that answers."""
        self.answer_probes(E1)
        pool = self.pool([E1])
        pool.connection_failed(E1)
        self.http.refuse(E1 + PROBE_PATH)
        self.clock.advance(1)
        probes = len(self.http.sent(PROBE_PATH))
        self.refused(pool, "id:1")
        self.refused(pool, "id:2")
        self.assertEqual(len(self.http.sent(PROBE_PATH)), probes + 1)
        self.answer_probes(E1)
        self.clock.advance(1)
        self.assertEqual(self.reserve(pool, "id:3").engine_id, E1)

    def test_an_engine_down_from_the_start_is_never_chosen(self) -> None:
        """An engine whose probes are refused from the start takes no stream; the others take them all."""
        self.answer_probes(E1, E3)
        pool = self.pool()
        chosen = [self.reserve(pool, f"id:{n}").engine_id for n in range(6)]
        self.assertNotIn(E2, chosen)
        self.clock.advance(10)
        self.assertNotIn(E2, [self.reserve(pool, f"id:x{n}").engine_id for n in range(4)])
        self.assertEqual(pool.status()[1]["probe"], "unhealthy")


class SelectionTests(PoolHarness):
    def test_three_engines_six_channels_two_each(self) -> None:
        """Six streams on three equal engines: two on each, taken in rotation."""
        self.answer_probes(E1, E2, E3)
        pool = self.pool()
        chosen = []
        for n in range(6):
            reservation = self.reserve(pool, f"id:{n}")
            reservation.commit(session(n, reservation.engine_url))
            chosen.append(reservation.engine_id)
        self.assertEqual(chosen, [E1, E2, E3, E1, E2, E3])
        self.assertEqual([e["load"] for e in pool.status()], [2, 2, 2])

    def test_full_engines_give_503_and_no_engine_is_called(self) -> None:
        """Capacity 1 and two engines: a third stream gets 503 LIMIT with Retry-After; no engine is called."""
        self.answer_probes(E1, E2)
        pool = self.pool([E1, E2], capacity=1)
        first, second = self.reserve(pool, "id:1"), self.reserve(pool, "id:2")
        self.assertEqual({first.engine_id, second.engine_id}, {E1, E2})
        error = self.refused(pool, "id:3")
        self.assertEqual((error.status, error.kind, error.retry_after), (503, ErrorKind.LIMIT, 5))
        self.assertIn("2 full", error.message)
        self.assertEqual(sum(e.json_calls for engines in self.engines.values() for e in engines), 0)
        first.release("no data")
        self.assertEqual(self.reserve(pool, "id:3").engine_id, first.engine_id)

    def test_reservations_in_flight_count_as_load(self) -> None:
        """A reservation not yet committed counts, so concurrent streams spread out."""
        self.answer_probes(E1, E2)
        pool = self.pool([E1, E2])
        self.assertEqual([self.reserve(pool, f"id:{n}").engine_id for n in range(4)], [E1, E2, E1, E2])
        self.assertEqual([e["reservations"] for e in pool.status()], [2, 2])

    def test_exclude_and_only(self) -> None:
        """exclude skips engines (a failover away from one); only= reserves on that engine or fails."""
        self.answer_probes(E1, E2)
        pool = self.pool([E1, E2])
        self.assertEqual(self.reserve(pool, exclude=frozenset({E1})).engine_id, E2)
        self.assertEqual(self.reserve(pool, only=E2).engine_id, E2)
        self.assertFalse(pool.eligible(frozenset({E1, E2})))
        self.assertTrue(pool.eligible(frozenset({E1})))
        pool.connection_failed(E2)
        error = self.refused(pool, only=E2)
        self.assertIn(f"engine {E2}", error.message)

    def test_another_workers_load_counts(self) -> None:
        """Slots another worker holds in the shared ledger count as load, and are never exceeded."""
        self.answer_probes(E1, E2)
        other = self.pool([E1, E2], capacity=2, worker="w2")
        mine = self.pool([E1, E2], capacity=2, worker="w1")
        for n in range(2):
            self.reserve(other, f"id:o{n}", only=E1).commit(session(n))
        got = [self.reserve(mine, f"id:m{n}").engine_id for n in range(2)]
        self.assertEqual(got, [E2, E2])
        self.refused(mine, "id:m3")
        self.assertEqual(self.table.loads(), {E1: 2, E2: 2})

    def test_a_stale_load_is_corrected_by_the_ledger(self) -> None:
        """When the ledger refuses an engine this worker thought had room, the next engine is tried."""
        self.answer_probes(E1, E2)
        pool = self.pool([E1, E2], capacity=1)
        ledger = MemoryLedger(self.clock, self.table)
        real_loads = ledger.loads
        pool.ledger.loads = lambda: real_loads().addCallback(lambda _: {})  # type: ignore[method-assign]
        self.successResultOf(ledger.reserve(E1, "elsewhere", 1, 30.0))
        self.assertEqual(self.reserve(pool).engine_id, E2)
        self.assertEqual(pool.counters["ledger_full"], 1)


class ReservationTests(PoolHarness):
    def test_commit_and_release_move_the_counts(self) -> None:
        """Reserved counts as a reservation, committed as a session, released as nothing; release is idempotent."""
        self.answer_probes(E1)
        pool = self.pool([E1])
        r = self.reserve(pool)
        self.assertEqual((pool.status()[0]["reservations"], pool.status()[0]["sessions"]), (1, 0))
        r.commit(session(1))
        self.assertEqual((pool.status()[0]["reservations"], pool.status()[0]["sessions"]), (0, 1))
        r.commit(session(2))
        self.assertEqual(pool.status()[0]["sessions"], 1)
        r.release("stopped")
        r.release("stopped")
        self.assertEqual((pool.status()[0]["load"], self.table.loads()), (0, {}))

    def test_a_reservation_gives_the_engine_client(self) -> None:
        """The reservation carries the engine's client, its id and URL, the stream key and the worker."""
        self.answer_probes(E1)
        pool = self.pool([E1])
        r = self.reserve(pool, "infohash:cc")
        self.assertIs(r.engine, self.engine(E1))
        self.assertEqual((r.engine_id, r.engine_url, r.stream_key, r.worker_id), (E1, E1, "infohash:cc", "w1"))

    def test_committed_slots_are_refreshed_while_they_run(self) -> None:
        """A committed session's slot does not expire while it runs: the pool commits it again on a timer."""
        self.answer_probes(E1)
        pool = self.pool([E1])
        self.reserve(pool).commit(session(1))
        self.clock.advance(300)
        self.assertEqual(self.table.loads(), {E1: 1})

    def test_a_forgotten_reservation_expires(self) -> None:
        """A reservation never committed nor released frees its slot after the reservation ttl."""
        self.answer_probes(E1)
        pool = self.pool([E1], reservation_ttl=20.0)
        self.reserve(pool)
        self.clock.advance(20)
        self.assertEqual(self.table.loads(), {})

    def test_stop_fails_new_reservations_and_closes_clients(self) -> None:
        """After stop, reservations fail with STOPPED, nothing is probed any more, and every client is closed."""
        self.answer_probes(E1, E2)
        pool = self.pool([E1, E2])
        self.successResultOf(pool.stop())
        self.assertTrue(all(e.closed for engines in self.engines.values() for e in engines))
        self.assertEqual(self.refused(pool).kind, ErrorKind.STOPPED)
        probes = len(self.http.requests)
        self.clock.advance(60)
        self.assertEqual(len(self.http.requests), probes)

    def test_json_and_stop_calls_are_summed(self) -> None:
        """The pool's json_calls and stop_calls add up every engine client's."""
        self.answer_probes(E1, E2)
        pool = self.pool([E1, E2])
        self.engine(E1).json_calls, self.engine(E2).json_calls, self.engine(E2).stop_calls = 2, 3, 1
        self.assertEqual((pool.json_calls, pool.stop_calls), (5, 1))


class OrchestratorTests(PoolHarness):
    def setUp(self) -> None:
        super().setUp()
        self.answer_probes("http://a:1", "http://b:2", "http://c:3")

    def test_forwarded_wins_at_equal_load_and_unhealthy_or_draining_are_skipped(self) -> None:
        """The forwarded engine is chosen at equal load; the orchestrator's unhealthy and draining engines never."""
        self.orchestrator_list(item("a", 1), item("b", 2, forwarded=True), item("c", 3, health_status="unknown"),
                               item("d", 4, draining=True))
        self.answer_probes("http://d:4")
        pool = self.pool(orchestrator=True)
        got = [self.reserve(pool, f"id:{n}").engine_id for n in range(4)]
        self.assertEqual(got, ["b", "a", "b", "a"])

    def test_orchestrator_stream_count_is_load(self) -> None:
        """The orchestrator's stream_count counts as load (other proxies' streams), capped by its capacity."""
        self.orchestrator_list(item("a", 1, stream_count=2, forwarded=True), item("b", 2, stream_count=0),
                               capacity=2)
        pool = self.pool(orchestrator=True)
        self.assertEqual(pool.capacity, 2)
        self.assertEqual([self.reserve(pool, f"id:{n}").engine_id for n in range(2)], ["b", "b"])
        self.refused(pool, "id:3")

    def test_max_streams_flag_wins_over_the_orchestrator(self) -> None:
        """--engine-max-streams, when given (0 included), wins over max_streams_per_engine."""
        self.orchestrator_list(item("a", 1), capacity=1)
        pool = self.pool(orchestrator=True, capacity=0)
        self.assertEqual(pool.capacity, 0)
        self.assertEqual([self.reserve(pool, f"id:{n}").engine_id for n in range(3)], ["a"] * 3)

    def test_events_for_a_session_and_a_move(self) -> None:
        """stream_started once per committed session, stream_ended after its release; on a move ended comes first."""
        self.orchestrator_list(item("a", 1), item("b", 2))
        self.http.route(f"{ORCH}/api/v1/events/stream_started", (200, {"id": "ih|ps1"}))
        self.http.route(f"{ORCH}/api/v1/events/stream_ended", (200, {"updated": True}))
        pool = self.pool(orchestrator=True, worker="host:42")
        first = self.reserve(pool, "id:c0ffee")
        self.assertEqual(self.events(), [])
        first.commit(session(1, "http://a:1"))
        moved = self.reserve(pool, "id:c0ffee", exclude=frozenset({"a"}))
        first.release("engine a failed")
        moved.commit(session(2, "http://b:2"))
        moved.release("stopped")
        self.assertEqual([name for name, _ in self.events()],
                         ["stream_started", "stream_ended", "stream_started", "stream_ended"])
        started, ended = self.events()[0][1], self.events()[1][1]
        self.assertEqual(started, {
            "content_id": "c0ffee", "container_id": "a", "engine_id": "a", "engine": {"host": "a", "port": 1},
            "stream": {"key_type": "content_id", "key": "c0ffee"},
            "session": {"playback_session_id": "ps1", "stat_url": "http://a:1/ace/stat/ih/1",
                        "command_url": "http://a:1/ace/cmd/ih/1", "is_live": 1},
            "labels": {"source": "acetwist", "worker": "host:42"},
        })
        self.assertEqual(ended, {"content_id": "c0ffee", "container_id": "a", "reason": "engine a failed",
                                 "stream_id": "ih|ps1"})
        self.assertEqual(self.events()[2][1]["container_id"], "b")
        self.assertEqual({r.headers["X-API-Key"] for r in self.http.sent("/events/")}, {"k"})

    def test_no_events_for_a_reservation_never_committed(self) -> None:
        """A reservation released before its commit (the engine refused) sends nothing; an infohash key says so."""
        self.orchestrator_list(item("a", 1))
        self.http.route(f"{ORCH}/api/v1/events/", (200, {}))
        pool = self.pool(orchestrator=True)
        self.reserve(pool).release("engine refused")
        self.assertEqual(self.events(), [])
        self.reserve(pool, "infohash:beef").commit(session(1, "http://a:1"))
        self.assertEqual(self.events()[0][1]["stream"], {"key_type": "infohash", "key": "beef"})

    def test_an_engine_that_leaves_keeps_its_channels(self) -> None:
        """An engine gone from the list takes no new stream; its live session keeps its client until released."""
        self.orchestrator_list(item("a", 1), item("b", 2))
        pool = self.pool(orchestrator=True)
        live = self.reserve(pool, only="a")
        live.commit(session(1, "http://a:1"))
        self.orchestrator_list(item("b", 2))
        self.clock.advance(5)
        self.assertEqual([self.reserve(pool, f"id:{n}").engine_id for n in range(2)], ["b", "b"])
        status = {e["id"]: e for e in pool.status()}
        self.assertFalse(status["a"]["listed"])
        self.assertEqual(status["a"]["sessions"], 1)
        self.assertFalse(self.engine("http://a:1").closed)
        live.release("stopped")
        self.assertTrue(self.engine("http://a:1").closed)
        self.assertNotIn("a", [e["id"] for e in pool.status()])

    def test_an_engine_listed_again_is_used_again(self) -> None:
        """An engine that left the list while in use and comes back is eligible again, with the same client."""
        self.orchestrator_list(item("a", 1))
        pool = self.pool(orchestrator=True)
        live = self.reserve(pool)
        self.orchestrator_list()
        self.clock.advance(5)
        self.assertFalse(pool.eligible())
        self.orchestrator_list(item("a", 1))
        self.clock.advance(5)
        self.assertTrue(pool.eligible())
        self.assertIs(self.reserve(pool).engine, live.engine)

    def test_orchestrator_health_turning_bad_is_reported(self) -> None:
        """When the orchestrator says an engine is unhealthy, it is skipped and the unhealthy callback fires."""
        self.orchestrator_list(item("a", 1))
        pool = self.pool(orchestrator=True)
        self.orchestrator_list(item("a", 1, health_status="unhealthy"))
        self.clock.advance(5)
        self.assertEqual(self.unhealthy, ["a"])
        self.assertFalse(pool.healthy("a"))
        self.assertEqual(pool.status()[0]["orchestrator_health"], "unhealthy")

    def test_an_outage_keeps_the_last_list_and_live_channels(self) -> None:
        """While the orchestrator cannot be read, the last list is used, live reservations stay, status says stale."""
        self.orchestrator_list(item("a", 1), item("b", 2))
        pool = self.pool(orchestrator=True)
        live = self.reserve(pool)
        live.commit(session(1, "http://a:1"))
        self.http.refuse(f"{ORCH}/api/v1/engines")
        self.clock.advance(15)
        self.assertTrue(pool.source_status()["stale"])
        self.assertEqual(sorted(e["id"] for e in pool.status()), ["a", "b"])
        self.assertEqual(self.reserve(pool, "id:2").engine_id, "b")
        self.assertEqual(live.state, "committed")

    def test_a_moved_engine_gets_a_new_client(self) -> None:
        """When an engine's address changes, new streams use a new client at the new address; the old one is closed on stop."""
        self.orchestrator_list(item("a", 1))
        pool = self.pool(orchestrator=True)
        old = self.reserve(pool)
        self.answer_probes("http://a2:9")
        self.orchestrator_list(item("a2", 9) | {"container_id": "a"})
        self.clock.advance(5)
        new = self.reserve(pool, "id:2")
        self.assertEqual(new.engine.base_url, "http://a2:9")
        self.assertEqual(old.engine.base_url, "http://a:1")
        self.successResultOf(pool.stop())
        self.assertTrue(self.engines["http://a:1"][0].closed)

    def test_stop_flushes_events(self) -> None:
        """Events queued when the pool stops are still sent (within a deadline)."""
        self.orchestrator_list(item("a", 1))
        self.http.route(f"{ORCH}/api/v1/events/", (200, {}))
        pool = self.pool(orchestrator=True)
        r = self.reserve(pool)
        r.commit(session(1, "http://a:1"))
        r.release("shutting down")
        self.successResultOf(pool.stop())
        self.assertEqual([n for n, _ in self.events()], ["stream_started", "stream_ended"])


class StatusTests(PoolHarness):
    def test_status_fields(self) -> None:
        """status() gives per engine id, url, health, forwarding, draining, load, capacity, reservations, errors, probe time."""
        self.answer_probes(E1)
        self.clock.advance(1000)
        pool = self.pool([E1], capacity=3)
        self.reserve(pool)
        [status] = pool.status()
        self.assertEqual(status, {
            "id": E1, "url": E1, "name": "", "healthy": True, "probe": "healthy", "orchestrator_health": "healthy",
            "forwarded": False, "draining": False, "listed": True, "load": 1, "capacity": 3, "sessions": 0,
            "reservations": 1, "cluster_load": 1, "stream_count": 0, "last_error": None, "last_probe": 1000.0,
            "last_chosen": 1000.0,
        })
        self.assertEqual(pool.source_status()["kind"], "static")
        self.assertEqual(pool.source_status()["eligible"], 1)


class MakePoolTests(SynchronousTestCase):
    def test_static_engines_and_memory_ledger(self) -> None:
        """make_pool with --engine URLs lists them by URL and counts load in the memory cluster's shared ledger."""
        clock = Clock()
        cluster = MemoryCluster(clock)
        settings = Settings.defaults(engines=(E1, E2), engine_max_streams=1)
        http = FakeHTTP()
        http.route(E1 + PROBE_PATH, (200, VERSION))
        http.route(E2 + PROBE_PATH, (200, VERSION))
        pools = [make_pool(settings, clock, MemoryCoordinator(w, clock, cluster), http=http, make_client=Engine)
                 for w in ("w1", "w2")]
        for pool in pools:
            pool.start()
            self.addCleanup(pool.stop)
        self.assertEqual([e["id"] for e in pools[0].status()], [E1, E2])
        got = [self.successResultOf(pool.reserve(f"id:{n}")).engine_id for n, pool in enumerate(pools)]
        self.assertEqual(sorted(got), [E1, E2])
        self.failureResultOf(pools[0].reserve("id:x"), EngineError)

    def test_orchestrator_settings(self) -> None:
        """make_pool with --orchestrator reads its list with the key in X-API-Key and Bearer, and sends events."""
        clock = Clock()
        http = FakeHTTP()
        http.route(f"{ORCH}/api/v1/engines", (200, [item("a", 1)]))
        http.route(f"{ORCH}/api/v1/events/", (200, {}))
        http.route("http://a:1" + PROBE_PATH, (200, VERSION))
        settings = Settings.defaults(orchestrator=ORCH, orchestrator_key="sekret", engines=())
        pool = make_pool(settings, clock, MemoryCoordinator("w", clock), http=http, make_client=Engine)
        pool.start()
        self.addCleanup(pool.stop)
        sent = http.sent("/api/v1/engines")[0]
        self.assertEqual((sent.headers["X-API-Key"], sent.headers["Authorization"]), ("sekret", "Bearer sekret"))
        self.assertNotIn("X-API-Key", http.sent(PROBE_PATH)[0].headers)
        r = self.successResultOf(pool.reserve("id:1"))
        r.commit(session(1, "http://a:1"))
        self.assertEqual(len(http.sent("/events/stream_started")), 1)

    def test_trust_new_engines(self) -> None:
        """With trust_new_engines a reservation does not wait for a first probe (for tests without HTTP)."""
        clock = Clock()
        http = FakeHTTP()
        http.route(E1, None)
        pool = make_pool(Settings.defaults(engine=E1), clock, MemoryCoordinator("w", clock), http=http,
                         make_client=Engine, trust_new_engines=True)
        pool.start()
        self.addCleanup(pool.stop)
        self.assertEqual(self.successResultOf(pool.reserve("id:1")).engine_id, E1)
        self.assertIsInstance(self.successResultOf(pool.reserve("id:2")).engine, Engine)


def _response(code: int) -> Any:
    from acetwist.engines.testing import FakeResponse

    return FakeResponse(code, b"{}")


class MetricsTests(PoolHarness):
    def test_per_engine_gauges(self) -> None:
        """/metrics gets per-engine gauges labelled by engine id (credentials removed) and the list's staleness."""
        from prometheus_client import CollectorRegistry, generate_latest

        from acetwist.metrics import engine_metrics

        secret = "http://user:pw@e9:6878"
        self.answer_probes(E1, secret)
        pool = self.pool([E1, secret], capacity=4)
        self.reserve(pool, only=E1).commit(session(1))

        class Collector:
            def collect(self) -> Any:
                return engine_metrics(pool)

        registry = CollectorRegistry(auto_describe=False)
        registry.register(Collector())  # type: ignore[arg-type]
        text = generate_latest(registry).decode()
        self.assertIn(f'acetwist_engine_sessions{{engine="{E1}"}} 1.0', text)
        self.assertIn(f'acetwist_engine_capacity{{engine="{E1}"}} 4.0', text)
        self.assertIn('acetwist_engine_healthy{engine="http://e9:6878"} 1.0', text)
        self.assertIn("acetwist_engine_list_stale 0.0", text)
        self.assertNotIn("pw@", text)
