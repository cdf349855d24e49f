"""The HTTP surface without an engine: validation, HEAD, methods, status documents, metrics, token."""

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from acetwist.config import Settings
from acetwist.service import ProxyService
from acetwist.web import BadRequest, parse_selector
from tests.fakes import FakeCoordinator

ID = "0123456789abcdef0123456789abcdef01234567"


def args(**kw: Any) -> dict:
    return {k.encode(): [v.encode()] if isinstance(v, str) else [x.encode() for x in v] for k, v in kw.items()}


class SelectorTests(SynchronousTestCase):
    def test_id_content_id_and_infohash(self) -> None:
        """id and content_id select a content id (lower-cased); infohash selects an infohash."""
        self.assertEqual(parse_selector(args(id=ID.upper())).key, f"id:{ID}")
        self.assertEqual(parse_selector(args(content_id=ID)).key, f"id:{ID}")
        self.assertEqual(parse_selector(args(infohash=ID)).key, f"infohash:{ID}")

    def test_invalid_selectors_are_bad_requests(self) -> None:
        """Missing, doubled, conflicting or non-hex selectors are refused with a reason."""
        for bad in (args(), args(id=ID, infohash=ID), args(id="xyz"), args(id=[ID, "1" * 40]),
                    args(id=ID, content_id="2" * 40), args(infohash="g" * 40)):
            self.assertRaises(BadRequest, parse_selector, bad)

    def test_output_parameters_pass_through_and_others_are_ignored(self) -> None:
        """transcode_audio is passed to the engine; a player's pid and cache busters are not; none of them is in the key."""
        selector = parse_selector(args(id=ID, transcode_audio="1", pid="player-7", _="12345"))
        self.assertEqual(selector.extra, (("transcode_audio", "1"),))
        self.assertEqual(selector.key, f"id:{ID}")


class RouteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.service = ProxyService(Settings.defaults(engine="http://127.0.0.1:9"), self.clock,
                                    coordinator=FakeCoordinator())  # type: ignore[arg-type]
        self.treq = StubTreq(self.service.app.resource())

    def request(self, method: str, path: str, **kw: Any) -> Any:
        response = self.successResultOf(self.treq.request(method, "http://proxy" + path, **kw))
        body = self.successResultOf(response.content())
        return response, body

    def test_head_answers_headers_without_calling_the_engine(self) -> None:
        """HEAD gets 200 video/mp2t and Accept-Ranges: none, and no engine call is made."""
        response, body = self.request("HEAD", f"/ace/getstream?id={ID}")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["video/mp2t"])
        self.assertEqual(response.headers.getRawHeaders("accept-ranges"), ["none"])
        self.assertEqual(self.service.pool.json_calls, 0)
        self.assertEqual(self.service.registry.channels(), [])

    def test_other_methods_get_405(self) -> None:
        """POST to getstream is 405 with an Allow header and a JSON body."""
        response, body = self.request("POST", f"/ace/getstream?id={ID}")
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders("allow"), ["GET, HEAD"])
        self.assertIn("error", json.loads(body))

    def test_bad_selector_is_a_json_400_without_engine_call(self) -> None:
        """An invalid id is a 400 with a JSON error and the engine is not contacted."""
        response, body = self.request("GET", "/ace/getstream?id=nothex")
        self.assertEqual(response.code, 400)
        self.assertEqual(json.loads(body)["status"], 400)
        self.assertEqual(self.service.pool.json_calls, 0)

    def test_ace_status_counts_streams_and_404s_unknown_ones(self) -> None:
        """/ace/status has acexy's shape; an unknown stream is 404."""
        response, body = self.request("GET", "/ace/status")
        self.assertEqual(json.loads(body), {"streams": 0})
        response, body = self.request("GET", f"/ace/status?id={ID}")
        self.assertEqual(response.code, 404)

    def test_status_healthz_and_metrics(self) -> None:
        """/status is JSON with totals, /healthz says ok, /metrics is Prometheus text."""
        _, body = self.request("GET", "/status")
        document = json.loads(body)
        self.assertEqual(document["channels"], [])
        self.assertEqual(document["worker"], "test-worker")
        _, body = self.request("GET", "/healthz")
        self.assertEqual(json.loads(body)["status"], "ok")
        response, body = self.request("GET", "/metrics")
        self.assertIn(b"acetwist_clients 0.0", body)

    def test_token_is_required_when_configured(self) -> None:
        """With --token, requests without it are 401; with ?token= or a Bearer header they pass."""
        self.service.app.settings = self.service.settings.replace(token="s3cret")
        response, _ = self.request("GET", "/status")
        self.assertEqual(response.code, 401)
        response, _ = self.request("GET", "/status?token=s3cret")
        self.assertEqual(response.code, 200)
        response, _ = self.request("GET", "/status", headers={"Authorization": "Bearer s3cret"})
        self.assertEqual(response.code, 200)
        response, _ = self.request("GET", "/healthz")
        self.assertEqual(response.code, 200)
