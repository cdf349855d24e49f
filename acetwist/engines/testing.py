"""
Test doubles for the engine pool: L{FakeHTTP}, an in-memory treq-like
client whose answers the test sets per URL (or holds, or refuses), so
probes, the orchestrator's list and events run on a C{task.Clock}.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional, Tuple, Union
from urllib.parse import urlsplit

import attr
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import ConnectionRefusedError
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http_headers import Headers

Answer = Union[Tuple[int, Any], Exception, None]


class FakeResponse:
    """Just enough of L{twisted.web.iweb.IResponse} for C{treq.content}."""

    version = (b"HTTP", 1, 1)
    phrase = b"OK"
    request = None
    previousResponse = None

    def __init__(self, code: int, body: bytes) -> None:
        self.code = code
        self.body = body
        self.length = len(body)
        self.headers = Headers({b"Content-Type": [b"application/json"]})

    def deliverBody(self, protocol: Any) -> None:
        protocol.dataReceived(self.body)
        protocol.connectionLost(Failure(ResponseDone()))


@attr.s(auto_attribs=True)
class SentRequest:
    """One request the fake received."""

    method: str
    url: str
    headers: Dict[str, str]
    body: Any

    @property
    def path(self) -> str:
        parts = urlsplit(self.url)
        return parts.path + (f"?{parts.query}" if parts.query else "")

    @property
    def netloc(self) -> str:
        return urlsplit(self.url).netloc


class FakeHTTP:
    """
    Answers requests from routes: C{route(prefix, answer)} where C{answer}
    is C{(status, json document)} (a C{bytes} document is sent as is), an
    exception to fail with, C{None} to hold the request (it never answers;
    see L{held}), or a callable taking the L{SentRequest} and returning one
    of those. The longest matching prefix wins; a URL no route matches is
    refused (as a dead engine's port would be).
    """

    def __init__(self) -> None:
        self.routes: Dict[str, Union[Answer, Callable[[SentRequest], Answer]]] = {}
        self.requests: List[SentRequest] = []
        self.held: List[Deferred[Any]] = []

    def route(self, prefix: str, answer: Union[Answer, Callable[[SentRequest], Answer]]) -> None:
        self.routes[prefix] = answer

    def refuse(self, prefix: str) -> None:
        self.routes[prefix] = ConnectionRefusedError("refused")

    def sent(self, path_part: str = "") -> List[SentRequest]:
        """The requests whose URL contains C{path_part}."""
        return [r for r in self.requests if path_part in r.url]

    def request(self, method: str, url: str, headers: Optional[Dict[bytes, List[bytes]]] = None,
                data: Optional[bytes] = None, **kwargs: Any) -> Deferred[Any]:
        flat = {k.decode(): v[-1].decode() for k, v in (headers or {}).items()}
        sent = SentRequest(method, url, flat, json.loads(data) if data else None)
        self.requests.append(sent)
        matches = [p for p in self.routes if url.startswith(p)]
        if not matches:
            return fail(ConnectionRefusedError("no route"))
        answer = self.routes[max(matches, key=len)]
        if callable(answer):
            answer = answer(sent)
        if answer is None:
            d: Deferred[Any] = Deferred()
            self.held.append(d)
            return d
        if isinstance(answer, Exception):
            return fail(answer)
        code, document = answer
        body = document if isinstance(document, bytes) else json.dumps(document).encode()
        return succeed(FakeResponse(code, body))
