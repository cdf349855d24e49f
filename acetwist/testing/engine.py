"""An IEngine and IPlaybackReader that tests complete by hand; their endings give the real client's errors
(C{tests/test_engine_contract.py} runs the same behaviours against both).
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Union

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from acetwist.engine_api import HLS, TS, EngineSession, IEngine, IPlaybackReader, PlaybackEnd, Selector
from acetwist.errors import EngineError, ErrorKind
from acetwist.upstream import playback_error


def engine_error(kind: ErrorKind, message: str = "") -> EngineError:
    """An error of C{kind} with the status and Retry-After the real engine client gives it."""
    retry_after = 5 if kind is ErrorKind.UNREACHABLE else None
    return EngineError(kind.status, message or f"engine: {kind.value}", retry_after, kind=kind)


@implementer(IPlaybackReader)
class FakeReader:
    """
    A playback read the test drives: L{feed} it bytes, then end it the way
    the engine would (L{cut}, L{empty}, L{gone}) or with any error (L{end}).
    Like the real reader it calls C{on_end} at most once and never after
    L{stop}; C{stopped} is true once either happened.
    """

    def __init__(self, engine: "FakeEngine", url: str, on_data: Callable[[bytes], None],
                 on_end: Callable[[PlaybackEnd], None], first_byte_timeout: float, idle_timeout: float = 0.0,
                 on_splice: Optional[Callable[[], None]] = None) -> None:
        self.engine = engine
        #: set for a read of an HLS session (L{IEngine.read_hls})
        self.on_splice = on_splice
        self.url = url
        self.on_data = on_data
        self.on_end = on_end
        self.first_byte_timeout = first_byte_timeout
        self.idle_timeout = idle_timeout
        self.stopped = False
        self.bytes_read = 0

    def feed(self, data: bytes) -> None:
        """The engine sends C{data}."""
        assert not self.stopped, "a stopped or ended read gets no data"
        self.bytes_read += len(data)
        self.on_data(data)

    def splice(self) -> None:
        """An HLS read: the next segment does not continue the bytes fed so far (segments missed, a discontinuity)."""
        assert self.on_splice is not None, "splice() is for a read of an HLS session"
        assert not self.stopped, "a stopped or ended read does not splice"
        self.on_splice()

    def end(self, reason: str = "cut", error: Union[EngineError, ErrorKind, None] = None) -> None:
        """End the read with C{error} (an L{EngineError}, or a kind made into one by L{engine_error})."""
        assert not self.stopped, "a stopped or ended read does not end again"
        if isinstance(error, ErrorKind):
            error = engine_error(error, reason)
        self.stopped = True
        self.on_end(PlaybackEnd(reason, self.bytes_read, error))

    def cut(self) -> None:
        """The engine ends a flowing stream (closed or reset): no error, the bytes read so far."""
        assert self.bytes_read > 0, "cut() ends a stream that delivered data; use empty() before any"
        self.end("engine closed the stream")

    def empty(self) -> None:
        """The playback reply ends before any byte (the engine is warming up): C{EMPTY}."""
        assert self.bytes_read == 0, "empty() is an end before any data"
        self.end("engine closed the stream",
                 EngineError(502, "engine ended the stream before any data", kind=ErrorKind.EMPTY))

    def gone(self, code: int = 404, body: bytes = b"download not found") -> None:
        """The playback URL answers HTTP C{code}: the engine no longer knows the session (C{GONE})."""
        assert self.bytes_read == 0, "an HTTP error comes before any data"
        self.end(f"engine playback answered HTTP {code}", playback_error(code, body))

    def stop(self) -> None:
        """Abandon the read; no callback follows."""
        self.stopped = True


@implementer(IEngine)
class FakeEngine:
    """
    An engine client whose JSON calls and reads the test completes by hand:
    C{opens} are the pending L{open_session} Deferreds (L{answer} or
    L{refuse} them), C{readers} every L{FakeReader}. It tracks which sessions
    are live as the engine would: L{stop} is True once for a live session,
    L{restart} forgets them all. Set C{down} while the engine cannot be
    reached: L{stop} then says False (JSON calls and reads are still ended by
    hand, with C{refuse(ErrorKind.UNREACHABLE)} and C{end(..., ErrorKind.UNREACHABLE)}).
    """

    base_url = "http://engine.invalid:6878"

    def __init__(self, infohash: str = "ab" * 20) -> None:
        self.infohash = infohash
        self.opens: List[Deferred[EngineSession]] = []
        self.selectors: List[Selector] = []
        self.readers: List[FakeReader] = []
        #: pids of every session stop was asked for, in order
        self.stopped: List[str] = []
        self.json_calls = 0
        self.stop_calls = 0
        self.restarts = 0
        self.down = False
        self._live: Dict[str, EngineSession] = {}  # by pid

    def open_session(self, selector: Selector) -> Deferred[EngineSession]:
        self.json_calls += 1
        self.selectors.append(selector)
        d: Deferred[EngineSession] = Deferred()
        self.opens.append(d)
        return d

    def session(self, n: int, infohash: Optional[str] = None, format: str = TS) -> EngineSession:
        """The session the C{n}th JSON call gets (URLs on C{base_url}, C{pid-n}); an HLS one has a playlist URL."""
        ih = infohash or self.infohash
        path = f"m/{ih}/{n:032x}.m3u8" if format == HLS else f"r/{ih}/{n:032x}"
        return EngineSession(
            playback_url=f"{self.base_url}/ace/{path}",
            stat_url=f"{self.base_url}/ace/stat/{ih}/{n:032x}",
            command_url=f"{self.base_url}/ace/cmd/{ih}/{n:032x}",
            infohash=ih,
            playback_session_id=f"{n:040x}",
            pid=f"pid-{n}",
            format=format,
        )

    def answer(self, index: int = -1, infohash: Optional[str] = None, format: str = TS) -> EngineSession:
        """Complete the C{index}th JSON call with a (live) session (of C{format} L{HLS}: content served only as HLS)."""
        n = index if index >= 0 else len(self.opens) + index
        session = self.session(n, infohash, format)
        self._live[session.pid] = session
        self.opens[n].callback(session)
        return session

    def refuse(self, error: Union[EngineError, ErrorKind] = ErrorKind.REFUSED, index: int = -1) -> None:
        """Fail the C{index}th JSON call with C{error} (or the real client's error of that kind)."""
        if isinstance(error, ErrorKind):
            error = engine_error(error, "engine: failed to load content" if error is ErrorKind.REFUSED else "")
        self.opens[index].errback(error)

    def knows(self, url: str) -> bool:
        """C{url} is the playback URL of a live session (answered, not stopped, not forgotten)."""
        return any(session.playback_url == url for session in self._live.values())

    def restart(self) -> None:
        """
        The engine restarts: every session is forgotten, flowing reads are
        cut, reads still waiting for data lose their connection (C{UNREACHABLE}).
        """
        self.restarts += 1
        self._live.clear()
        for reader in list(self.readers):  # a channel may start a new read from on_end: not this restart's
            if reader.stopped:
                continue
            if reader.bytes_read:
                reader.cut()
            else:
                reader.end("playback request failed: connection lost", ErrorKind.UNREACHABLE)

    def read(self, url: str, *, on_data: Callable[[bytes], None], on_end: Callable[[PlaybackEnd], None],
             first_byte_timeout: float, idle_timeout: float) -> FakeReader:
        reader = FakeReader(self, url, on_data, on_end, first_byte_timeout, idle_timeout)
        self.readers.append(reader)
        return reader

    def read_hls(self, url: str, *, on_data: Callable[[bytes], None], on_splice: Callable[[], None],
                 on_end: Callable[[PlaybackEnd], None], first_byte_timeout: float, idle_timeout: float) -> FakeReader:
        reader = FakeReader(self, url, on_data, on_end, first_byte_timeout, idle_timeout, on_splice)
        self.readers.append(reader)
        return reader

    def stop(self, session: EngineSession) -> Deferred[bool]:
        """True if C{session} was live (it is not any more), False otherwise (or while C{down}); never fails."""
        self.stop_calls += 1
        self.stopped.append(session.pid)
        if self.down:
            return succeed(False)
        return succeed(self._live.pop(session.pid, None) == session)

    def close(self) -> Deferred[None]:
        return succeed(None)
