"""Tests for the orchestrator look-alike, in memory on a task.Clock: list shapes, switches, key, events and stream counts, outages, control API."""

import json
from typing import Any, Dict, List, Optional, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from acetwist.sim.orchestrator import Orchestrator, OrchestratorError
from acetwist.sim.orchestrator_web import OrchestratorServer
from acetwist.sim.testing import MemoryClient

KEYS = {"container_id", "container_name", "host", "port", "forwarded", "health_status", "draining", "stream_count"}


def started(container_id: Optional[str], content_id: str = "c1", session: str = "s1") -> Dict[str, Any]:
    """A stream_started body as acetwist sends it."""
    body: Dict[str, Any] = {
        "content_id": content_id, "engine_id": container_id, "engine": {"host": "127.0.0.1", "port": 6878},
        "stream": {"key_type": "content_id", "key": content_id},
        "session": {"playback_session_id": session, "stat_url": "http://x/ace/stat/a/b",
                    "command_url": "http://x/ace/cmd/a/b", "is_live": 1},
        "labels": {"source": "acetwist", "worker": "w1"}}
    if container_id is not None:
        body["container_id"] = container_id
    return body


class OrchestratorTestCase(SynchronousTestCase):
    key: Optional[str] = None

    def setUp(self) -> None:
        self.clock = Clock()
        self.state = Orchestrator(self.clock, max_streams_per_engine=2, api_key=self.key)
        self.state.add_engine("e1", "127.0.0.1", 7001, container_name="acestream-1")
        self.state.add_engine("e2", "127.0.0.1", 7002, container_name="acestream-2", forwarded=True)
        self.server = OrchestratorServer(self.state, self.clock)
        self.listening: List[str] = []
        self.server.set_listener(self._pause, self._resume)
        self.addCleanup(self.server.shutdown)

    def _pause(self) -> None:
        self.listening.append("paused")

    def _resume(self) -> None:
        self.listening.append("resumed")

    def send(self, method: str, path: str, body: Any = None, headers: Optional[Dict[str, str]] = None,
             advance: bool = True) -> MemoryClient:
        raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        client = MemoryClient(self.server.site, self.clock, host="127.0.0.1:8000").request(method, path, raw, headers)
        if advance:
            self.clock.advance(0)
        return client

    def call(self, method: str, path: str, body: Any = None,
             headers: Optional[Dict[str, str]] = None) -> Tuple[Optional[int], Any]:
        response = self.send(method, path, body, headers).response()
        return response.status, json.loads(response.body) if response.body else None


class ListTests(OrchestratorTestCase):
    def test_v1_is_wrapped_and_legacy_is_bare(self) -> None:
        """/api/v1/engines answers {"engines": [...], "total": n} and /engines a bare array of the same records."""
        status, wrapped = self.call("GET", "/api/v1/engines")
        self.assertEqual((status, wrapped["total"]), (200, 2))
        status, bare = self.call("GET", "/engines")
        self.assertEqual(status, 200)
        self.assertEqual(bare, wrapped["engines"])
        first, second = bare
        self.assertLessEqual(KEYS, set(first))
        self.assertIn("labels", first)  # extra fields a client must ignore
        self.assertEqual((first["container_id"], first["container_name"], first["host"], first["port"]),
                         ("e1", "acestream-1", "127.0.0.1", 7001))
        self.assertEqual((first["forwarded"], first["health_status"], first["draining"], first["stream_count"]),
                         (False, "healthy", False, 0))
        self.assertTrue(second["forwarded"])
        self.assertEqual((self.state.counters["v1_engines_gets"], self.state.counters["legacy_engines_gets"]), (1, 1))

    def test_switches_make_a_path_404_or_change_its_shape(self) -> None:
        """v1_engines=404 makes /api/v1/engines a 404 while /engines still lists; each path's shape can be swapped."""
        self.state.configure(v1_engines="404")
        self.assertEqual(self.call("GET", "/api/v1/engines")[0], 404)
        self.assertEqual(len(self.call("GET", "/engines")[1]), 2)
        self.state.configure(v1_engines="bare", legacy_engines="wrapped")
        self.assertIsInstance(self.call("GET", "/api/v1/engines")[1], list)
        self.assertEqual(self.call("GET", "/engines")[1]["total"], 2)

    def test_engine_fields_are_settable_and_hidden_engines_are_not_listed(self) -> None:
        """forwarded, health_status and draining show in the list; a hidden record is left out until shown again."""
        self.state.set_engine("e1", forwarded=True, health_status="unhealthy", draining=True)
        record = self.call("GET", "/engines")[1][0]
        self.assertEqual((record["forwarded"], record["health_status"], record["draining"]), (True, "unhealthy", True))
        self.state.set_engine("e2", listed=False)
        self.assertEqual([r["container_id"] for r in self.call("GET", "/api/v1/engines")[1]["engines"]], ["e1"])
        self.state.set_engine("e2", listed=True)
        self.assertEqual(self.call("GET", "/api/v1/engines")[1]["total"], 2)

    def test_raw_records_are_listed_verbatim(self) -> None:
        """Raw records (a malformed one, say) follow the engine records as they are."""
        self.state.raw_records = [{"container_id": "broken", "port": 1}]
        records = self.call("GET", "/engines")[1]
        self.assertEqual(records[-1], {"container_id": "broken", "port": 1})

    def test_proxy_config(self) -> None:
        """/api/v1/proxy/config gives max_streams_per_engine, which can be changed."""
        self.assertEqual(self.call("GET", "/api/v1/proxy/config")[1]["max_streams_per_engine"], 2)
        self.state.configure(max_streams_per_engine=0)
        self.assertEqual(self.call("GET", "/api/v1/proxy/config")[1]["max_streams_per_engine"], 0)

    def test_unknown_path_and_wrong_method(self) -> None:
        """An unknown API path is a 404 and a wrong method a 405."""
        self.assertEqual(self.call("GET", "/api/v1/nothing")[0], 404)
        self.assertEqual(self.call("POST", "/api/v1/engines")[0], 405)
        self.assertEqual(self.call("GET", "/api/v1/events/stream_started")[0], 405)


class KeyTests(OrchestratorTestCase):
    key = "s3cret"

    def test_the_key_is_required_when_configured(self) -> None:
        """With a key, API requests without it or with a wrong one get 401; X-API-Key or a Bearer token passes."""
        for path in ("/api/v1/engines", "/engines", "/api/v1/proxy/config"):
            self.assertEqual(self.call("GET", path)[0], 401, path)
            self.assertEqual(self.call("GET", path, headers={"X-API-Key": "wrong"})[0], 401, path)
            self.assertEqual(self.call("GET", path, headers={"X-API-Key": "s3cret"})[0], 200, path)
        self.assertEqual(self.call("GET", "/engines", headers={"Authorization": "Bearer s3cret"})[0], 200)
        self.assertEqual(self.call("POST", "/api/v1/events/stream_started", started("e1"))[0], 401)
        self.assertEqual(self.state.events, [])
        self.assertEqual(self.state.counters["unauthorized"], 7)
        self.assertEqual(self.call("GET", "/health")[0], 200)


class EventTests(OrchestratorTestCase):
    def post(self, kind: str, body: Any) -> Tuple[Optional[int], Any]:
        return self.call("POST", f"/api/v1/events/{kind}", body)

    def counts(self) -> Dict[str, int]:
        return {r["container_id"]: r["stream_count"] for r in self.call("GET", "/engines")[1]}

    def test_events_are_recorded_in_order_with_their_bodies(self) -> None:
        """Each event is kept in order, body as sent, readable from Python and from the control API."""
        self.clock.advance(5)
        self.post("stream_started", started("e1"))
        self.post("stream_ended", {"content_id": "c1", "container_id": "e1", "reason": "stopped"})
        self.assertEqual([e.kind for e in self.state.events], ["stream_started", "stream_ended"])
        self.assertEqual(self.state.events_of("stream_started"), [started("e1")])
        self.assertEqual(self.state.events[0].time, 5)
        events = self.call("GET", "/_sim/orchestrator/events?kind=stream_ended")[1]["events"]
        self.assertEqual([e["body"]["reason"] for e in events], ["stopped"])
        self.assertEqual(self.call("DELETE", "/_sim/orchestrator/events")[1], {"cleared": 2})
        self.assertEqual(self.state.events, [])

    def test_stream_count_follows_the_events_per_container(self) -> None:
        """stream_started adds one to its container's stream_count (not idempotent); stream_ended takes one away."""
        reply = self.post("stream_started", started("e1", "c1", "s1"))[1]
        self.assertEqual((reply["id"], reply["container_id"], reply["status"]), ("c1|s1", "e1", "started"))
        self.post("stream_started", started("e1", "c1", "s1"))
        self.post("stream_started", started("e2", "c2", "s2"))
        self.assertEqual(self.counts(), {"e1": 2, "e2": 1})
        status, reply = self.post("stream_ended", {"content_id": "c2", "container_id": "e2", "reason": "x"})
        self.assertEqual((status, reply["updated"], reply["stream"]["end_reason"]), (200, True, "x"))
        self.assertEqual(self.counts(), {"e1": 2, "e2": 0})
        self.assertFalse(self.post("stream_ended", {"content_id": "c2", "container_id": "e2"})[1]["updated"])
        self.assertEqual(self.state.stream_count("e1"), 2)

    def test_without_container_id_nothing_is_counted(self) -> None:
        """Events without a container_id are recorded but change no engine's stream_count."""
        self.post("stream_started", started(None))
        self.post("stream_started", started("e1"))
        self.assertFalse(self.post("stream_ended", {"content_id": "c1"})[1]["updated"])
        self.assertEqual(self.counts(), {"e1": 1, "e2": 0})
        self.assertEqual(len(self.state.events), 3)

    def test_stream_ended_picks_the_matching_content_else_the_latest(self) -> None:
        """stream_ended ends the container's stream of that content_id, or its latest stream when none matches."""
        self.post("stream_started", started("e1", "c1", "s1"))
        self.post("stream_started", started("e1", "c2", "s2"))
        self.assertEqual(self.post("stream_ended", {"content_id": "c1", "container_id": "e1"})[1]["stream"]["key"], "c1")
        self.assertEqual(self.post("stream_ended", {"container_id": "e1"})[1]["stream"]["key"], "c2")
        self.assertEqual(self.state.stream_count("e1"), 0)

    def test_a_fixed_stream_count_overrides_the_events(self) -> None:
        """A stream_count set on a record is what the list says, until it is set back to None."""
        self.post("stream_started", started("e1"))
        self.state.set_engine("e1", stream_count=5)
        self.assertEqual(self.counts()["e1"], 5)
        self.state.set_engine("e1", stream_count=None)
        self.assertEqual(self.counts()["e1"], 1)

    def test_a_body_that_is_not_an_object_is_rejected(self) -> None:
        """An event body that is not a JSON object gets 422 and is not recorded."""
        for body in (b"{nope", b"[1]", b"", b"\"x\""):
            self.assertEqual(self.post("stream_started", body)[0], 422, body)
        self.assertEqual((self.state.events, self.state.counters["events_rejected"]), ([], 4))

    def test_legacy_event_paths(self) -> None:
        """The Python-era /events/... paths are recorded too."""
        self.assertEqual(self.post("stream_started", started("e1"))[0], 200)
        self.assertEqual(self.call("POST", "/events/stream_ended", {"container_id": "e1"})[0], 200)
        self.assertEqual(self.state.counters["stream_ended"], 1)


class OutageTests(OrchestratorTestCase):
    def test_500_outage(self) -> None:
        """A 500 outage answers every API path with 500; the control API still answers; it ends by itself after ms."""
        self.state.set_outage("500", ms=2000)
        self.assertEqual(self.call("GET", "/api/v1/engines")[0], 500)
        self.assertEqual(self.call("POST", "/api/v1/events/stream_started", started("e1"))[0], 500)
        self.assertEqual(self.state.events, [])
        self.assertEqual(self.call("GET", "/_sim/orchestrator/outage")[1], {"outage": "500"})
        self.clock.advance(2)
        self.assertIsNone(self.state.outage)
        self.assertEqual(self.call("GET", "/api/v1/engines")[0], 200)

    def test_hang_outage_holds_requests_until_it_ends(self) -> None:
        """During a hang outage requests get no answer; when it ends they are answered normally."""
        self.state.set_outage("hang")
        client = self.send("GET", "/api/v1/engines")
        self.clock.advance(30)
        self.assertIsNone(client.response().status)
        self.assertEqual(self.call("DELETE", "/_sim/orchestrator/outage")[1], {"outage": None})
        self.assertEqual(client.response().status, 200)
        self.assertEqual(json.loads(client.response().body)["total"], 2)

    def test_refuse_outage_closes_the_port_and_reopens_it(self) -> None:
        """A refuse outage stops listening and cuts open connections; when it ends the port listens again."""
        held = self.send("GET", "/api/v1/engines", advance=False)
        self.state.set_outage("refuse", ms=1000)
        self.clock.advance(0)
        self.assertEqual(self.listening, ["paused"])
        self.assertTrue(held.transport.aborted)
        self.clock.advance(1)
        self.assertEqual(self.listening, ["paused", "resumed"])

    def test_shutdown_cuts_held_requests(self) -> None:
        """Shutting down resets requests held by a hang outage and fires once every connection is gone."""
        self.state.set_outage("hang", ms=60_000)
        client = self.send("GET", "/engines")
        done: Deferred[None] = self.server.shutdown()
        self.clock.advance(0)
        self.assertTrue(client.transport.aborted)
        self.assertIsNone(self.successResultOf(done))
        self.assertEqual(self.clock.getDelayedCalls(), [])


class ControlTests(OrchestratorTestCase):
    def test_change_add_and_remove_engines(self) -> None:
        """POST changes records (JSON or query), adds one given host and port; DELETE removes one."""
        status, document = self.call("POST", "/_sim/orchestrator/engines",
                                     [{"container_id": "e1", "draining": True, "health_status": "unknown"},
                                      {"container_id": "e3", "host": "10.0.0.3", "port": 7003, "forwarded": "yes"}])
        self.assertEqual(status, 200)
        self.assertEqual([e["container_id"] for e in document["engines"]], ["e1", "e2", "e3"])
        self.assertTrue(self.state.engine("e1").draining)
        self.assertEqual(self.state.engine("e1").health_status, "unknown")
        self.assertTrue(self.state.engine("e3").forwarded)
        self.call("POST", "/_sim/orchestrator/engines?container_id=e2&listed=false")
        self.assertFalse(self.state.engine("e2").listed)
        self.assertEqual(self.call("DELETE", "/_sim/orchestrator/engines?container_id=e3")[0], 200)
        self.assertEqual([r.container_id for r in self.state.engines], ["e1", "e2"])

    def test_settings_outage_counters_and_index(self) -> None:
        """Settings, outage, counters and the index are readable and settable through the control API."""
        status, settings = self.call("POST", "/_sim/orchestrator/settings",
                                     {"v1_engines": "404", "max_streams_per_engine": 3})
        self.assertEqual((status, settings["v1_engines"], settings["max_streams_per_engine"]), (200, "404", 3))
        self.assertEqual(self.call("POST", "/_sim/orchestrator/outage?mode=500&ms=100")[1], {"outage": "500"})
        self.assertEqual(self.call("GET", "/api/v1/proxy/config")[0], 500)
        self.assertEqual(self.call("GET", "/_sim/orchestrator/counters")[1]["outage_answers"], 1)
        self.assertEqual(self.call("DELETE", "/_sim/orchestrator/counters")[1]["outage_answers"], 0)
        index = self.call("GET", "/_sim/orchestrator")[1]
        self.assertEqual(index["settings"]["outage"], "500")
        self.assertIn("POST /_sim/orchestrator/engines", index["endpoints"])
        self.assertEqual(self.call("PUT", "/_sim/orchestrator/raw_records", [{"a": 1}])[1], {"raw_records": [{"a": 1}]})
        self.assertEqual(self.call("GET", "/_sim/orchestrator/streams")[1], {"streams": []})

    def test_bad_control_input_is_a_400_and_changes_nothing(self) -> None:
        """Malformed or invalid control input gets a 400 that says why, and nothing changes."""
        cases = [
            ("POST", "/_sim/orchestrator/engines", b"{nope"),
            ("POST", "/_sim/orchestrator/engines", None),
            ("POST", "/_sim/orchestrator/engines", [1]),
            ("POST", "/_sim/orchestrator/engines", {"draining": True}),
            ("POST", "/_sim/orchestrator/engines", {"container_id": "nope", "draining": True}),
            ("POST", "/_sim/orchestrator/engines", {"container_id": "e1", "draining": "maybe"}),
            ("POST", "/_sim/orchestrator/engines", {"container_id": "e1", "health_status": "fine"}),
            ("POST", "/_sim/orchestrator/engines", {"container_id": "e1", "colour": "red"}),
            ("POST", "/_sim/orchestrator/engines", {"container_id": "e1", "stream_count": -1}),
            ("POST", "/_sim/orchestrator/engines", {"container_id": "e9", "host": "h", "port": 70000}),
            ("POST", "/_sim/orchestrator/engines", [{"container_id": "e1", "draining": True},
                                                    {"container_id": "e2", "forwarded": 3}]),
            ("DELETE", "/_sim/orchestrator/engines?container_id=nope", None),
            ("DELETE", "/_sim/orchestrator/engines", None),
            ("PUT", "/_sim/orchestrator/raw_records", {"a": 1}),
            ("POST", "/_sim/orchestrator/settings", {"v1_engines": "sideways"}),
            ("POST", "/_sim/orchestrator/settings", {"max_streams_per_engine": -1}),
            ("POST", "/_sim/orchestrator/settings", {"colour": "red"}),
            ("POST", "/_sim/orchestrator/settings", None),
            ("POST", "/_sim/orchestrator/outage?mode=sideways", None),
            ("POST", "/_sim/orchestrator/outage?mode=500&ms=0", None),
            ("POST", "/_sim/orchestrator/outage", None),
            ("GET", "/_sim/orchestrator/events?kind=other", None),
            ("POST", "/_sim/orchestrator/engines?container_id=e1&container_id=e2", None),
        ]
        for method, path, body in cases:
            status, document = self.call(method, path, body)
            self.assertEqual(status, 400, (method, path, body, document))
            self.assertTrue(document["error"], (path, body))
        self.assertEqual([(r.container_id, r.draining, r.forwarded, r.health_status) for r in self.state.engines],
                         [("e1", False, False, "healthy"), ("e2", False, True, "healthy")])
        self.assertEqual(self.state.settings()["v1_engines"], "wrapped")
        self.assertIsNone(self.state.outage)
        self.assertEqual(self.call("GET", "/_sim/orchestrator/nothing")[0], 404)
        self.assertEqual(self.call("PATCH", "/_sim/orchestrator/engines")[0], 405)

    def test_python_api_checks_its_input(self) -> None:
        """The Python API raises OrchestratorError (a ValueError) for bad input."""
        self.assertRaises(OrchestratorError, self.state.set_engine, "e1", health_status="great")
        self.assertRaises(OrchestratorError, self.state.set_engine, "e9", draining=True)
        self.assertRaises(OrchestratorError, self.state.add_engine, "e1", "h", 1)
        self.assertRaises(OrchestratorError, self.state.set_outage, "down")
        self.assertRaises(OrchestratorError, self.state.set_outage, None, 100)
        self.assertRaises(OrchestratorError, self.state.configure, legacy_engines="gone")
        self.assertRaises(OrchestratorError, self.state.receive, "stream_started", [])
