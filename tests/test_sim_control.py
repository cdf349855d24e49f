"""Tests for the simulator's control API under /_sim (in memory): faults, counters, restart, and bad input."""

import json
from typing import Any, Tuple

from acetwist.sim.testing import MemoryClient
from tests.test_sim_web import A, B, WebTestCase


class ControlTestCase(WebTestCase):
    def call(self, method: str, path: str, body: Any = None) -> Tuple[int, Any]:
        raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        client = MemoryClient(self.sim.site, self.clock).request(method, path, raw)
        self.clock.advance(0)
        response = client.response()
        return response.status, json.loads(response.body)


class ControlTests(ControlTestCase):
    def test_set_a_fault_with_a_json_body(self) -> None:
        """POST /_sim/faults with a JSON object sets the fault for a content named any way."""
        status, document = self.call("POST", "/_sim/faults", {"name": "cut", "content": A.name, "after_bytes": 1000})
        self.assertEqual(status, 200)
        [fault] = document["faults"]
        self.assertEqual((fault["name"], fault["content"], fault["params"]["after_bytes"]), ("cut", A.name, 1000))
        self.assertEqual(self.engine.fault("cut", A).params["how"], "reset")

    def test_set_faults_with_query_or_list(self) -> None:
        """Faults can also come as query parameters, or as a JSON list set all at once."""
        status, _ = self.call("POST", f"/_sim/faults?name=slow_json&ms=250&content={B.infohash}")
        self.assertEqual(status, 200)
        self.assertEqual(self.engine.fault("slow_json", B).params["ms"], 250)
        status, document = self.call("POST", "/_sim/faults", [{"name": "stall"}, {"name": "down", "mode": "503"}])
        self.assertEqual((status, len(document["faults"])), (200, 2))
        self.assertEqual(self.engine.down_mode(None), "503")

    def test_list_and_clear_faults(self) -> None:
        """GET lists the faults and the catalogue; DELETE clears by name and content, or everything."""
        self.engine.set_fault("silence", content=A)
        self.engine.set_fault("silence")
        self.engine.set_fault("stall", content=B)
        status, document = self.call("GET", "/_sim/faults")
        self.assertEqual(len(document["faults"]), 3)
        self.assertIn("gap", [kind["name"] for kind in document["kinds"]])
        self.assertEqual(self.call("DELETE", f"/_sim/faults?name=silence&content={A.name}")[1], {"cleared": 1})
        self.assertEqual(self.call("DELETE", "/_sim/faults?content=global")[1], {"cleared": 1})
        self.assertEqual(self.call("DELETE", "/_sim/faults")[1], {"cleared": 1})
        self.assertEqual(self.engine.faults, [])

    def test_counters_and_reset(self) -> None:
        """GET /_sim/counters reports the counters; DELETE zeroes them."""
        self.start(A)
        status, counters = self.call("GET", "/_sim/counters")
        self.assertEqual((status, counters["sessions_opened"], counters["json_calls"]), (200, 1, {A.content_id: 1}))
        self.call("DELETE", "/_sim/counters")
        self.assertEqual(self.call("GET", "/_sim/counters")[1]["sessions_opened"], 0)

    def test_restart_endpoint(self) -> None:
        """POST /_sim/restart forgets sessions and can leave the engine down for a while."""
        reply = self.start(A)
        status, document = self.call("POST", "/_sim/restart?down_ms=300&down_mode=503")
        self.assertEqual((status, document["sessions_forgotten"]), (200, 1))
        self.assertEqual(self.get(reply["stat_url"]).response().status, 503)
        self.clock.advance(0.3)
        self.assertEqual(self.json_of(reply["stat_url"])["error"], "unknown playback session id")

    def test_index_contents_and_sessions(self) -> None:
        """GET /_sim, /_sim/contents and /_sim/sessions describe the simulator."""
        self.start(A)
        index = self.call("GET", "/_sim")[1]
        self.assertEqual(index["config"]["bitrate"], 1_000_000)
        self.assertIn("POST /_sim/faults", index["endpoints"])
        contents = self.call("GET", "/_sim/contents")[1]["contents"]
        self.assertEqual(contents[0]["content_id"], A.content_id)
        [session] = self.call("GET", "/_sim/sessions")[1]["sessions"]
        self.assertEqual(session["infohash"], A.infohash)

    def test_bad_input_is_a_400_with_a_message_and_nothing_breaks(self) -> None:
        """Malformed or invalid control input gets a 400 that says why, and the engine keeps working."""
        cases = [
            ("POST", "/_sim/faults", b"{not json"),
            ("POST", "/_sim/faults", b"[1, 2]"),
            ("POST", "/_sim/faults", b"\"cut\""),
            ("POST", "/_sim/faults", b"{}"),
            ("POST", "/_sim/faults", {"name": "nope"}),
            ("POST", "/_sim/faults", {"name": "cut"}),
            ("POST", "/_sim/faults", {"name": "cut", "after_bytes": -5}),
            ("POST", "/_sim/faults", {"name": "gap", "ms": "soon"}),
            ("POST", "/_sim/faults", {"name": "stall", "content": "no-such-channel"}),
            ("POST", "/_sim/faults", {"name": "stall", "content": 12}),
            ("POST", "/_sim/faults", {"name": "down", "mode": "refuse", "content": A.name}),
            ("POST", "/_sim/faults", [{"name": "stall"}, {"name": "nope"}]),
            ("POST", "/_sim/faults", b"\xff\xfe"),
            ("POST", "/_sim/faults", None),
            ("POST", "/_sim/faults?name=cut&name=gap", None),
            ("DELETE", "/_sim/faults?name=nope", None),
            ("DELETE", "/_sim/faults?colour=red", None),
            ("POST", "/_sim/restart?down_ms=-1", None),
            ("POST", "/_sim/restart?down_mode=sideways&down_ms=5", None),
            ("POST", "/_sim/restart?reboot=1", None),
            ("POST", "/_sim/faults", b"x" * 70_000),
        ]
        for method, path, body in cases:
            status, document = self.call(method, path, body)
            self.assertEqual(status, 400, (path, body, document))
            self.assertTrue(document["error"], (path, body))
        self.assertEqual(self.engine.faults, [])
        self.assertIsNone(self.start(A).get("error"))

    def test_unknown_endpoint_and_method(self) -> None:
        """An unknown control path is a 404 and a wrong method a 405, both JSON."""
        self.assertEqual(self.call("GET", "/_sim/nothing")[0], 404)
        self.assertEqual(self.call("PATCH", "/_sim/counters")[0], 405)

    def test_control_works_during_a_stall(self) -> None:
        """The control API answers while the engine is stalled, and can clear the stall."""
        self.engine.set_fault("stall")
        self.assertEqual(self.call("DELETE", "/_sim/faults?name=stall")[1], {"cleared": 1})
