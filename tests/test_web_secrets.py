"""Secrets: engine session URLs in /status and /ace/status, the operator token, and redaction helpers."""

import json
from typing import Any, Dict, Optional, Tuple

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import Request
from twisted.web.test.requesthelper import DummyChannel

from acetwist.channel import ClientInfo
from acetwist.config import Settings, resolve
from acetwist.http import access_log_line
from acetwist.redact import redact_credentials, redact_session_url, redact_uri
from acetwist.service import ProxyService
from acetwist.upstream import EngineSession, Selector
from acetwist.testing import FakePool
from tests.fakes import FakeCoordinator, FakeEngine, FakeSink

ID = "0123456789abcdef0123456789abcdef01234567"
IH = "ab" * 20
SESSION_TOKEN = "5e55104700000000000000000000cafe"
ENGINE = "http://127.0.0.1:6878"
SESSION = EngineSession(
    playback_url=f"{ENGINE}/ace/r/{IH}/{SESSION_TOKEN}",
    stat_url=f"{ENGINE}/ace/stat/{IH}/{SESSION_TOKEN}",
    command_url=f"{ENGINE}/ace/cmd/{IH}/{SESSION_TOKEN}",
    infohash=IH,
    playback_session_id="9" * 40,
    pid="pid-1",
)


class RedactionTests(SynchronousTestCase):
    def test_session_urls_lose_their_token_query_and_credentials(self) -> None:
        """A session URL keeps scheme, host, port and infohash; its token, query and user:password are replaced or dropped."""
        self.assertEqual(redact_session_url(SESSION.command_url), f"{ENGINE}/ace/cmd/{IH}/REDACTED")
        self.assertEqual(redact_session_url(f"http://u:pw@h:1/ace/r/{IH}/{SESSION_TOKEN}/?x=secret"),
                         f"http://h:1/ace/r/{IH}/REDACTED")
        self.assertEqual(redact_session_url("http://[::1]:6878/ace/stat/t"), "http://[::1]:6878/ace/stat/REDACTED")
        self.assertIsNone(redact_session_url(None))
        self.assertEqual(redact_credentials("http://u:pw@engine:6878"), "http://engine:6878")
        self.assertEqual(redact_credentials(ENGINE), ENGINE)

    def test_request_uris_lose_every_token_like_parameter(self) -> None:
        """token=, admin_token= and percent-encoded names are redacted; other parameters stay as sent."""
        self.assertEqual(redact_uri(b"/status?token=s3cret"), b"/status?token=REDACTED")
        self.assertEqual(redact_uri(b"/ace/getstream?id=1&token=a&admin_token=b&%74oken=c&x=token"),
                         b"/ace/getstream?id=1&token=REDACTED&admin_token=REDACTED&%74oken=REDACTED&x=token")
        self.assertEqual(redact_uri(b"/x?token"), b"/x?token=REDACTED")
        self.assertEqual(redact_uri(b"/healthz"), b"/healthz")

    def test_access_log_line_has_no_token(self) -> None:
        """The site's access-log formatter writes the combined format with the URI's and referrer's tokens redacted."""
        request = Request(DummyChannel())
        request.method, request.clientproto = b"GET", b"HTTP/1.1"
        request.uri = b"/status?token=s3cret&verbose=1"
        request.requestHeaders.addRawHeader(b"referer", b"http://proxy/ui?token=s3cret")
        request.requestHeaders.addRawHeader(b"authorization", b"Bearer s3cret")
        request.requestHeaders.addRawHeader(b"user-agent", b"curl/8")
        line = access_log_line("[01/Jan/2026:00:00:00 +0000]", request)
        self.assertNotIn("s3cret", line)
        self.assertIn('"GET /status?token=REDACTED&verbose=1 HTTP/1.1" 200', line)
        self.assertIn('"http://proxy/ui?token=REDACTED" "curl/8"', line)


class OptionTests(SynchronousTestCase):
    def test_admin_token_defaults_to_token(self) -> None:
        """--admin-token (or ACETWIST_ADMIN_TOKEN) wins; without it the operator token is --token; with neither there is none."""
        self.assertEqual(resolve({"token": "p"}, {}).operator_token, "p")
        self.assertEqual(resolve({"token": "p", "admin-token": "a"}, {}).operator_token, "a")
        self.assertEqual(resolve({}, {"ACETWIST_ADMIN_TOKEN": "a"}).operator_token, "a")
        self.assertIsNone(resolve({}, {}).operator_token)


class StatusSecretsTests(SynchronousTestCase):
    """A live channel with a session whose URLs carry SESSION_TOKEN, served through the real routes."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.engine = FakeEngine()
        self.service = ProxyService(Settings.defaults(engine=ENGINE), self.clock,
                                    coordinator=FakeCoordinator(), pool=FakePool((ENGINE, self.engine)))  # type: ignore[arg-type]
        channel = self.service.registry.channel_for(Selector("id", ID))
        channel.add_client(FakeSink(), ClientInfo("c", "127.0.0.1", "test", 0.0))  # type: ignore[arg-type]
        channel.start()
        self.engine.opens[0].callback(SESSION)
        self.treq = StubTreq(self.service.app.resource())

    def configure(self, **tokens: Optional[str]) -> None:
        self.service.app.settings = self.service.settings.replace(**tokens)

    def get(self, path: str, token: Optional[str] = None, bearer: Optional[str] = None) -> Tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        if token:
            path += ("&" if "?" in path else "?") + f"token={token}"
        response = self.successResultOf(self.treq.get("http://proxy" + path, headers=headers))
        return response.code, self.successResultOf(response.content())

    def status(self, **kw: Any) -> Dict[str, Any]:
        code, body = self.get("/status", **kw)
        self.assertEqual(code, 200, body)
        return json.loads(body)

    def test_open_status_redacts_session_urls(self) -> None:
        """Without any token configured, /status is open but no session URL carries the session token."""
        code, body = self.get("/status")
        self.assertEqual(code, 200)
        self.assertNotIn(SESSION_TOKEN.encode(), body)
        document = json.loads(body)
        self.assertTrue(document["redacted"])
        [channel] = document["channels"]
        self.assertEqual(channel["command_url"], f"{ENGINE}/ace/cmd/{IH}/REDACTED")
        self.assertEqual(channel["stat_url"], f"{ENGINE}/ace/stat/{IH}/REDACTED")
        self.assertEqual(channel["playback_url"], f"{ENGINE}/ace/r/{IH}/REDACTED")
        self.assertEqual(channel["infohash"], IH)

    def test_admin_token_guards_status_and_metrics_and_shows_urls(self) -> None:
        """With --admin-token, /status and /metrics are 401 without it (even with the player token) and /status shows full URLs with it."""
        self.configure(token="player", admin_token="admin")
        for path in ("/status", "/metrics"):
            for token in (None, "player", "wrong"):
                code, body = self.get(path, token=token)
                self.assertEqual(code, 401, (path, token))
                self.assertEqual(json.loads(body)["status"], 401)
        self.assertEqual(self.get("/metrics", bearer="admin")[0], 200)
        document = self.status(bearer="admin")
        self.assertFalse(document["redacted"])
        self.assertEqual(document["channels"][0]["command_url"], SESSION.command_url)
        self.assertEqual(self.status(token="admin")["channels"][0]["stat_url"], SESSION.stat_url)

    def test_token_alone_is_the_operator_token(self) -> None:
        """With only --token, it guards /status and shows the full URLs."""
        self.configure(token="s3cret")
        self.assertEqual(self.get("/status")[0], 401)
        self.assertEqual(self.status(token="s3cret")["channels"][0]["command_url"], SESSION.command_url)

    def test_admin_token_also_opens_player_routes(self) -> None:
        """The operator token is accepted wherever the player token is."""
        self.configure(token="player", admin_token="admin")
        self.assertEqual(self.get("/ace/status", token="admin")[0], 200)
        self.assertEqual(self.get("/ace/status", token="nope")[0], 401)

    def test_ace_status_redacts_stat_url_unless_operator(self) -> None:
        """/ace/status?id= shows stat_url without its token to players, and in full to the operator."""
        self.configure(token="player", admin_token="admin")
        code, body = self.get(f"/ace/status?id={ID}", token="player")
        self.assertEqual(code, 200)
        self.assertNotIn(SESSION_TOKEN.encode(), body)
        self.assertEqual(json.loads(body)["stat_url"], f"{ENGINE}/ace/stat/{IH}/REDACTED")
        code, body = self.get(f"/ace/status?id={ID}", bearer="admin")
        self.assertEqual(json.loads(body)["stat_url"], SESSION.stat_url)
        self.configure(token=None, admin_token=None)
        code, body = self.get(f"/ace/status?id={ID}")
        self.assertNotIn(SESSION_TOKEN.encode(), body)
