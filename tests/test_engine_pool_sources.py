"""Where the engine pool's engines come from: the orchestrator's list shapes, its refresh, its outages."""

from __future__ import annotations

import json
from typing import Any, List

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request

from acetwist.engines.api import EngineRecord
from acetwist.engines.http import JsonHTTP
from acetwist.engines.sources import OrchestratorSource, StaticSource, engine_url, parse_engine_list
from acetwist.engines.testing import FakeHTTP

ORCH = "http://orch:8000"


def item(cid: str, port: int = 19000, **fields: Any) -> dict:
    base = {"container_id": cid, "container_name": f"acestream-{cid}", "host": "gluetun", "port": port,
            "forwarded": False, "health_status": "healthy", "draining": False, "stream_count": 0,
            "labels": {"x": "y"}, "vpn_container": "gluetun"}
    base.update(fields)
    return base


class ParseTests(SynchronousTestCase):
    def test_bare_array_and_wrapped_shapes(self) -> None:
        """A bare JSON array and {"engines": [...], "total": n} give the same records; other fields are ignored."""
        items = [item("a", forwarded=True, stream_count=2), item("b", 19001, health_status="unknown",
                                                                draining=True)]
        bare, problems = parse_engine_list(items)
        wrapped, _ = parse_engine_list({"engines": items, "total": 2})
        self.assertEqual(bare, wrapped)
        self.assertEqual(problems, [])
        self.assertEqual(bare[0], EngineRecord(id="a", url="http://gluetun:19000", name="acestream-a",
                                               forwarded=True, orchestrator_health="healthy", draining=False,
                                               stream_count=2))
        self.assertEqual((bare[1].orchestrator_health, bare[1].draining), ("unknown", True))

    def test_records_missing_identity_are_skipped_with_a_reason(self) -> None:
        """A record without container_id, host or a usable port is skipped, and so is a repeated id."""
        items = [item("a"), {"host": "h", "port": 1}, item("", 2), {"container_id": "c", "port": 1},
                 item("d", port="x"), item("e", port=70000), item("a", 19005), "junk"]
        records, problems = parse_engine_list(items)
        self.assertEqual([r.id for r in records], ["a"])
        self.assertEqual(len(problems), 7)

    def test_legacy_fields(self) -> None:
        """Without stream_count the length of streams is the count; a missing health is unknown; a numeric port string works."""
        legacy = {"container_id": "a", "host": "10.0.0.5", "port": "19000", "streams": ["x|1", "y|2"]}
        [record], _ = parse_engine_list([legacy])
        self.assertEqual((record.stream_count, record.orchestrator_health, record.url),
                         (2, "unknown", "http://10.0.0.5:19000"))

    def test_other_documents_are_refused(self) -> None:
        """A document that is neither shape raises ValueError."""
        for document in ({"error": "x"}, "text", None, {"engines": {}}):
            self.assertRaises(ValueError, parse_engine_list, document)

    def test_ipv6_hosts_get_brackets(self) -> None:
        """An IPv6 host is bracketed in the engine URL."""
        self.assertEqual(engine_url("::1", 6878), "http://[::1]:6878")

    def test_static_source_ids_are_urls(self) -> None:
        """A static list's engines are identified by their URLs and are healthy as far as the list can tell."""
        got: List[List[EngineRecord]] = []
        StaticSource(["http://a:1", "http://b:2"]).start(got.append)
        self.assertEqual([(r.id, r.url, r.orchestrator_health) for r in got[0]],
                         [("http://a:1", "http://a:1", "healthy"), ("http://b:2", "http://b:2", "healthy")])


class OrchestratorSourceTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.http = FakeHTTP()
        self.lists: List[List[EngineRecord]] = []
        self.source = OrchestratorSource(ORCH, JsonHTTP(self.http, self.clock, {"X-API-Key": "k"}), self.clock, 5.0)

    def start(self) -> None:
        self.source.start(self.lists.append)
        self.addCleanup(self.source.stop)

    def test_reads_the_list_and_capacity_every_interval(self) -> None:
        """The list and max_streams_per_engine are read at start and every interval, with the API key."""
        self.http.route(f"{ORCH}/api/v1/engines", (200, [item("a")]))
        self.http.route(f"{ORCH}/api/v1/proxy/config", (200, {"max_streams_per_engine": 3, "other": 1}))
        self.start()
        self.assertEqual([[r.id for r in got] for got in self.lists], [["a"]])
        self.assertEqual(self.source.capacity, 3)
        self.http.route(f"{ORCH}/api/v1/engines", (200, {"engines": [item("a"), item("b", 19001)], "total": 2}))
        self.clock.advance(5)
        self.assertEqual([r.id for r in self.lists[-1]], ["a", "b"])
        self.assertEqual({r.headers.get("X-API-Key") for r in self.http.requests}, {"k"})
        self.assertEqual(self.source.events_base, f"{ORCH}/api/v1/events/")

    def test_falls_back_to_the_legacy_path_on_404(self) -> None:
        """When /api/v1/engines is 404 the list comes from /engines, and events go under /events/."""
        self.http.route(f"{ORCH}/api/v1/engines", (404, {"detail": "Not Found"}))
        self.http.route(f"{ORCH}/engines", (200, [item("a")]))
        self.http.route(f"{ORCH}/api/v1/proxy/config", (404, {"detail": "Not Found"}))
        self.start()
        self.assertEqual([r.id for r in self.lists[-1]], ["a"])
        self.assertEqual(self.source.path, "/engines")
        self.assertEqual(self.source.events_base, f"{ORCH}/events/")
        self.assertIsNone(self.source.capacity)
        self.clock.advance(5)
        self.assertEqual(len(self.http.sent("/api/v1/engines")), 1, "the legacy path is kept once found")

    def test_outage_keeps_the_last_list(self) -> None:
        """When the list cannot be read (refused, 500, not JSON, timeout) the last good one stays and status says stale."""
        self.http.route(f"{ORCH}/api/v1/engines", (200, [item("a")]))
        self.start()
        for answer in (ConnectionRefusedError("down"), (500, {"error": "x"}), (200, b"<html>"), None):
            self.http.route(f"{ORCH}/api/v1/engines", answer)
            self.clock.advance(5)
            self.clock.advance(5)  # a held request times out within the interval
            self.assertEqual(len(self.lists), 1, answer)
            self.assertEqual([r.id for r in self.source.records], ["a"])
            status = self.source.status()
            self.assertTrue(status["stale"], answer)
            self.assertIsNotNone(status["last_error"])
        self.http.route(f"{ORCH}/api/v1/engines", (200, [item("b")]))
        self.clock.advance(5)
        self.assertEqual([r.id for r in self.lists[-1]], ["b"])
        self.assertFalse(self.source.status()["stale"])

    def test_skipped_records_are_in_status(self) -> None:
        """Unusable records are skipped (and listed in status) while the others are used."""
        self.http.route(f"{ORCH}/api/v1/engines", (200, [item("a"), {"container_id": "b"}]))
        self.start()
        self.assertEqual([r.id for r in self.lists[-1]], ["a"])
        self.assertEqual(len(self.source.status()["skipped"]), 1)

    def test_through_treq_stub(self) -> None:
        """Through treq's StubTreq (real HTTP parsing in memory), the wrapped shape and the key header arrive."""
        seen: List[bytes] = []

        class Engines(Resource):
            isLeaf = True

            def render_GET(self, request: Request) -> bytes:
                seen.append(request.getHeader(b"x-api-key") or b"")
                if request.path == b"/api/v1/engines":
                    return json.dumps({"engines": [item("a", forwarded=True)], "total": 1}).encode()
                request.setResponseCode(404)
                return b"{}"

        stub = StubTreq(Engines())
        source = OrchestratorSource(ORCH, JsonHTTP(stub, self.clock, {"X-API-Key": "secret"}), self.clock, 5.0)
        source.start(self.lists.append)
        self.addCleanup(source.stop)
        for _ in range(5):
            stub.flush()
        self.assertEqual([(r.id, r.forwarded) for r in self.lists[-1]], [("a", True)])
        self.assertEqual(set(seen), {b"secret"})
