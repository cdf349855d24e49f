# -*- test-case-name: tests.test_engine_hls -*-
"""
Reading an engine session's HLS (L{IPlaybackReader}), for content the
engine serves only as HLS: the media playlist is polled, each new segment is
fetched once, in media-sequence order, and its bytes go to the same
C{on_data} a progressive read feeds, so the channel's ring sees one TS.
L{acetwist.upstream.EngineClient.read_hls} starts one.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Deque, List, Optional, Tuple, cast
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
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
from acetwist.engine_http import USER_AGENT, could_not_connect, is_connection_failure, resolve, unreachable
from acetwist.errors import EngineError, ErrorKind
from acetwist.m3u8 import MAX_PLAYLIST_BYTES, MediaSegment, Playlist, PlaylistError, parse_playlist
from acetwist.playback import playback_error

#: Bytes of an error reply's body kept for the message.
_ERROR_BODY_LIMIT = 512
#: The target duration assumed when a playlist gives none (and no #EXTINF either).
DEFAULT_TARGET = 2.0
#: Characters a URL taken from a playlist keeps as they are; anything else is percent-encoded.
_URL_SAFE = "/:?&=%#;@+,~!$'()*[]"


class _Body(Protocol):
    """Hands a response body to the reader: its chunks, then how it ended."""

    def __init__(self, on_chunk: Callable[[bytes], None], on_end: Callable[[Failure], None]) -> None:
        self.on_chunk = on_chunk
        self.on_end = on_end

    def dataReceived(self, data: bytes) -> None:
        self.on_chunk(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.on_end(reason)


class _Fetch:
    """One GET in flight: the request until its headers come, then its body; and its deadline."""

    def __init__(self, request: "Deferred[IResponse]") -> None:
        self.request: Optional[Deferred[IResponse]] = request
        self.body: Optional[_Body] = None
        self.timer: Optional[IDelayedCall] = None
        #: the playlist's HTTP error status while its body is read
        self.error_code: Optional[int] = None

    def done(self) -> None:
        self.request = None
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def abort(self) -> None:
        request = self.request
        self.done()
        if request is not None:
            request.addErrback(lambda f: None)
            request.cancel()
        if self.body is not None:
            body, self.body = self.body, None
            if body.transport is not None:
                cast(IPushProducer, body.transport).stopProducing()


def _complete(reason: Failure) -> bool:
    return reason.check(ResponseDone, PotentialDataLoss) is not None


@implementer(IPlaybackReader)
class HLSReader:
    """
    One read of an engine's HLS media playlist. The playlist is fetched, then
    again about every half target duration (from the start of the previous
    fetch); each segment newer than the last one taken is queued once and
    fetched in order, one request at a time, its bytes handed to C{on_data}
    as they arrive. A read starts with the newest C{start_segments} segments
    (all of them for a finished playlist). A master playlist is followed to
    its first variant.

    C{on_splice} is called right before the first byte of a segment that
    does not continue the bytes already delivered: segments were missed (the
    media sequence jumped past the next one, or a segment failed), or the
    playlist marks an C{#EXT-X-DISCONTINUITY} before it.

    Deadlines, as a progressive read has them: C{first_byte_timeout} for the
    first segment byte (the engine holds the playlist while it prebuffers),
    then an idle watchdog of C{idle_timeout}, but never less than two target
    durations (segments come once per target duration). Each request after
    the first playlist also has a deadline of two target durations (at least
    2 s): a playlist fetch past it is tried again at the next poll, a segment
    past it is skipped.

    How it ends (L{PlaybackEnd.kind}), C{on_end} once unless L{stop} came
    first: the playlist answered an HTTP error (as L{playback_error} says:
    C{GONE} for a 403 or 404 after the session was superseded or forgotten,
    or "unknown playback session id"); C{UNREACHABLE} when the engine could
    not be reached; C{REFUSED} for a playlist that cannot be followed;
    C{TIMEOUT} at the first-byte deadline; C{IDLE} from the watchdog; after
    C{#EXT-X-ENDLIST} and its last segment, no error (or C{EMPTY} if nothing
    came). A segment that fails (HTTP error, lost connection, deadline) is
    skipped and the next one spliced on; one whose engine refuses
    connections ends the read as C{UNREACHABLE}.
    """

    log = Logger()

    def __init__(
        self,
        agent: IAgent,
        clock: IReactorTime,
        url: str,
        *,
        on_data: Callable[[bytes], None],
        on_splice: Callable[[], None],
        on_end: Callable[[PlaybackEnd], None],
        first_byte_timeout: float,
        idle_timeout: float,
        start_segments: int = 2,
    ) -> None:
        self.agent = agent
        self.clock = clock
        self.url = url
        self.on_data = on_data
        self.on_splice = on_splice
        self.on_end = on_end
        self.first_byte_timeout = first_byte_timeout
        self.idle_timeout = idle_timeout
        self.start_segments = max(1, start_segments)
        self.bytes_read = 0
        #: the media playlist polled (a master playlist's variant, or C{url})
        self.playlist_url = url
        self.target: Optional[float] = None
        self.playlists_read = 0
        self.segments_read = 0
        #: segments skipped: gone from the window before they were fetched, or failed
        self.segments_missed = 0
        self.splices = 0
        self._queue: Deque[Tuple[MediaSegment, bool]] = deque()  # (segment, splice before it)
        self._next_sequence: Optional[int] = None
        self._splice_next = False
        self._finished_playlist = False
        self._followed_variant = False
        self._fetch: Optional[_Fetch] = None
        self._poll: Optional[IDelayedCall] = None
        self._polled_at = 0.0
        self._deadline = DataDeadline(clock, first_byte_timeout, lambda: self.idle_limit,
                                      on_no_first_byte=self._first_byte_deadline, on_idle=self._idle)
        self._done = False

    @property
    def last_data_at(self) -> Optional[float]:
        return self._deadline.last_data_at

    def start(self) -> None:
        self._deadline.start()
        self._refresh()

    def stop(self) -> None:
        """Abandon the read: the request in flight is cancelled, no callback follows."""
        if self._done:
            return
        self._done = True
        self._release()

    # ------------------------------------------------------------ timing

    @property
    def poll_interval(self) -> float:
        """Half the target duration (at least 0.1 s)."""
        return max((self.target or DEFAULT_TARGET) / 2, 0.1)

    @property
    def idle_limit(self) -> float:
        return max(self.idle_timeout, 2 * (self.target or 0.0))

    @property
    def request_timeout(self) -> float:
        return max(2 * (self.target or DEFAULT_TARGET), 2.0)

    def _first_byte_deadline(self) -> None:
        if self._playlist_error():
            return
        self._end(f"no data within {self.first_byte_timeout:g} s",
                  EngineError(504, f"engine sent no data within {self.first_byte_timeout:g} s", kind=ErrorKind.TIMEOUT))

    def _idle(self, quiet: float) -> None:
        self._end(f"no data for {quiet:.1f} s", EngineError(504, "engine stream went idle", kind=ErrorKind.IDLE))

    # ------------------------------------------------------------ requests

    def _get(self, url: str, timeout: Optional[float], on_timeout: Callable[[_Fetch], None]) -> _Fetch:
        headers = Headers({b"Accept-Encoding": [b"identity"], b"User-Agent": [USER_AGENT]})
        fetch = _Fetch(self.agent.request(b"GET", quote(url, safe=_URL_SAFE).encode("ascii"), headers))
        self._fetch = fetch
        if timeout is not None and fetch.request is not None:
            fetch.timer = self.clock.callLater(timeout, on_timeout, fetch)
        return fetch

    def _current(self, fetch: _Fetch) -> bool:
        return not self._done and fetch is self._fetch

    def _collect(self, fetch: _Fetch, response: IResponse, limit: int,
                 done: Callable[[bytes, bool], None]) -> None:
        """Read C{response}'s body, up to C{limit} bytes, then C{done(body, complete)}."""
        parts: List[bytes] = []
        size = [0]

        def chunk(data: bytes) -> None:
            if not self._current(fetch):
                return
            take = data[: limit - size[0]]
            parts.append(take)
            size[0] += len(take)
            if len(take) < len(data):
                self._fetch = None
                fetch.abort()
                done(b"".join(parts), False)

        def end(reason: Failure) -> None:
            if self._current(fetch):
                self._fetch = None
                fetch.done()
                done(b"".join(parts), _complete(reason))

        fetch.body = _Body(chunk, end)
        response.deliverBody(fetch.body)

    def _discard(self, response: IResponse) -> None:
        response.deliverBody(Protocol())

    # ------------------------------------------------------------ the playlist

    def _refresh(self) -> None:
        self._poll = None
        if self._done:
            return
        self._polled_at = self.clock.seconds()
        # before any data the first-byte deadline covers the wait: the engine holds the playlist while it prebuffers
        timeout = self.request_timeout if self.bytes_read else None
        fetch = self._get(self.playlist_url, timeout, self._playlist_timed_out)
        assert fetch.request is not None
        fetch.request.addCallbacks(self._playlist_response, self._playlist_failed,
                                   callbackArgs=(fetch,), errbackArgs=(fetch,))

    def _playlist_response(self, response: IResponse, fetch: _Fetch) -> None:
        if not self._current(fetch):
            self._discard(response)
            return
        fetch.request = None
        if response.code != 200:
            code = fetch.error_code = response.code
            self._collect(fetch, response, _ERROR_BODY_LIMIT,
                          lambda body, _: self._end(f"engine playlist answered HTTP {code}",
                                                    playback_error(code, body)))
        else:
            self._collect(fetch, response, MAX_PLAYLIST_BYTES, self._playlist_body)

    def _playlist_failed(self, failure: Failure, fetch: _Fetch) -> None:
        if not self._current(fetch):
            return
        self._fetch = None
        fetch.done()
        if is_connection_failure(failure):
            error = unreachable(failure)
        else:
            error = EngineError(502, f"engine playlist failed: {failure.getErrorMessage()}", kind=ErrorKind.REFUSED)
        self._end(f"playlist request failed: {failure.getErrorMessage()}", error)

    def _playlist_error(self) -> bool:
        """End with the error status of a playlist reply whose body is slow to come (its status says enough)."""
        fetch = self._fetch
        if fetch is None or fetch.error_code is None:
            return False
        code = fetch.error_code
        self._end(f"engine playlist answered HTTP {code}", playback_error(code))
        return True

    def _playlist_timed_out(self, fetch: _Fetch) -> None:
        if not self._current(fetch) or self._playlist_error():
            return
        self.log.info("engine HLS playlist did not answer within {t:g} s; polling again", t=self.request_timeout)
        self._fetch = None
        fetch.abort()
        self._next()

    def _playlist_body(self, body: bytes, complete: bool) -> None:
        if not complete:
            if len(body) >= MAX_PLAYLIST_BYTES:
                self._refused(f"engine playlist larger than {MAX_PLAYLIST_BYTES} bytes")
            else:
                self._next()  # the connection was lost mid-playlist: poll again
            return
        try:
            playlist = parse_playlist(body)
        except PlaylistError as e:
            self._refused(f"engine playlist: {e}")
            return
        self.playlists_read += 1
        if playlist.variants and not playlist.segments:
            if self._followed_variant:
                self._refused("engine playlist: a variant is a master playlist again")
                return
            self._followed_variant = True
            self.playlist_url = resolve(playlist.variants[0], self.playlist_url)
            self._refresh()
            return
        self.target = playlist.target_duration or max((s.duration or 0.0 for s in playlist.segments),
                                                      default=0.0) or self.target
        self._take(playlist)
        self._finished_playlist = playlist.ended
        self._next()

    def _take(self, playlist: Playlist) -> None:
        """Queue the segments not taken yet, in order, each with whether it splices."""
        segments = playlist.segments
        if not segments:
            return
        if self._next_sequence is None:
            first = 0 if playlist.ended else max(0, len(segments) - self.start_segments)
            self._next_sequence = segments[first].sequence
        for segment in segments:
            if segment.sequence < self._next_sequence:
                continue  # taken already (or older than where this read started)
            missed = segment.sequence - self._next_sequence
            if missed:
                self.segments_missed += missed
                self.log.info("engine HLS: {n} segment(s) left the window before they were fetched ({first}..{last})",
                              n=missed, first=self._next_sequence, last=segment.sequence - 1)
            self._queue.append((segment, bool(missed) or segment.discontinuity))
            self._next_sequence = segment.sequence + 1

    def _next(self) -> None:
        """Fetch the next queued segment, or end a finished playlist, or poll again in time."""
        if self._done:
            return
        if self._queue:
            self._fetch_segment(*self._queue.popleft())
        elif self._finished_playlist:
            if self.bytes_read:
                self._end("engine playlist ended", None)
            else:
                self._end("engine playlist ended", EngineError(502, "engine ended the stream before any data",
                                                               kind=ErrorKind.EMPTY))
        else:
            delay = max(0.0, self._polled_at + self.poll_interval - self.clock.seconds())
            self._poll = self.clock.callLater(delay, self._refresh)

    # ------------------------------------------------------------ segments

    def _fetch_segment(self, segment: MediaSegment, splice: bool) -> None:
        if splice:
            self._splice_next = True
        fetch = self._get(resolve(segment.uri, self.playlist_url), self.request_timeout,
                          lambda f: self._segment_timed_out(f, segment))
        assert fetch.request is not None
        fetch.request.addCallbacks(self._segment_response, self._segment_request_failed,
                                   callbackArgs=(fetch, segment), errbackArgs=(fetch, segment))

    def _segment_response(self, response: IResponse, fetch: _Fetch, segment: MediaSegment) -> None:
        if not self._current(fetch):
            self._discard(response)
            return
        fetch.request = None
        if response.code != 200:
            code = response.code
            self._collect(fetch, response, _ERROR_BODY_LIMIT,
                          lambda body, _: self._segment_failed(segment, f"HTTP {code}"))
            return

        def chunk(data: bytes) -> None:
            if self._current(fetch):
                self._data(data)

        def end(reason: Failure) -> None:
            if not self._current(fetch):
                return
            self._fetch = None
            fetch.done()
            if _complete(reason):
                self.segments_read += 1
                self._next()
            else:
                self._segment_failed(segment, reason.getErrorMessage())

        fetch.body = _Body(chunk, end)
        response.deliverBody(fetch.body)

    def _segment_request_failed(self, failure: Failure, fetch: _Fetch, segment: MediaSegment) -> None:
        if not self._current(fetch):
            return
        self._fetch = None
        fetch.done()
        if could_not_connect(failure):
            self._end(f"segment request failed: {failure.getErrorMessage()}", unreachable(failure))
        else:
            self._segment_failed(segment, failure.getErrorMessage())

    def _segment_timed_out(self, fetch: _Fetch, segment: MediaSegment) -> None:
        if not self._current(fetch):
            return
        self._fetch = None
        fetch.abort()
        self._segment_failed(segment, f"no whole segment within {self.request_timeout:g} s")

    def _segment_failed(self, segment: MediaSegment, why: str) -> None:
        self.log.info("engine HLS segment {n} skipped: {why}", n=segment.sequence, why=why)
        self.segments_missed += 1
        self._splice_next = True
        self._next()

    def _data(self, data: bytes) -> None:
        if not data:
            return
        if self._splice_next:
            self._splice_next = False
            if self.bytes_read:
                self.splices += 1
                self.on_splice()
                if self._done:
                    return
        self._deadline.data()
        self.bytes_read += len(data)
        self.on_data(data)

    # ------------------------------------------------------------ ending

    def _refused(self, message: str) -> None:
        self._end(message, EngineError(502, message, kind=ErrorKind.REFUSED))

    def _end(self, reason: str, error: Optional[EngineError]) -> None:
        if self._done:
            return
        self._done = True
        self._release()
        self.on_end(PlaybackEnd(reason, self.bytes_read, error))

    def _release(self) -> None:
        self._deadline.stop()
        if self._poll is not None and self._poll.active():
            self._poll.cancel()
        self._poll = None
        self._queue.clear()
        fetch, self._fetch = self._fetch, None
        if fetch is not None:
            fetch.abort()
