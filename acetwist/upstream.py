# -*- test-case-name: tests.test_upstream -*-
"""
The AceStream engine client: the C{format=json} getstream call, the playback
reader, and C{stop}/C{stat} on the session's URLs.

Every call has its own deadline. Failures before any stream byte become
L{EngineError}s carrying the HTTP status the player should get.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable, Dict, List, Optional, Set, Tuple
from urllib.parse import urlencode, urlsplit, urlunsplit

import attr
import treq
from treq.client import HTTPClient
from twisted.internet import error as net_error
from twisted.internet.defer import CancelledError, Deferred, DeferredList, TimeoutError, inlineCallbacks
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, RedirectAgent, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers

from acetwist.errors import EngineError, ErrorKind

USER_AGENT = b"acetwist"


@attr.s(frozen=True, auto_attribs=True)
class Selector:
    """What a player asked for: C{kind} is C{"id"} or C{"infohash"}; C{extra} are passed-through engine parameters."""

    kind: str
    value: str
    extra: Tuple[Tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        return stream_key(self.kind, self.value, self.extra)


def stream_key(kind: str, value: str, extra: Tuple[Tuple[str, str], ...] = ()) -> str:
    """The stream key of a selector: C{id:<hex>} or C{infohash:<hex>}, plus sorted extras."""
    key = f"{kind}:{value}"
    if extra:
        key += "?" + urlencode(sorted(extra))
    return key


@attr.s(frozen=True, auto_attribs=True)
class EngineSession:
    """One engine playback session, with its URLs rebased onto the engine's own address."""

    playback_url: str
    stat_url: Optional[str]
    command_url: Optional[str]
    infohash: str
    playback_session_id: str
    pid: str
    is_live: int = 1
    bitrate: Optional[int] = None


def rebase(url: str, engine: str) -> str:
    """Put C{url}'s path and query on the engine's scheme://host:port (engines build URLs from Host)."""
    base = urlsplit(engine)
    parts = urlsplit(url)
    return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))


def _connection_failure(failure: Failure) -> bool:
    return bool(
        failure.check(
            net_error.ConnectError,
            net_error.ConnectionRefusedError,
            net_error.DNSLookupError,
            net_error.TCPTimedOutError,
            net_error.ConnectingCancelledError,
            net_error.ConnectionLost,
            net_error.ConnectionDone,
        )
    ) or "ResponseNeverReceived" in type(failure.value).__name__ or "RequestTransmissionFailed" in type(
        failure.value
    ).__name__


class EngineClient:
    """
    Talks to one AceStream engine. Owns its HTTP connection pool; call
    L{close} when done.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
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

    @inlineCallbacks
    def close(self) -> Any:
        """Wait for calls in flight (each has its own deadline), then close the pooled connections."""
        while self._in_flight:
            yield DeferredList(list(self._in_flight), consumeErrors=True)
        yield self.pool.closeCachedConnections()

    def _track(self, d: Deferred[Any]) -> Deferred[Any]:
        self._in_flight.add(d)

        def done(result: Any) -> Any:
            self._in_flight.discard(d)
            return result

        d.addBoth(done)
        return d

    # ---------------------------------------------------------------- JSON

    @inlineCallbacks
    def open_session(self, selector: Selector) -> Any:
        """
        Start an engine session for C{selector} with a fresh player id. Fires
        with an L{EngineSession} or fails with L{EngineError}.
        """
        pid = str(uuid.uuid4())
        params: List[Tuple[str, str]] = [(selector.kind, selector.value), ("format", "json"), ("pid", pid)]
        params.extend(selector.extra)
        url = f"{self.base_url}/ace/getstream?{urlencode(params)}"
        self.json_calls += 1
        reply = yield self._get_json(url, self.json_timeout, "getstream")
        if not isinstance(reply, dict):
            raise EngineError(502, "engine replied with JSON that is not an object")
        if reply.get("error"):
            raise EngineError(502, f"engine: {reply['error']}")
        response = reply.get("response")
        if not isinstance(response, dict) or not response.get("playback_url"):
            raise EngineError(502, "engine reply has no playback_url")
        if response.get("is_encrypted") in (1, "1", True):
            raise EngineError(502, "engine: encrypted content cannot be served as MPEG-TS")
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
        return self._track(self._fetch_json(url, timeout, what))

    @inlineCallbacks
    def _fetch_json(self, url: str, timeout: float, what: str) -> Any:
        try:
            response = yield self.http.get(url, timeout=timeout, reactor=self.reactor, headers={b"User-Agent": [USER_AGENT]})
            body = yield _with_timeout(treq.content(response), timeout, self.reactor)
        except (CancelledError, TimeoutError):
            raise EngineError(504, f"engine did not answer {what} within {timeout:g} s") from None
        except Exception as e:
            if _connection_failure(Failure(e)):
                raise EngineError(503, f"engine unreachable: {e.__class__.__name__}", retry_after=5) from None
            raise EngineError(502, f"engine {what} failed: {e}") from None
        if response.code == 503:
            raise EngineError(503, "engine answered 503", retry_after=5)
        if response.code != 200:
            raise EngineError(502, f"engine answered HTTP {response.code} to {what}")
        try:
            return json.loads(body)
        except ValueError:
            raise EngineError(502, f"engine's {what} reply is not JSON") from None

    # ---------------------------------------------------------------- stop / stat

    def stop(self, session: EngineSession) -> Deferred[bool]:
        """
        Ask the engine to stop C{session}. Fires True if it said ok, False
        otherwise (unknown session, error, timeout); never fails.
        """
        if not session.command_url:
            return Deferred.fromCoroutine(_value(False))
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

    def stat(self, session: EngineSession) -> Deferred[Optional[Dict[str, Any]]]:
        """The engine's stat for C{session}, or None (gone, error, timeout); never fails."""
        if not session.stat_url:
            return Deferred.fromCoroutine(_value(None))
        d = self._get_json(session.stat_url, self.stop_timeout, "stat")

        def done(reply: Any) -> Optional[Dict[str, Any]]:
            if isinstance(reply, dict) and isinstance(reply.get("response"), dict):
                return reply["response"]
            return None

        return d.addCallbacks(done, lambda _: None)

    # ---------------------------------------------------------------- playback

    def read(
        self,
        url: str,
        *,
        on_data: Callable[[bytes], None],
        on_end: Callable[["PlaybackEnd"], None],
        first_byte_timeout: float,
        idle_timeout: float,
    ) -> "PlaybackReader":
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


async def _value(v: Any) -> Any:
    return v


def _with_timeout(d: Deferred[Any], timeout: float, clock: IReactorTime) -> Deferred[Any]:
    return d.addTimeout(timeout, clock)


@attr.s(frozen=True, auto_attribs=True)
class PlaybackEnd:
    """
    Why a playback read ended. C{bytes_read} tells a cut of a flowing stream
    from a failure to start; C{error} is set when the failure deserves a
    specific HTTP status for players still waiting.
    """

    reason: str
    bytes_read: int
    error: Optional[EngineError] = None


class _BodyReader(Protocol):
    def __init__(self, reader: "PlaybackReader") -> None:
        self.reader = reader

    def dataReceived(self, data: bytes) -> None:
        self.reader._data(data)

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        if reason is not None and reason.check(ResponseDone, PotentialDataLoss):
            self.reader._finish("engine closed the stream")
        else:
            why = reason.getErrorMessage() if reason is not None else "lost"
            self.reader._finish(f"stream connection lost: {why}")


class PlaybackReader:
    """
    One GET of a playback URL (following the engine's redirect), delivering
    body bytes as they arrive. A deadline covers the wait for the first byte
    (the engine sends no headers while it prebuffers); after that an idle
    watchdog ends the read when no byte arrives for C{idle_timeout}. There is
    no deadline on the body as a whole. C{on_end} is called exactly once,
    unless L{stop} was called first.
    """

    log = Logger()

    def __init__(
        self,
        agent: Any,
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
        self._request: Optional[Deferred[Any]] = None
        self._body: Optional[_BodyReader] = None
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

    def _response(self, response: Any) -> None:
        self._request = None
        if self._done:
            response.deliverBody(Protocol())
            return
        if response.code != 200:
            status = 503 if response.code == 503 else 502
            kind = ErrorKind.GONE if 400 <= response.code < 500 else None
            self._end(f"engine playback answered HTTP {response.code}",
                      EngineError(status, f"engine playback answered HTTP {response.code}",
                                  retry_after=5 if status == 503 else None, kind=kind))
            response.deliverBody(_Discard())
            return
        self._body = _BodyReader(self)
        response.deliverBody(self._body)

    def _request_failed(self, failure: Failure) -> None:
        self._request = None
        if self._done:
            return
        if _connection_failure(failure):
            error = EngineError(503, f"engine unreachable: {failure.type.__name__}", retry_after=5)
        else:
            error = EngineError(502, f"engine playback failed: {failure.getErrorMessage()}")
        self._end(f"playback request failed: {failure.getErrorMessage()}", error)

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
        self._end(
            f"no data within {self.first_byte_timeout:g} s",
            EngineError(504, f"engine sent no data within {self.first_byte_timeout:g} s"),
        )
        self._abort()

    def _finish(self, reason: str) -> None:
        if self.bytes_read == 0:
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
        if self._body is not None and self._body.transport is not None:
            self._body.transport.stopProducing()
            self._body = None

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


class _Discard(Protocol):
    def dataReceived(self, data: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure = None) -> None:  # type: ignore[assignment]
        pass
