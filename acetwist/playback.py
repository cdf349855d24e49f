# -*- test-case-name: tests.test_upstream,tests.test_engine_contract -*-
"""
Reading an engine session's playback URL (L{IPlaybackReader}): one GET,
the body bytes handed on as they arrive, a first-byte deadline and an idle
watchdog, and why the read ended (L{playback_error} for an HTTP error).
L{acetwist.upstream.EngineClient.read} starts one.
"""

from __future__ import annotations

from typing import Callable, Optional, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IAgent, IResponse
from zope.interface import implementer

from acetwist.engine_api import IPlaybackReader, PlaybackEnd
from acetwist.data_deadline import DataDeadline
from acetwist.engine_http import USER_AGENT, is_connection_failure, unreachable
from acetwist.errors import EngineError, ErrorKind

#: What the engine says of a session it does not know (stopped, expired, superseded).
UNKNOWN_SESSION = "unknown playback session id"

#: Bytes of an error reply's body kept for the message (and to recognise UNKNOWN_SESSION).
_ERROR_BODY_LIMIT = 512


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
        self._request: Optional[Deferred[IResponse]] = None
        self._body: Optional[Protocol] = None
        self._error_code: Optional[int] = None
        self._deadline = DataDeadline(clock, first_byte_timeout, lambda: self.idle_timeout,
                                      on_no_first_byte=self._first_byte_deadline, on_idle=self._idle)
        self._done = False

    @property
    def last_data_at(self) -> Optional[float]:
        return self._deadline.last_data_at

    def start(self) -> None:
        self._deadline.start()
        headers = Headers({b"Accept-Encoding": [b"identity"], b"User-Agent": [USER_AGENT]})
        self._request = self.agent.request(b"GET", self.url.encode("ascii"), headers)
        self._request.addCallbacks(self._response, self._request_failed)

    def stop(self) -> None:
        """Abandon the read; no callback follows."""
        if self._done:
            return
        self._done = True
        self._deadline.stop()
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
            error = unreachable(failure)
        else:
            error = EngineError(502, f"engine playback failed: {failure.getErrorMessage()}", kind=ErrorKind.REFUSED)
        self._end(f"playback request failed: {failure.getErrorMessage()}", error)

    def _http_error(self, code: int, body: bytes) -> None:
        self._end(f"engine playback answered HTTP {code}", playback_error(code, body))

    def _data(self, data: bytes) -> None:
        if self._done:
            return
        self._deadline.data()
        self.bytes_read += len(data)
        self.on_data(data)

    def _idle(self, quiet: float) -> None:
        self._end(f"no data for {quiet:.1f} s", EngineError(504, "engine stream went idle", kind=ErrorKind.IDLE))
        self._abort()

    def _first_byte_deadline(self) -> None:
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
        self._deadline.stop()
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
