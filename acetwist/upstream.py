# -*- test-case-name: tests.test_upstream,tests.test_engine_contract -*-
"""
The AceStream engine client over HTTP (L{IEngine}): the C{format=json}
getstream call (and, for content the engine serves only as HLS, the
C{manifest.m3u8} call), C{stop} on the session's command URL, and the start
of a playback read.

Every call has its own deadline. Failures become L{EngineError}s carrying the
HTTP status a waiting player gets and an L{ErrorKind} saying why.

The playback readers live in L{acetwist.playback} and L{acetwist.engine_hls}, the value types and
interfaces in L{acetwist.engine_api}, the errors in L{acetwist.errors}; their
names are re-exported here.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Callable, List, NoReturn, Optional, Set, Tuple
from urllib.parse import urlencode

import treq
from treq.client import HTTPClient
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import IReactorPluggableNameResolver, IReactorTCP, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, RedirectAgent
from twisted.web.http_headers import Headers
from zope.interface import implementer

from acetwist.engine_api import HLS, TS, IEngine, EngineSession, PlaybackEnd, Selector, stream_key
from acetwist.engine_hls import HLSReader
from acetwist.engine_http import USER_AGENT, is_connection_failure, rebase, unreachable
from acetwist.errors import EngineError, ErrorKind
from acetwist.playback import PlaybackReader, playback_error

__all__ = [
    "EngineClient",
    "EngineError",
    "EngineSession",
    "ErrorKind",
    "HLSReader",
    "PlaybackEnd",
    "PlaybackReader",
    "Selector",
    "is_connection_failure",
    "playback_error",
    "rebase",
    "stream_key",
    "wants_hls",
]


#: A getstream JSON error that asks for HLS instead: an engine that refuses C{format=json} on
#: getstream (the wording is a guess; the simulator's C{json_refused} fault says "unsupported format: json").
_WANTS_HLS = re.compile(r"\b(json|format|hls|m3u8|encrypted)\b", re.IGNORECASE)


def wants_hls(message: str) -> bool:
    """A getstream error C{message} that means "open this content through manifest.m3u8" (not a failure)."""
    return bool(_WANTS_HLS.search(message))


class _HLSOnly(Exception):
    """The engine serves this content only as HLS; C{session} is the getstream session it opened, if any."""

    def __init__(self, why: str, session: Optional[EngineSession]) -> None:
        super().__init__(why)
        self.why = why
        self.session = session


class IHTTPReactor(IReactorTCP, IReactorTime, IReactorPluggableNameResolver):
    """What the HTTP agent needs of a reactor (the same approximation as treq's)."""


@implementer(IEngine)
class EngineClient:
    """
    Talks to one AceStream engine. Owns its HTTP connection pool; call
    L{close} when done.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IHTTPReactor,
        base_url: str,
        *,
        json_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.reactor = reactor
        self.base_url = base_url.rstrip("/")
        self.json_timeout = json_timeout
        self.stop_timeout = stop_timeout
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 4
        self.pool.cachedConnectionTimeout = 30
        self.agent = Agent(reactor, connectTimeout=connect_timeout, pool=self.pool)
        # A separate, non-persistent agent for streams: a stream holds its connection for its whole life.
        self.stream_agent = RedirectAgent(
            Agent(reactor, connectTimeout=connect_timeout, pool=HTTPConnectionPool(reactor, persistent=False)),
            redirectLimit=5,
        )
        self.http = HTTPClient(self.agent)
        # HLS polls many small requests: the pooled connections, and the engine's redirects followed
        self.hls_agent = RedirectAgent(self.agent, redirectLimit=5)
        self.json_calls = 0
        self.stop_calls = 0
        self._in_flight: Set[Deferred[Any]] = set()

    def close(self) -> Deferred[None]:
        """Wait for calls in flight (each has its own deadline), then close the pooled connections."""
        return Deferred.fromCoroutine(self._close())

    async def _close(self) -> None:
        while self._in_flight:
            await DeferredList(list(self._in_flight), consumeErrors=True)
        await self.pool.closeCachedConnections()

    # ---------------------------------------------------------------- JSON

    def open_session(self, selector: Selector) -> Deferred[EngineSession]:
        """
        Start an engine session for C{selector} with a fresh player id. Fires
        with an L{EngineSession} or fails with L{EngineError}: C{REFUSED}
        (the engine said no), C{UNREACHABLE} or C{TIMEOUT}.

        Content the engine serves only as HLS (the getstream reply says
        C{is_encrypted: 1}, or getstream refuses C{format=json} as
        L{wants_hls} recognises) is opened again through C{manifest.m3u8},
        with the same parameters and a new player id: an L{HLS} session. That
        call supersedes the getstream session on the engine; the getstream
        session is stopped as well once the manifest call has answered (or
        failed), so none is left whichever way the engine counts sessions.
        Each call has its own C{json_timeout}.
        """
        return Deferred.fromCoroutine(self._open(selector))

    async def _open(self, selector: Selector) -> EngineSession:
        pid = str(uuid.uuid4())
        reply = await self._start_call("getstream", selector, pid)
        try:
            return self._session(reply, pid, TS)
        except _HLSOnly as only:
            self.log.info("engine serves {key} only as HLS ({why}); opening it through manifest.m3u8",
                          key=selector.key, why=only.why)
            superseded = only.session
        pid = str(uuid.uuid4())
        try:
            reply = await self._start_call("manifest.m3u8", selector, pid)
            return self._session(reply, pid, HLS)
        finally:
            if superseded is not None:
                self.stop(superseded)

    def _start_call(self, endpoint: str, selector: Selector, pid: str) -> Deferred[Any]:
        params: List[Tuple[str, str]] = [(selector.kind, selector.value), ("format", "json"), ("pid", pid)]
        params.extend(selector.extra)
        self.json_calls += 1
        return self._get_json(f"{self.base_url}/ace/{endpoint}?{urlencode(params)}", self.json_timeout, endpoint)

    def _session(self, reply: Any, pid: str, format: str) -> EngineSession:
        def refused(message: str) -> EngineError:
            return EngineError(502, message, kind=ErrorKind.REFUSED)

        if not isinstance(reply, dict):
            raise refused("engine replied with JSON that is not an object")
        if reply.get("error"):
            if format == TS and wants_hls(str(reply["error"])):
                raise _HLSOnly(f"getstream answered {reply['error']!r}", None)
            raise refused(f"engine: {reply['error']}")
        response = reply.get("response")
        if not isinstance(response, dict) or not response.get("playback_url"):
            raise refused("engine reply has no playback_url")
        stat_url = response.get("stat_url")
        command_url = response.get("command_url")
        bitrate = response.get("bitrate")
        session = EngineSession(
            playback_url=rebase(response["playback_url"], self.base_url),
            stat_url=rebase(stat_url, self.base_url) if stat_url else None,
            command_url=rebase(command_url, self.base_url) if command_url else None,
            infohash=str(response.get("infohash") or "").lower(),
            playback_session_id=str(response.get("playback_session_id") or ""),
            pid=pid,
            is_live=int(response.get("is_live", 1) or 0),
            bitrate=int(bitrate) if isinstance(bitrate, (int, float)) else None,
            format=format,
        )
        if format == TS and response.get("is_encrypted") in (1, "1", True):
            raise _HLSOnly("is_encrypted: 1", session)
        return session

    def _get_json(self, url: str, timeout: float, what: str) -> Deferred[Any]:
        """GET C{url} and parse its JSON, all within C{timeout} (a C{TIMEOUT} error past it)."""

        def timed_out(result: object, timeout: float) -> NoReturn:
            # Cancelling an HTTP request surfaces as ResponseNeverReceived([CancelledError]) or whatever
            # the cancelled step raised: only the deadline knows it was a timeout.
            raise EngineError(504, f"engine did not answer {what} within {timeout:g} s", kind=ErrorKind.TIMEOUT)

        d = Deferred.fromCoroutine(self._fetch_json(url, what))
        d.addTimeout(timeout, self.reactor, onTimeoutCancel=timed_out)
        self._in_flight.add(d)
        d.addBoth(self._done, d)
        return d

    def _done(self, result: object, d: Deferred[Any]) -> object:
        self._in_flight.discard(d)
        return result

    async def _fetch_json(self, url: str, what: str) -> Any:
        try:
            response = await self.http.get(url, headers=Headers({b"User-Agent": [USER_AGENT]}))
            body = await treq.content(response)
        except Exception as e:
            failure = Failure(e)
            if is_connection_failure(failure):
                raise unreachable(failure) from None
            raise EngineError(502, f"engine {what} failed: {e}", kind=ErrorKind.REFUSED) from None
        if response.code == 503:
            raise EngineError(503, "engine answered 503", retry_after=5, kind=ErrorKind.UNREACHABLE)
        if response.code != 200:
            raise EngineError(502, f"engine answered HTTP {response.code} to {what}", kind=ErrorKind.REFUSED)
        try:
            return json.loads(body)
        except ValueError:
            raise EngineError(502, f"engine's {what} reply is not JSON", kind=ErrorKind.REFUSED) from None

    # ---------------------------------------------------------------- stop

    def stop(self, session: EngineSession) -> Deferred[bool]:
        """
        Ask the engine to stop C{session}. Fires True if it said ok, False
        otherwise (unknown session, error, timeout); never fails.
        """
        if not session.command_url:
            return succeed(False)
        self.stop_calls += 1
        sep = "&" if "?" in session.command_url else "?"
        d = self._get_json(f"{session.command_url}{sep}method=stop", self.stop_timeout, "stop")

        def done(reply: Any) -> bool:
            ok = isinstance(reply, dict) and reply.get("response") == "ok"
            if not ok:
                self.log.info("engine stop for {pid} answered {reply!r}", pid=session.pid, reply=reply)
            return ok

        def failed(failure: Failure) -> bool:
            self.log.warn("engine stop for {pid} failed: {why}", pid=session.pid, why=failure.getErrorMessage())
            return False

        return d.addCallbacks(done, failed)

    # ---------------------------------------------------------------- playback

    def read(
        self,
        url: str,
        *,
        on_data: Callable[[bytes], None],
        on_end: Callable[[PlaybackEnd], None],
        first_byte_timeout: float,
        idle_timeout: float,
    ) -> PlaybackReader:
        """Start reading playback URL C{url} (see L{PlaybackReader})."""
        reader = PlaybackReader(
            self.stream_agent,
            self.reactor,
            url,
            on_data=on_data,
            on_end=on_end,
            first_byte_timeout=first_byte_timeout,
            idle_timeout=idle_timeout,
        )
        reader.start()
        return reader

    def read_hls(
        self,
        url: str,
        *,
        on_data: Callable[[bytes], None],
        on_splice: Callable[[], None],
        on_end: Callable[[PlaybackEnd], None],
        first_byte_timeout: float,
        idle_timeout: float,
    ) -> HLSReader:
        """Start reading HLS playlist C{url} (see L{HLSReader})."""
        reader = HLSReader(
            self.hls_agent,
            self.reactor,
            url,
            on_data=on_data,
            on_splice=on_splice,
            on_end=on_end,
            first_byte_timeout=first_byte_timeout,
            idle_timeout=idle_timeout,
        )
        reader.start()
        return reader
