# -*- test-case-name: tests.test_upstream,tests.test_engine_contract -*-
"""
The AceStream engine client over HTTP (L{IEngine}): the C{format=json}
getstream call, the playback reader, and C{stop} on the session's command URL.

Every call has its own deadline. Failures become L{EngineError}s carrying the
HTTP status a waiting player gets and an L{ErrorKind} saying why.

The value types and interfaces live in L{acetwist.engine_api} and the errors
in L{acetwist.errors}; both are re-exported here.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable, List, NoReturn, Optional, Set, Tuple, cast
from urllib.parse import urlencode, urlsplit, urlunsplit

import treq
from treq.client import HTTPClient
from twisted.internet import error as net_error
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.interfaces import (
    IDelayedCall,
    IPushProducer,
    IReactorPluggableNameResolver,
    IReactorTCP,
    IReactorTime,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import (
    Agent,
    HTTPConnectionPool,
    RedirectAgent,
    RequestTransmissionFailed,
    ResponseDone,
    ResponseNeverReceived,
)
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse
from zope.interface import implementer

from acetwist.engine_api import IEngine, IPlaybackReader, EngineSession, PlaybackEnd, Selector, stream_key
from acetwist.errors import EngineError, ErrorKind

__all__ = [
    "EngineClient",
    "EngineError",
    "EngineSession",
    "ErrorKind",
    "PlaybackEnd",
    "PlaybackReader",
    "Selector",
    "is_connection_failure",
    "playback_error",
    "rebase",
    "stream_key",
]

USER_AGENT = b"acetwist"

#: What the engine says of a session it does not know (stopped, expired, superseded).
UNKNOWN_SESSION = "unknown playback session id"

#: Bytes of an error reply's body kept for the message (and to recognise UNKNOWN_SESSION).
_ERROR_BODY_LIMIT = 512


class IHTTPReactor(IReactorTCP, IReactorTime, IReactorPluggableNameResolver):
    """What the HTTP agent needs of a reactor (the same approximation as treq's)."""


def rebase(url: str, engine: str) -> str:
    """Put C{url}'s path and query on the engine's scheme://host:port (engines build URLs from Host)."""
    base = urlsplit(engine)
    parts = urlsplit(url)
    return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))


def is_connection_failure(failure: Failure) -> bool:
    """
    The engine could not be reached: the connection was refused, could not
    be made, or was lost before any response (L{ResponseNeverReceived} wraps
    the loss; L{RequestTransmissionFailed} a loss while the request was sent).
    """
    return bool(
        failure.check(
            net_error.ConnectError,  # refused, TCP timeout, no route, connect timeout
            net_error.DNSLookupError,
            net_error.ConnectingCancelledError,
            net_error.ConnectionClosed,  # lost, done, aborted
            ResponseNeverReceived,
            RequestTransmissionFailed,
        )
    )


def _unreachable(failure: Failure) -> EngineError:
    assert failure.type is not None
    return EngineError(503, f"engine unreachable: {failure.type.__name__}", retry_after=5,
                       kind=ErrorKind.UNREACHABLE)


def playback_error(code: int, body: bytes = b"") -> EngineError:
    """
    The error for a playback URL that answered HTTP C{code} (with C{body}):
    503 and 429 unreachable (back off and retry), 408 a timeout, any other
    4xx gone (the engine no longer knows the session: 404 after a restart,
    403 when superseded), a 5xx saying "unknown playback session id" gone
    (stopped or expired), any other answer refused.
    """
    text = body.decode("utf-8", "replace").strip()
    message = f"engine playback answered HTTP {code}" + (f": {text[:200]}" if text else "")
    if code in (503, 429):
        return EngineError(503, message, retry_after=5, kind=ErrorKind.UNREACHABLE)
    if code == 408:
        return EngineError(504, message, kind=ErrorKind.TIMEOUT)
    if 400 <= code < 500 or UNKNOWN_SESSION in text:
        return EngineError(502, message, kind=ErrorKind.GONE)
    return EngineError(502, message, kind=ErrorKind.REFUSED)


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
        """
        pid = str(uuid.uuid4())
        params: List[Tuple[str, str]] = [(selector.kind, selector.value), ("format", "json"), ("pid", pid)]
        params.extend(selector.extra)
        self.json_calls += 1
        reply = self._get_json(f"{self.base_url}/ace/getstream?{urlencode(params)}", self.json_timeout, "getstream")
        return reply.addCallback(self._session, pid)

    def _session(self, reply: Any, pid: str) -> EngineSession:
        def refused(message: str) -> EngineError:
            return EngineError(502, message, kind=ErrorKind.REFUSED)

        if not isinstance(reply, dict):
            raise refused("engine replied with JSON that is not an object")
        if reply.get("error"):
            raise refused(f"engine: {reply['error']}")
        response = reply.get("response")
        if not isinstance(response, dict) or not response.get("playback_url"):
            raise refused("engine reply has no playback_url")
        if response.get("is_encrypted") in (1, "1", True):
            raise refused("engine: encrypted content cannot be served as MPEG-TS")
        stat_url = response.get("stat_url")
        command_url = response.get("command_url")
        bitrate = response.get("bitrate")
        return EngineSession(
            playback_url=rebase(response["playback_url"], self.base_url),
            stat_url=rebase(stat_url, self.base_url) if stat_url else None,
            command_url=rebase(command_url, self.base_url) if command_url else None,
            infohash=str(response.get("infohash") or "").lower(),
            playback_session_id=str(response.get("playback_session_id") or ""),
            pid=pid,
            is_live=int(response.get("is_live", 1) or 0),
            bitrate=int(bitrate) if isinstance(bitrate, (int, float)) else None,
        )

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
                raise _unreachable(failure) from None
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


class _BodyReader(Protocol):
    def __init__(self, reader: "PlaybackReader") -> None:
        self.reader = reader

    def dataReceived(self, data: bytes) -> None:
        self.reader._data(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if reason.check(ResponseDone, PotentialDataLoss):
            self.reader._finish("engine closed the stream")
        else:
            self.reader._finish(f"stream connection lost: {reason.getErrorMessage()}")


class _ErrorBody(Protocol):
    """The start of an error reply's body; the reader ends with L{playback_error} once it is read."""

    def __init__(self, reader: "PlaybackReader", code: int) -> None:
        self.reader = reader
        self.code = code
        self.body = b""

    def dataReceived(self, data: bytes) -> None:
        self.body += data[: _ERROR_BODY_LIMIT - len(self.body)]
        if len(self.body) >= _ERROR_BODY_LIMIT:
            self.reader._http_error(self.code, self.body)
            self.reader._abort()  # enough read: drop the rest

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.reader._http_error(self.code, self.body)


@implementer(IPlaybackReader)
class PlaybackReader:
    """
    One GET of a playback URL (following the engine's redirect), delivering
    body bytes as they arrive. A deadline covers the wait for the first byte
    (the engine sends no headers while it prebuffers); after that an idle
    watchdog ends the read when no byte arrives for C{idle_timeout}. There is
    no deadline on the body as a whole. C{on_end} is called exactly once,
    unless L{stop} was called first.

    How it ends (L{PlaybackEnd.kind}): C{None} when a flowing stream ended
    (closed or cut); C{EMPTY} when the reply ended before any byte;
    C{TIMEOUT} at the first-byte deadline; C{IDLE} from the watchdog;
    C{UNREACHABLE} when the connection failed; an HTTP error as
    L{playback_error} says (C{GONE} when the engine forgot the session).
    """

    log = Logger()

    def __init__(
        self,
        agent: IAgent,
        clock: IReactorTime,
        url: str,
        *,
        on_data: Callable[[bytes], None],
        on_end: Callable[[PlaybackEnd], None],
        first_byte_timeout: float,
        idle_timeout: float,
    ) -> None:
        self.agent = agent
        self.clock = clock
        self.url = url
        self.on_data = on_data
        self.on_end = on_end
        self.first_byte_timeout = first_byte_timeout
        self.idle_timeout = idle_timeout
        self.bytes_read = 0
        self.last_data_at: Optional[float] = None
        self._request: Optional[Deferred[IResponse]] = None
        self._body: Optional[Protocol] = None
        self._error_code: Optional[int] = None
        self._timer: Optional[IDelayedCall] = None
        self._done = False

    def start(self) -> None:
        self._timer = self.clock.callLater(self.first_byte_timeout, self._first_byte_deadline)
        headers = Headers({b"Accept-Encoding": [b"identity"], b"User-Agent": [USER_AGENT]})
        self._request = self.agent.request(b"GET", self.url.encode("ascii"), headers)
        self._request.addCallbacks(self._response, self._request_failed)

    def stop(self) -> None:
        """Abandon the read; no callback follows."""
        if self._done:
            return
        self._done = True
        self._cancel_timer()
        self._abort()

    # -- internals

    def _response(self, response: IResponse) -> None:
        self._request = None
        if self._done:
            response.deliverBody(Protocol())
            return
        if response.code != 200:
            self._error_code = response.code
            self._body = _ErrorBody(self, response.code)
        else:
            self._body = _BodyReader(self)
        response.deliverBody(self._body)

    def _request_failed(self, failure: Failure) -> None:
        self._request = None
        if self._done:
            return
        if is_connection_failure(failure):
            error = _unreachable(failure)
        else:
            error = EngineError(502, f"engine playback failed: {failure.getErrorMessage()}", kind=ErrorKind.REFUSED)
        self._end(f"playback request failed: {failure.getErrorMessage()}", error)

    def _http_error(self, code: int, body: bytes) -> None:
        self._end(f"engine playback answered HTTP {code}", playback_error(code, body))

    def _data(self, data: bytes) -> None:
        if self._done:
            return
        if self.bytes_read == 0:
            self._cancel_timer()
            self._timer = self.clock.callLater(self.idle_timeout, self._idle_check)
        self.bytes_read += len(data)
        self.last_data_at = self.clock.seconds()
        self.on_data(data)

    def _idle_check(self) -> None:
        self._timer = None
        assert self.last_data_at is not None
        quiet = self.clock.seconds() - self.last_data_at
        if quiet >= self.idle_timeout:
            self._end(f"no data for {quiet:.1f} s", EngineError(504, "engine stream went idle", kind=ErrorKind.IDLE))
            self._abort()
        else:
            self._timer = self.clock.callLater(self.idle_timeout - quiet, self._idle_check)

    def _first_byte_deadline(self) -> None:
        self._timer = None
        if self._error_code is not None:
            # an error reply whose body is slow to come: its status says enough
            self._http_error(self._error_code, b"")
        else:
            self._end(
                f"no data within {self.first_byte_timeout:g} s",
                EngineError(504, f"engine sent no data within {self.first_byte_timeout:g} s", kind=ErrorKind.TIMEOUT),
            )
        self._abort()

    def _finish(self, reason: str) -> None:
        if self.bytes_read == 0:
            # "before any data": the old channel matches this text; keep it until it branches on the kind
            self._end(reason, EngineError(502, "engine ended the stream before any data", kind=ErrorKind.EMPTY))
        else:
            self._end(reason, None)

    def _end(self, reason: str, error: Optional[EngineError]) -> None:
        if self._done:
            return
        self._done = True
        self._cancel_timer()
        self.on_end(PlaybackEnd(reason, self.bytes_read, error))

    def _abort(self) -> None:
        if self._request is not None:
            request, self._request = self._request, None
            request.addErrback(lambda f: None)
            request.cancel()
        if self._body is not None:
            body, self._body = self._body, None
            if body.transport is not None:
                cast(IPushProducer, body.transport).stopProducing()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
