"""
The engine contract (L{IEngine}), written once and run against
L{FakeEngine} (driven to act as the engine would) and L{EngineClient}
talking to the real simulator on loopback.

The fake side plays the engine with a small model: a catalogue of contents,
the fake's own record of live sessions (answered, not stopped, not forgotten
by a restart), and a down switch. The same assertions on kinds, statuses and
counters then hold for both, so a channel test written with the fake's
conveniences (C{answer}, C{refuse}, C{reader.gone()}, ...) describes what the
real client does.
"""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from acetwist.engine_api import IEngine, IPlaybackReader
from acetwist.errors import EngineError, ErrorKind
from acetwist.sim.contents import DEFAULT_CONTENTS
from acetwist.sim.testing import start_simulator
from acetwist.testing import FakeEngine, FakeReader, fetch, free_port, wait_for
from acetwist.upstream import EngineClient, EngineSession, PlaybackEnd, Selector
from tests.fakes import gop

FIRST, SECOND = DEFAULT_CONTENTS[0], DEFAULT_CONTENTS[1]
UNKNOWN = Selector("id", "f" * 40)


def selector(content: Any) -> Selector:
    return Selector("id", content.content_id)


def made_up_session(base_url: str) -> EngineSession:
    """A session on C{base_url} that the engine never opened."""
    token = "e" * 32
    return EngineSession(
        playback_url=f"{base_url}/ace/r/{FIRST.infohash}/{token}",
        stat_url=f"{base_url}/ace/stat/{FIRST.infohash}/{token}",
        command_url=f"{base_url}/ace/cmd/{FIRST.infohash}/{token}",
        infohash=FIRST.infohash, playback_session_id="0" * 40, pid="never-opened")


class Read:
    """One read of a playback URL: what it delivered and how it ended."""

    def __init__(self, engine: Any, url: str) -> None:
        self.chunks: List[bytes] = []
        self.ends: List[PlaybackEnd] = []
        self.ended: Deferred[PlaybackEnd] = Deferred()
        self.reader = engine.read(url, on_data=self.chunks.append, on_end=self._end,
                                  first_byte_timeout=10.0, idle_timeout=10.0)

    def _end(self, end: PlaybackEnd) -> None:
        self.ends.append(end)
        self.ended.callback(end)

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


class EngineContract:
    """Behaviours every engine client shows. Subclasses make one and play the engine's part."""

    engine: Any

    # -- provided by subclasses: the engine's side

    def answers(self, d: "Deferred[EngineSession]") -> "Deferred[EngineSession]":
        """The engine answers the JSON call C{d} was returned for, as it would; C{d} itself."""
        raise NotImplementedError

    def serves(self, read: Read) -> Deferred[None]:
        """The engine answers C{read}: fires once it delivered data or ended."""
        raise NotImplementedError

    def restart_engine(self) -> Deferred[None]:
        """The engine restarts and forgets every session."""
        raise NotImplementedError

    def engine_answers_503(self) -> Deferred[None]:
        """From now on the engine answers every request with 503."""
        raise NotImplementedError

    def unreachable_engine(self) -> Any:
        """A new engine client whose engine cannot be reached at all."""
        raise NotImplementedError

    def quiet(self) -> Deferred[None]:
        """Give a late callback the chance to arrive."""
        raise NotImplementedError

    # -- helpers

    @inlineCallbacks
    def open(self, content: Any = FIRST) -> Any:
        session = yield self.answers(self.engine.open_session(selector(content)))
        return session

    @inlineCallbacks
    def open_error(self, engine: Any, which: Selector) -> Any:
        try:
            yield self.answers(engine.open_session(which))
        except EngineError as e:
            return e
        raise AssertionError("open_session did not fail")

    @inlineCallbacks
    def read(self, url: str, engine: Any = None) -> Any:
        read = Read(engine or self.engine, url)
        self.reads.append(read)
        yield self.serves(read)
        return read

    @inlineCallbacks
    def flowing(self, session: EngineSession) -> Any:
        read = yield self.read(session.playback_url)
        self.assertEqual(read.ends, [])
        self.assertGreater(read.reader.bytes_read, 0)
        return read

    def assertError(self, error: EngineError, kind: ErrorKind, status: int, retry_after: Any = None) -> None:
        self.assertIsInstance(error, EngineError)
        self.assertEqual((error.kind, error.status, error.retry_after), (kind, status, retry_after), repr(error))
        self.assertEqual(error.definitive, kind is ErrorKind.GONE)

    # -- the contract

    def test_provides_the_interfaces(self) -> None:
        """The engine provides IEngine and its readers IPlaybackReader."""
        verifyObject(IEngine, self.engine)
        url = made_up_session(self.engine.base_url).playback_url
        read = Read(self.engine, url)
        self.reads.append(read)
        verifyObject(IPlaybackReader, read.reader)
        self.assertEqual(read.reader.url, url)
        read.reader.stop()

    @inlineCallbacks
    def test_session_urls_are_on_the_engine(self) -> Any:
        """A session's URLs are on the engine's base URL; two contents get two sessions with their own pid."""
        first = yield self.open(FIRST)
        second = yield self.open(SECOND)
        for session in (first, second):
            for url in (session.playback_url, session.stat_url, session.command_url):
                self.assertTrue(url.startswith(self.engine.base_url + "/ace/"), url)
        self.assertEqual((first.infohash, second.infohash), (FIRST.infohash, SECOND.infohash))
        self.assertNotEqual(first.pid, second.pid)
        self.assertNotEqual(first.playback_url, second.playback_url)
        self.assertEqual(self.engine.json_calls, 2)

    @inlineCallbacks
    def test_reading_delivers_the_stream_until_stopped(self) -> Any:
        """Reading a session's playback URL delivers TS bytes counted by bytes_read; after stop() nothing follows."""
        session = yield self.open()
        read = yield self.flowing(session)
        self.assertEqual(read.data[:1], b"\x47")
        self.assertEqual(len(read.data), read.reader.bytes_read)
        read.reader.stop()
        stopped = yield self.engine.stop(session)
        self.assertTrue(stopped)
        yield self.quiet()
        self.assertEqual(read.ends, [])

    @inlineCallbacks
    def test_refused_content(self) -> Any:
        """Content the engine cannot load fails the JSON call with REFUSED, a 502."""
        error = yield self.open_error(self.engine, UNKNOWN)
        self.assertError(error, ErrorKind.REFUSED, 502)
        self.assertIn("failed to load content", error.message)
        self.assertEqual(self.engine.json_calls, 1)

    @inlineCallbacks
    def test_restart_makes_the_old_playback_url_gone(self) -> Any:
        """After an engine restart the flowing read is cut, the old URL ends GONE, stop says False, a new session works."""
        old = yield self.open()
        read = yield self.flowing(old)
        yield self.restart_engine()
        cut = yield read.ended
        self.assertGreater(cut.bytes_read, 0)
        self.assertIsNone(cut.kind)
        again = yield self.read(old.playback_url)
        [end] = again.ends
        self.assertError(end.error, ErrorKind.GONE, 502)
        self.assertEqual(end.bytes_read, 0)
        self.assertEqual(again.chunks, [])
        stopped = yield self.engine.stop(old)
        self.assertFalse(stopped)
        new = yield self.open()
        self.assertNotEqual(new.playback_url, old.playback_url)
        yield self.flowing(new)

    @inlineCallbacks
    def test_stop_is_true_once(self) -> Any:
        """stop() is True for a live session, False the second time and for a session the engine never had."""
        session = yield self.open()
        first = yield self.engine.stop(session)
        second = yield self.engine.stop(session)
        unknown = yield self.engine.stop(made_up_session(self.engine.base_url))
        self.assertEqual((first, second, unknown), (True, False, False))
        self.assertEqual(self.engine.stop_calls, 3)

    @inlineCallbacks
    def test_stopped_session_is_gone(self) -> Any:
        """Reading the playback URL of a session that was stopped ends GONE, without data."""
        session = yield self.open()
        yield self.engine.stop(session)
        read = yield self.read(session.playback_url)
        [end] = read.ends
        self.assertError(end.error, ErrorKind.GONE, 502)
        self.assertEqual(end.bytes_read, 0)

    @inlineCallbacks
    def test_unreachable_engine(self) -> Any:
        """An engine that cannot be reached fails calls with UNREACHABLE (503, Retry-After); stop() says False."""
        engine = self.unreachable_engine()
        error = yield self.open_error(engine, selector(FIRST))
        self.assertError(error, ErrorKind.UNREACHABLE, 503, 5)
        made_up = made_up_session(engine.base_url)
        read = yield self.read(made_up.playback_url, engine)
        [end] = read.ends
        self.assertError(end.error, ErrorKind.UNREACHABLE, 503, 5)
        self.assertEqual(end.bytes_read, 0)
        stopped = yield engine.stop(made_up)
        self.assertFalse(stopped)
        self.assertEqual((engine.json_calls, engine.stop_calls), (1, 1))

    @inlineCallbacks
    def test_engine_answering_503(self) -> Any:
        """An engine answering 503 is UNREACHABLE, for the JSON call, the playback URL and (False) stop."""
        session = yield self.open()
        yield self.engine_answers_503()
        error = yield self.open_error(self.engine, selector(SECOND))
        self.assertError(error, ErrorKind.UNREACHABLE, 503, 5)
        read = yield self.read(session.playback_url)
        [end] = read.ends
        self.assertError(end.error, ErrorKind.UNREACHABLE, 503, 5)
        stopped = yield self.engine.stop(session)
        self.assertFalse(stopped)


class FakeEngineModel:
    """
    Plays the engine for a L{FakeEngine}: knows the catalogue, answers JSON
    calls from it, serves reads from the fake's record of live sessions.
    """

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.catalogue: Dict[str, str] = {c.content_id: c.infohash for c in DEFAULT_CONTENTS}

    def answer(self, d: "Deferred[EngineSession]") -> None:
        index = self.engine.opens.index(d)
        wanted = self.engine.selectors[index]
        if self.engine.down:
            self.engine.refuse(ErrorKind.UNREACHABLE, index)
        elif wanted.kind != "id" or wanted.value not in self.catalogue:
            self.engine.refuse(ErrorKind.REFUSED, index)
        else:
            self.engine.answer(index, infohash=self.catalogue[wanted.value])

    def serve(self, reader: FakeReader) -> None:
        if reader.stopped:
            return
        if self.engine.down:
            reader.end("engine playback answered HTTP 503", ErrorKind.UNREACHABLE)
        elif self.engine.knows(reader.url):
            reader.feed(gop(0))
        else:
            reader.gone()


class FakeEngineContractTests(EngineContract, TestCase):
    """The FakeEngine, played by L{FakeEngineModel}; every Deferred fires at once, no reactor involved."""

    def setUp(self) -> None:
        self.engine = FakeEngine()
        self.model = FakeEngineModel(self.engine)
        self.models = {id(self.engine): self.model}
        self.reads: List[Read] = []

    def answers(self, d: "Deferred[EngineSession]") -> "Deferred[EngineSession]":
        for model in self.models.values():
            if d in model.engine.opens:
                model.answer(d)
        return d

    def serves(self, read: Read) -> Deferred[None]:
        assert isinstance(read.reader, FakeReader)
        self.models[id(read.reader.engine)].serve(read.reader)
        return succeed(None)

    def restart_engine(self) -> Deferred[None]:
        self.engine.restart()
        return succeed(None)

    def engine_answers_503(self) -> Deferred[None]:
        self.engine.down = True
        return succeed(None)

    def unreachable_engine(self) -> FakeEngine:
        engine = FakeEngine()
        engine.down = True
        self.models[id(engine)] = FakeEngineModel(engine)
        return engine

    def quiet(self) -> Deferred[None]:
        return succeed(None)


class FakeEngineTests(SynchronousTestCase):
    """The fake's own conveniences behave as the real reader and client do."""

    def setUp(self) -> None:
        self.engine = FakeEngine()
        self.ends: List[PlaybackEnd] = []

    def reader(self) -> FakeReader:
        self.engine.open_session(selector(FIRST))
        session = self.engine.answer()
        return self.engine.read(session.playback_url, on_data=lambda data: None, on_end=self.ends.append,
                                first_byte_timeout=1.0, idle_timeout=1.0)

    def test_canned_endings_carry_the_real_kinds(self) -> None:
        """gone() is GONE with 0 bytes, empty() EMPTY with the 'before any data' text, cut() no error after data."""
        self.reader().gone()
        self.reader().empty()
        reader = self.reader()
        reader.feed(b"\x47" * 188)
        reader.cut()
        gone, empty, cut = self.ends
        self.assertEqual((gone.kind, gone.error.status, gone.bytes_read), (ErrorKind.GONE, 502, 0))
        self.assertEqual((empty.kind, empty.error.status, empty.bytes_read), (ErrorKind.EMPTY, 502, 0))
        self.assertIn("before any data", empty.error.message)
        self.assertEqual((cut.kind, cut.error, cut.bytes_read), (None, None, 188))

    def test_end_takes_a_kind_or_an_error(self) -> None:
        """end() makes a kind into the error the real client gives it, and passes an EngineError through."""
        self.reader().end("refused", ErrorKind.UNREACHABLE)
        error = EngineError(504, "slow", kind=ErrorKind.TIMEOUT)
        self.reader().end("slow", error)
        [unreachable, timeout] = self.ends
        self.assertEqual((unreachable.error.status, unreachable.error.retry_after), (503, 5))
        self.assertIs(timeout.error, error)

    def test_a_read_ends_at_most_once_and_never_after_stop(self) -> None:
        """Like the real reader, a fake read that ended or was stopped can be neither fed nor ended again."""
        reader = self.reader()
        reader.stop()
        self.assertRaises(AssertionError, reader.end)
        self.assertRaises(AssertionError, reader.feed, b"x")
        other = self.reader()
        other.gone()
        self.assertRaises(AssertionError, other.gone)
        self.assertEqual(len(self.ends), 1)

    def test_refuse_accepts_a_kind(self) -> None:
        """refuse() with a kind fails the call with the real client's error; its default is REFUSED."""
        failures: List[Any] = []
        self.engine.open_session(selector(FIRST)).addErrback(failures.append)
        self.engine.open_session(selector(FIRST)).addErrback(failures.append)
        self.engine.refuse(index=0)
        self.engine.refuse(ErrorKind.UNREACHABLE, 1)
        refused, unreachable = (f.value for f in failures)
        self.assertEqual((refused.kind, refused.status), (ErrorKind.REFUSED, 502))
        self.assertEqual((unreachable.kind, unreachable.status, unreachable.retry_after),
                         (ErrorKind.UNREACHABLE, 503, 5))

    def test_restart_cuts_flowing_reads_and_fails_waiting_ones(self) -> None:
        """restart() cuts reads that had data, fails those still waiting with UNREACHABLE, and forgets sessions."""
        flowing, _waiting = self.reader(), self.reader()
        flowing.feed(b"\x47" * 188)
        self.engine.restart()
        cut, failed = self.ends
        self.assertEqual((cut.kind, cut.bytes_read), (None, 188))
        self.assertIs(failed.kind, ErrorKind.UNREACHABLE)
        self.assertFalse(self.engine.knows(flowing.url))
        self.assertEqual(self.engine.restarts, 1)

    def test_a_read_started_by_a_restart_is_left_to_the_test(self) -> None:
        """A read a channel starts from on_end during restart() is not ended by that restart."""
        session = self.engine.session(0)
        retried: List[FakeReader] = []

        def on_end(end: PlaybackEnd) -> None:
            retried.append(self.engine.read(session.playback_url, on_data=lambda data: None,
                                            on_end=self.ends.append, first_byte_timeout=1.0, idle_timeout=1.0))

        reader = self.engine.read(session.playback_url, on_data=lambda data: None, on_end=on_end,
                                  first_byte_timeout=1.0, idle_timeout=1.0)
        reader.feed(b"\x47" * 188)
        self.engine.restart()
        [again] = retried
        self.assertFalse(again.stopped)
        self.assertEqual(self.ends, [])


class SimulatorContractTests(EngineContract, TestCase):
    """The real EngineClient against the real simulator on loopback."""

    timeout = 30

    @inlineCallbacks
    def setUp(self) -> Any:
        self.reads: List[Read] = []
        self.sim = yield start_simulator(reactor, prebuffer=0.2, burst=1.0, bitrate=2_000_000)
        self.addCleanup(self.sim.stop)
        self.engine = self.client(self.sim.url)
        self.addCleanup(self._stop_reads)

    def _stop_reads(self) -> None:
        for read in self.reads:
            read.reader.stop()

    def client(self, url: str) -> EngineClient:
        client = EngineClient(reactor, url, json_timeout=5.0, stop_timeout=5.0)
        self.addCleanup(client.close)
        return client

    def answers(self, d: "Deferred[EngineSession]") -> "Deferred[EngineSession]":
        return d

    def serves(self, read: Read) -> Deferred[None]:
        return wait_for(reactor, lambda: read.reader.bytes_read > 0 or bool(read.ends), timeout=10)

    @inlineCallbacks
    def control(self, path: str) -> Any:
        status, _, body = yield fetch(reactor, f"{self.sim.url}/_sim/{path}", method=b"POST")
        self.assertEqual(status, 200, body)

    def restart_engine(self) -> Deferred[None]:
        return self.control("restart")

    def engine_answers_503(self) -> Deferred[None]:
        return self.control("faults?name=down&mode=503")

    def unreachable_engine(self) -> EngineClient:
        return self.client(f"http://127.0.0.1:{free_port()}")

    def quiet(self) -> Deferred[None]:
        return deferLater(reactor, 0.3, lambda: None)
