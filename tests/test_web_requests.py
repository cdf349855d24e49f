"""What requests the routes refuse or tolerate: methods, request bodies, double slashes, non-UTF-8 URLs, unknown paths."""

import json
from typing import Any, Dict, List, Tuple

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from acetwist.config import Settings
from acetwist.service import ProxyService
from acetwist.testing import FakePool
from tests.fakes import FakeCoordinator, FakeEngine

ID = "0123456789abcdef0123456789abcdef01234567"
READ_ROUTES = ("/status", "/metrics", "/healthz", "/ace/status")


class RequestTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.engine = FakeEngine()
        self.service = ProxyService(Settings.defaults(engine="http://127.0.0.1:9"), self.clock,
                                    coordinator=FakeCoordinator(),  # type: ignore[arg-type]
                                    pool=FakePool(("http://127.0.0.1:9", self.engine)))
        self.treq = StubTreq(self.service.app.resource())

    def request(self, method: str, path: str, **kw: Any) -> Tuple[Any, bytes]:
        response = self.successResultOf(self.treq.request(method, "http://proxy" + path, **kw))
        return response, self.successResultOf(response.content())

    def test_operator_routes_answer_405_to_other_methods(self) -> None:
        """/status, /metrics, /healthz and /ace/status answer POST, PUT, DELETE and OPTIONS with a JSON 405 and Allow: GET, HEAD."""
        for path in READ_ROUTES:
            for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH"):
                response, body = self.request(method, path)
                self.assertEqual(response.code, 405, (method, path))
                self.assertEqual(response.headers.getRawHeaders("allow"), ["GET, HEAD"])
                self.assertEqual(json.loads(body)["status"], 405)

    def test_operator_routes_answer_get_and_head(self) -> None:
        """GET and HEAD still work on every read-only route."""
        for path in READ_ROUTES:
            for method in ("GET", "HEAD"):
                response, _ = self.request(method, path)
                self.assertEqual(response.code, 200, (method, path))

    def test_double_slash_is_served_with_its_query(self) -> None:
        """GET /ace//getstream?id=X reaches the stream route with its query (no redirect to a URL without it)."""
        response, _ = self.request("HEAD", f"/ace//getstream?id={ID}")
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"), ["video/mp2t"])
        self.treq.request("GET", f"http://proxy//ace//getstream?id={ID}")  # streams: no response yet
        self.assertEqual(self.engine.json_calls, 1)
        self.assertEqual(self.engine.selectors[0].value, ID)
        response, body = self.request("GET", "/ace//status")
        self.assertEqual(json.loads(body), {"streams": 1})

    def test_non_utf8_path_is_a_400_without_a_traceback(self) -> None:
        """A percent-encoded path that is not UTF-8 is a JSON 400, and nothing is logged as an error."""
        for path in ("/%ff%fe", "/ace/getstream%ff?id=" + ID, "/status/%c3%28"):
            response, body = self.request("GET", path)
            self.assertEqual(response.code, 400, path)
            self.assertEqual(json.loads(body)["status"], 400)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual(self.engine.json_calls, 0)

    def test_refused_head_request_logs_nothing(self) -> None:
        """HEAD to a non-UTF-8 path is a 400 with no body, and Twisted logs no 'HEAD request ... returning a message body' warning."""
        events: List[Dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        response, body = self.request("HEAD", "/met%80ics")
        self.assertEqual((response.code, body), (400, b""))
        self.assertEqual([e for e in events if "HEAD" in str(e.get("log_format", ""))], [])

    def test_non_utf8_host_is_a_400_without_a_traceback(self) -> None:
        """A Host header that is not UTF-8 is a JSON 400, not a logged decoding error."""
        response, body = self.request("GET", "/status", headers={b"Host": [b"pr\xffxy"]})
        self.assertEqual(response.code, 400)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_request_bodies_are_refused(self) -> None:
        """A request with a body is a JSON 413 on every route, and the stream route makes no engine call."""
        for path in ("/status", "/healthz", f"/ace/getstream?id={ID}", "/nowhere"):
            response, body = self.request("POST" if path != "/healthz" else "GET", path, data=b"x" * 1000)
            self.assertEqual(response.code, 413, path)
            self.assertEqual(json.loads(body)["status"], 413)
        response, _ = self.request("GET", "/healthz", headers={"Content-Length": "0"})
        self.assertEqual(response.code, 200)
        self.assertEqual(self.engine.json_calls, 0)

    def test_unknown_routes_are_a_json_404(self) -> None:
        """A path no route serves gets a JSON 404 (not Werkzeug's HTML page)."""
        response, body = self.request("GET", "/nowhere")
        self.assertEqual(response.code, 404)
        self.assertEqual(json.loads(body)["status"], 404)
