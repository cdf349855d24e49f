# -*- test-case-name: tests.test_engine_pool,tests.test_engine_pool_events,tests.test_engine_pool_sources -*-
"""
L{JsonHTTP}: the pool's small HTTP calls (engine probes, the orchestrator's
list and config, events), each with its own deadline, on an injected treq-like
client (treq's L{HTTPClient} in production, L{treq.testing.StubTreq} in
tests) and an injected clock.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, NoReturn, Optional, Tuple

import attr
import treq
from treq.client import HTTPClient
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.internet.error import ConnectingCancelledError
from twisted.web.client import Agent, HTTPConnectionPool, ResponseNeverReceived

from acetwist.engine_http import USER_AGENT, is_connection_failure


class CallFailed(Exception):
    """
    A call got no usable answer: C{why} says what happened (for logs and
    /status); C{connection} is true when the server could not be reached.
    """

    def __init__(self, why: str, connection: bool = False) -> None:
        super().__init__(why)
        self.why = why
        self.connection = connection


@attr.s(frozen=True, auto_attribs=True)
class Reply:
    """An HTTP answer: its status and its body parsed as JSON (None when it is not JSON)."""

    code: int
    document: Any


def default_client(reactor: Any, connect_timeout: float) -> Tuple[HTTPClient, HTTPConnectionPool]:
    """A treq client with its own small persistent pool (close the pool on stop)."""
    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 2
    pool.cachedConnectionTimeout = 30
    return HTTPClient(Agent(reactor, connectTimeout=connect_timeout, pool=pool)), pool


class JsonHTTP:
    """
    GET and POST JSON with a deadline each. C{headers} go with every call
    (the orchestrator's API key). Nothing here retries: callers decide.
    """

    def __init__(self, client: Any, clock: IReactorTime, headers: Optional[Dict[str, str]] = None) -> None:
        # client: treq's HTTPClient or StubTreq (typed Any: they share request() but no declared type)
        self.client = client
        self.clock = clock
        self.headers: Dict[bytes, List[bytes]] = {b"User-Agent": [USER_AGENT]}
        for name, value in (headers or {}).items():
            self.headers[name.encode("ascii")] = [value.encode("utf-8")]

    def get(self, url: str, timeout: float) -> "Deferred[Reply]":
        """GET C{url}; fails with L{CallFailed} when there is no answer within C{timeout}."""
        return self._call("GET", url, None, timeout)

    def post(self, url: str, body: Any, timeout: float) -> "Deferred[Reply]":
        """POST C{body} as JSON to C{url}; fails with L{CallFailed} when there is no answer within C{timeout}."""
        return self._call("POST", url, body, timeout)

    def _call(self, method: str, url: str, body: Any, timeout: float) -> "Deferred[Reply]":
        def timed_out(result: object, timeout: float) -> NoReturn:
            raise CallFailed(f"no answer within {timeout:g} s")

        d: Deferred[Reply] = Deferred.fromCoroutine(self._fetch(method, url, body))
        d.addTimeout(timeout, self.clock, onTimeoutCancel=timed_out)
        return d

    async def _fetch(self, method: str, url: str, body: Any) -> Reply:
        headers = dict(self.headers)
        data: Optional[bytes] = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers[b"Content-Type"] = [b"application/json"]
        try:
            response = await self.client.request(method, url, headers=headers, data=data)
            content = await treq.content(response)
        except (CallFailed, CancelledError):
            raise  # a cancellation is the caller's (or the deadline's, which names it)
        except Exception as e:
            failure = Failure(e)
            if _was_cancelled(failure):
                raise CancelledError() from None
            name = failure.type.__name__ if failure.type is not None else "error"
            raise CallFailed(f"{name}: {e}" if str(e) else name, is_connection_failure(failure)) from None
        try:
            document = json.loads(content)
        except ValueError:
            document = None
        return Reply(int(response.code), document)


def _was_cancelled(failure: Failure) -> bool:
    """The request failed because it was cancelled (the agent wraps the cancellation in other errors)."""
    if failure.check(CancelledError, ConnectingCancelledError):
        return True
    if isinstance(failure.value, ResponseNeverReceived):
        return any(reason.check(CancelledError) for reason in failure.value.reasons)
    return False
