"""
The engine's HLS as a source: the HLS reader on task.Clock with a hand-driven agent (order, once each, gaps,
discontinuities, deadlines, stop, endings), and the engine client against the real simulator on loopback
(encrypted content and a getstream that refuses format=json become HLS sessions, read into valid TS).
"""

from typing import Any, List, Optional, Tuple

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import ResponseFailed
from zope.interface.verify import verifyObject

from acetwist.engine_api import HLS, TS, IPlaybackReader
from acetwist.engine_hls import HLSReader
from acetwist.errors import EngineError, ErrorKind
from acetwist.sim.contents import DEFAULT_CONTENTS
from acetwist.sim.testing import start_simulator
from acetwist.testing import wait_for
from acetwist.ts import TSChecker
from acetwist.upstream import EngineClient, PlaybackEnd, Selector, wants_hls
from tests.test_upstream import FakeResponse

ENGINE = "http://127.0.0.1:6878"
PLAYLIST = f"{ENGINE}/ace/m/{'ab' * 20}/{'0' * 32}.m3u8"


def playlist(first: int, count: int, *, target: int = 2, discontinuity_before: Tuple[int, ...] = (),
             ended: bool = False, host: str = "localhost:6878") -> bytes:
    """An engine-style live playlist of segments C{first} .. C{first + count - 1}, absolute URIs on C{host}."""
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{target}", f"#EXT-X-MEDIA-SEQUENCE:{first}"]
    for n in range(first, first + count):
        if n in discontinuity_before:
            lines.append("#EXT-X-DISCONTINUITY")
        lines += [f"#EXTINF:{target}.000,", f"http://{host}/ace/c/{'ab' * 20}/{n}.ts"]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return ("\n".join(lines) + "\n").encode()


def segment_url(n: int) -> str:
    return f"{ENGINE}/ace/c/{'ab' * 20}/{n}.ts"


class Agent:
    """Records every request; the test answers each by its URL."""

    def __init__(self) -> None:
        self.requests: List[Tuple[str, Deferred[Any]]] = []

    def request(self, method: bytes, url: bytes, headers: Any = None) -> Deferred[Any]:
        d: Deferred[Any] = Deferred(lambda d: d.errback(Failure(Exception("cancelled"))))
        self.requests.append((url.decode("ascii"), d))
        return d

    @property
    def urls(self) -> List[str]:
        return [url for url, _ in self.requests]

    @property
    def pending(self) -> List[str]:
        return [url for url, d in self.requests if not d.called]

    def pop(self, url: str) -> Deferred[Any]:
        [d] = [d for u, d in self.requests if u == url and not d.called]
        return d


class ReaderTestCase(SynchronousTestCase):
    idle_timeout = 3.0

    def setUp(self) -> None:
        self.clock = Clock()
        self.agent = Agent()
        #: what the reader handed on, in order: bytes, "splice", or a PlaybackEnd
        self.events: List[Any] = []
        self.reader = self.make()

    def make(self, **kw: Any) -> HLSReader:
        options = dict(first_byte_timeout=10.0, idle_timeout=self.idle_timeout)
        options.update(kw)
        reader = HLSReader(self.agent, self.clock, PLAYLIST, on_data=self.events.append,
                           on_splice=lambda: self.events.append("splice"), on_end=self.events.append, **options)
        reader.start()
        return reader

    def respond(self, url: str, body: bytes = b"", code: int = 200, *, complete: bool = True) -> FakeResponse:
        response = FakeResponse(code)
        self.agent.pop(url).callback(response)
        if complete:
            response.body(body)
        elif body:
            response.protocol.dataReceived(body)
        return response

    def serve_playlist(self, body: bytes) -> None:
        self.respond(PLAYLIST, body)

    def serve_segments(self, *numbers: int) -> None:
        """Answer the segment requests for C{numbers}, in that order, each as soon as it is asked for."""
        for n in numbers:
            self.assertEqual(self.agent.pending, [segment_url(n)])
            self.respond(segment_url(n), b"seg%d;" % n)

    @property
    def data(self) -> bytes:
        return b"".join(e for e in self.events if isinstance(e, bytes))

    @property
    def ends(self) -> List[PlaybackEnd]:
        return [e for e in self.events if isinstance(e, PlaybackEnd)]

    def start_live(self) -> None:
        """The first playlist lists 0..4: segments 3 and 4 are read."""
        self.serve_playlist(playlist(0, 5))
        self.serve_segments(3, 4)


class OrderTests(ReaderTestCase):
    def test_provides_the_reader_interface(self) -> None:
        """The HLS reader is an IPlaybackReader reading the playlist URL it was given."""
        self.assertTrue(verifyObject(IPlaybackReader, self.reader))
        self.assertEqual(self.agent.urls, [PLAYLIST])

    def test_starts_with_the_newest_segments_then_takes_each_new_one_once_in_order(self) -> None:
        """The read starts two segments from the live edge, then fetches each new segment once, in order."""
        self.start_live()
        self.assertEqual(self.data, b"seg3;seg4;")
        self.assertEqual(self.agent.pending, [])
        self.clock.advance(1.0)  # half the target duration after the previous poll
        self.serve_playlist(playlist(1, 5))
        self.serve_segments(5)
        self.clock.advance(1.0)
        self.serve_playlist(playlist(1, 5))  # nothing new
        self.assertEqual(self.agent.pending, [])
        self.clock.advance(1.0)
        self.serve_playlist(playlist(3, 5))  # 6 and 7 at once
        self.serve_segments(6, 7)
        self.assertEqual(self.data, b"seg3;seg4;seg5;seg6;seg7;")
        fetched = [u for u in self.agent.urls if u.endswith(".ts")]
        self.assertEqual(fetched, [segment_url(n) for n in range(3, 8)])
        self.assertNotIn("splice", self.events)
        self.assertEqual((self.reader.segments_read, self.reader.segments_missed), (5, 0))

    def test_polls_at_half_the_target_duration_from_the_previous_poll(self) -> None:
        """With a 6 s target the playlist is polled every 3 s, counted from when the previous poll began."""
        self.clock.advance(0.5)
        self.serve_playlist(playlist(0, 1, target=6))
        self.clock.advance(1.0)
        self.serve_segments(0)  # took 1 s
        self.clock.advance(1.4)
        self.assertEqual(self.agent.pending, [])
        self.clock.advance(0.1)  # 3 s after the first poll began
        self.assertEqual(self.agent.pending, [PLAYLIST])

    def test_an_older_playlist_never_fetches_a_segment_again(self) -> None:
        """A playlist that lists segments already taken (a stale copy) fetches nothing."""
        self.start_live()
        self.clock.advance(1.0)
        self.serve_playlist(playlist(0, 4))
        self.assertEqual(self.agent.pending, [])
        self.clock.advance(1.0)
        self.assertEqual(self.agent.pending, [PLAYLIST])

    def test_uris_are_resolved_and_rebased_onto_the_engine(self) -> None:
        """Relative segment URIs resolve against the playlist URL and absolute ones land on the engine's address."""
        self.serve_playlist(b"#EXTM3U\r\n#EXT-X-TARGETDURATION:2\r\n#EXTINF:2,\r\n5.ts\r\n"
                            b"#EXTINF:2,\r\nhttp://0.0.0.0:9/ace/c/x/6.ts\r\n")
        self.assertEqual(self.agent.pending, [PLAYLIST.rsplit("/", 1)[0] + "/5.ts"])
        self.respond(self.agent.pending[0], b"a")
        self.assertEqual(self.agent.pending, [f"{ENGINE}/ace/c/x/6.ts"])

    def test_a_master_playlist_is_followed_to_its_first_variant(self) -> None:
        """A master playlist makes the reader poll its first variant's media playlist."""
        self.serve_playlist(b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv0/index.m3u8\n"
                            b"#EXT-X-STREAM-INF:BANDWIDTH=2\nv1.m3u8\n")
        variant = PLAYLIST.rsplit("/", 1)[0] + "/v0/index.m3u8"
        self.assertEqual(self.agent.pending, [variant])
        self.respond(variant, b"#EXTM3U\n#EXTINF:2,\n0.ts\n")
        self.assertEqual(self.agent.pending, [PLAYLIST.rsplit("/", 1)[0] + "/v0/0.ts"])
        self.assertEqual(self.reader.url, PLAYLIST)


class SpliceTests(ReaderTestCase):
    def test_segments_gone_from_the_window_splice_before_the_next(self) -> None:
        """When the media sequence jumped past the next segment, the reader splices right before the next one it has."""
        self.start_live()
        self.clock.advance(1.0)
        self.serve_playlist(playlist(8, 5))  # 5..7 were never listed to us
        self.serve_segments(8, 9, 10, 11, 12)
        self.assertEqual(self.events[2:5], ["splice", b"seg8;", b"seg9;"])
        self.assertEqual(self.events.count("splice"), 1)
        self.assertEqual(self.reader.segments_missed, 3)

    def test_a_discontinuity_splices_before_its_segment(self) -> None:
        """#EXT-X-DISCONTINUITY before a segment makes a splice right before that segment's bytes."""
        self.start_live()
        self.clock.advance(1.0)
        self.serve_playlist(playlist(2, 5, discontinuity_before=(6,)))
        self.serve_segments(5, 6)
        self.assertEqual(self.events, [b"seg3;", b"seg4;", b"seg5;", "splice", b"seg6;"])

    def test_no_splice_before_the_first_bytes(self) -> None:
        """A discontinuity or a gap before the read's first bytes makes no splice (there is nothing to splice to)."""
        self.serve_playlist(playlist(0, 2, discontinuity_before=(1,)))
        self.assertEqual(self.agent.pending, [segment_url(0)])
        self.respond(segment_url(0), code=404)
        self.serve_segments(1)
        self.assertEqual(self.events, [b"seg1;"])

    def test_a_failed_segment_is_skipped_once_and_spliced_over(self) -> None:
        """A segment that answers 404 is not fetched again; the next one follows a splice."""
        self.start_live()
        self.clock.advance(1.0)
        self.serve_playlist(playlist(2, 5))
        self.respond(segment_url(5), b"download not found", code=404)
        self.serve_segments(6)
        self.assertEqual(self.events[2:], ["splice", b"seg6;"])
        self.clock.advance(1.0)
        self.serve_playlist(playlist(3, 5))
        self.serve_segments(7)
        self.assertEqual(self.agent.urls.count(segment_url(5)), 1)
        self.assertEqual(self.reader.segments_missed, 1)

    def test_a_segment_cut_short_splices_before_the_next(self) -> None:
        """A segment whose connection drops mid-body keeps the bytes it gave; the next segment follows a splice."""
        self.start_live()
        self.clock.advance(1.0)
        self.serve_playlist(playlist(2, 5))
        response = self.respond(segment_url(5), b"half", complete=False)
        response.protocol.connectionLost(Failure(ResponseFailed([Failure(Exception("lost"))])))
        self.serve_segments(6)
        self.assertEqual(self.events[2:], [b"half", "splice", b"seg6;"])


class DeadlineTests(ReaderTestCase):
    def test_no_playlist_before_the_first_byte_deadline_is_a_timeout(self) -> None:
        """An engine holding the playlist past the first-byte deadline ends the read as TIMEOUT, request cancelled."""
        self.clock.advance(9.9)
        self.assertEqual(self.ends, [])
        self.clock.advance(0.2)
        [end] = self.ends
        self.assertIs(end.kind, ErrorKind.TIMEOUT)
        self.assertEqual(end.error.status, 504)
        self.assertEqual(self.agent.pending, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_empty_playlists_poll_until_the_first_byte_deadline(self) -> None:
        """Playlists with no segment yet are polled again and again until the first-byte deadline ends the read."""
        for _ in range(9):
            self.serve_playlist(playlist(0, 0))
            self.clock.advance(1.0)
        self.assertEqual(self.ends, [])
        self.clock.advance(1.1)
        self.assertIs(self.ends[0].kind, ErrorKind.TIMEOUT)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_idle_after_data_when_no_new_segment_comes(self) -> None:
        """Once data flowed, no new segment for the idle limit (at least two target durations) ends the read as IDLE."""
        self.start_live()
        for _ in range(3):
            self.clock.advance(1.0)
            self.serve_playlist(playlist(0, 5))
        self.assertEqual(self.ends, [])
        self.clock.advance(1.0)  # 4 s = 2 × the 2 s target, more than the 3 s idle timeout
        [end] = self.ends
        self.assertIs(end.kind, ErrorKind.IDLE)
        self.assertEqual(end.bytes_read, len(b"seg3;seg4;"))
        self.assertEqual(self.agent.pending, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_steady_segments_never_go_idle(self) -> None:
        """A new segment every target duration keeps the read going indefinitely."""
        self.start_live()
        for n in range(5, 25):
            self.clock.advance(1.0)
            self.serve_playlist(playlist(n - 4, 5))
            self.serve_segments(n)
            self.clock.advance(1.0)
            self.serve_playlist(playlist(n - 4, 5))
        self.assertEqual(self.ends, [])
        self.assertEqual(self.reader.segments_read, 22)


class PatientReaderTests(ReaderTestCase):
    idle_timeout = 15.0

    def test_a_hung_playlist_refresh_is_tried_again(self) -> None:
        """A playlist refresh that does not answer within two target durations is cancelled and polled again."""
        self.start_live()
        self.clock.advance(1.0)
        first = self.agent.pop(PLAYLIST)
        self.clock.advance(4.0)
        self.assertTrue(first.called)
        self.assertEqual(self.agent.pending, [PLAYLIST])
        self.serve_playlist(playlist(3, 5))
        self.serve_segments(5, 6, 7)
        self.assertEqual(self.ends, [])

    def test_a_hung_segment_is_skipped(self) -> None:
        """A segment that does not arrive whole within two target durations is dropped and the next one spliced on."""
        self.start_live()
        self.clock.advance(1.0)
        self.serve_playlist(playlist(2, 5))
        response = self.respond(segment_url(5), b"part", complete=False)
        self.clock.advance(4.0)
        self.assertTrue(response.transport.stopped)
        self.serve_segments(6)
        self.assertEqual(self.events[2:], [b"part", "splice", b"seg6;"])


class EndTests(ReaderTestCase):
    def test_a_superseded_session_is_gone(self) -> None:
        """The playlist answering 403 (superseded) or 404 ends the read as GONE, with the bytes read so far."""
        for code in (403, 404):
            self.events.clear()
            self.agent.requests.clear()
            self.reader = self.make()
            self.start_live()
            self.clock.advance(1.0)
            self.respond(PLAYLIST, b"unknown playback session id", code=code)
            [end] = self.ends
            self.assertIs(end.kind, ErrorKind.GONE)
            self.assertTrue(end.error.definitive)
            self.assertEqual(end.bytes_read, 10)
            self.assertEqual(self.agent.pending, [])

    def test_an_error_reply_whose_body_stalls_is_judged_by_its_status(self) -> None:
        """A playlist 403 whose body never ends ends the read as GONE at the deadline, before or after data."""
        response = self.respond(PLAYLIST, code=403, complete=False)
        self.clock.advance(10.1)
        self.assertEqual([e.kind for e in self.ends], [ErrorKind.GONE])
        self.assertTrue(response.transport.stopped)
        self.events.clear()
        self.reader = self.make(idle_timeout=15.0)
        self.start_live()
        self.clock.advance(1.0)
        self.respond(PLAYLIST, code=404, complete=False)
        self.clock.advance(4.0)
        self.assertEqual([e.kind for e in self.ends], [ErrorKind.GONE])

    def test_a_stopped_session_is_gone_and_other_errors_refused(self) -> None:
        """A 500 saying "unknown playback session id" (stopped) is GONE; any other 500 is REFUSED; 503 UNREACHABLE."""
        for body, code, kind in [(b"unknown playback session id", 500, ErrorKind.GONE),
                                 (b"internal error", 500, ErrorKind.REFUSED),
                                 (b"", 503, ErrorKind.UNREACHABLE)]:
            self.events.clear()
            self.agent.requests.clear()
            self.reader = self.make()
            self.respond(PLAYLIST, body, code=code)
            self.assertEqual([e.kind for e in self.ends], [kind], body)

    def test_an_unreachable_engine(self) -> None:
        """A refused connection for the playlist or a segment ends the read as UNREACHABLE (the engine is down)."""
        self.agent.pop(PLAYLIST).errback(Failure(ConnectionRefusedError()))
        self.assertIs(self.ends[0].kind, ErrorKind.UNREACHABLE)
        self.assertTrue(self.ends[0].error.engine_down)
        self.events.clear()
        self.reader = self.make()
        self.serve_playlist(playlist(0, 2))
        self.agent.pop(segment_url(0)).errback(Failure(ConnectionRefusedError()))
        self.assertEqual([e.kind for e in self.ends], [ErrorKind.UNREACHABLE])

    def test_a_playlist_that_cannot_be_followed_is_refused(self) -> None:
        """A reply that is not a playlist, or one with encrypted segments, ends the read as REFUSED."""
        self.serve_playlist(b"<html>oops</html>")
        self.assertIs(self.ends[0].kind, ErrorKind.REFUSED)
        self.events.clear()
        self.reader = self.make()
        self.serve_playlist(b'#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI="k"\n#EXTINF:2,\n0.ts\n')
        self.assertIs(self.ends[0].kind, ErrorKind.REFUSED)
        self.assertEqual(self.agent.pending, [])

    def test_a_finished_playlist_is_read_whole_then_ends_cleanly(self) -> None:
        """A playlist with #EXT-X-ENDLIST is read from its first segment to its last, then ends without an error."""
        self.serve_playlist(playlist(0, 4, ended=True))
        self.serve_segments(0, 1, 2, 3)
        [end] = self.ends
        self.assertIsNone(end.error)
        self.assertEqual(end.bytes_read, len(self.data))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_an_empty_finished_playlist_is_empty(self) -> None:
        """A finished playlist that gave no byte ends as EMPTY (warming up), like an empty progressive reply."""
        self.serve_playlist(b"#EXTM3U\n#EXT-X-ENDLIST\n")
        self.assertIs(self.ends[0].kind, ErrorKind.EMPTY)

    def test_stop_during_a_segment_leaves_nothing_running(self) -> None:
        """stop() mid-segment drops its connection, cancels every timer, and no callback follows."""
        self.start_live()
        self.clock.advance(1.0)
        self.serve_playlist(playlist(2, 5))
        response = self.respond(segment_url(5), b"part", complete=False)
        self.reader.stop()
        self.assertTrue(response.transport.stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(100)
        self.assertEqual(self.ends, [])
        self.assertEqual(self.agent.pending, [])

    def test_stop_while_the_playlist_is_awaited_cancels_it(self) -> None:
        """stop() before the engine answered the playlist cancels that request; nothing is reported."""
        self.reader.stop()
        self.assertEqual(self.agent.pending, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.events, [])

    def test_stop_from_inside_on_data_stops_at_once(self) -> None:
        """A consumer that stops the read from on_data gets no more bytes, no end, and leaves nothing running."""
        self.reader.stop()
        self.events.clear()
        reader: Optional[HLSReader] = None

        def data(chunk: bytes) -> None:
            self.events.append(chunk)
            assert reader is not None
            reader.stop()

        reader = HLSReader(self.agent, self.clock, PLAYLIST, on_data=data, on_splice=lambda: None,
                           on_end=self.events.append, first_byte_timeout=10.0, idle_timeout=3.0)
        reader.start()
        self.serve_playlist(playlist(0, 5))
        self.respond(segment_url(3), b"seg3;")
        self.assertEqual(self.events, [b"seg3;"])
        self.assertEqual(self.agent.pending, [])
        self.assertEqual(self.clock.getDelayedCalls(), [])


class WantsHLSTests(SynchronousTestCase):
    def test_only_errors_about_the_format_ask_for_hls(self) -> None:
        """Errors about json, the format, HLS or encryption ask for HLS; the engine's content errors do not."""
        for message in ("unsupported format: json", "format=json is not allowed", "use HLS", "Encrypted content"):
            self.assertTrue(wants_hls(message), message)
        for message in ("failed to load content", "failed to get manifest", "missing content id",
                        "invalid content id", "unknown playback session id", "formatted"):
            self.assertFalse(wants_hls(message), message)


def selector(content: Any) -> Selector:
    return Selector("id", content.content_id)


class EngineClientTests(TestCase):
    """EngineClient against the real simulator: encrypted content and a refused format=json become HLS sessions."""

    timeout = 30

    @inlineCallbacks
    def setUp(self) -> Any:
        self.sim = yield start_simulator(reactor, prebuffer=0.1, burst=1.0, bitrate=1_000_000,
                                         encrypted=["channel-2"])
        self.addCleanup(self.sim.stop)
        self.client = EngineClient(reactor, self.sim.url, json_timeout=5.0)
        self.addCleanup(self.client.close)
        self.counters = self.sim.engine.counters

    @inlineCallbacks
    def test_encrypted_content_opens_through_the_manifest_and_no_session_is_left(self) -> None:
        """is_encrypted 1 makes a manifest call with a new pid; the getstream session is stopped once; one is live."""
        content = DEFAULT_CONTENTS[1]
        session = yield self.client.open_session(selector(content))
        self.assertEqual(session.format, HLS)
        self.assertTrue(session.playback_url.startswith(self.sim.url + "/ace/m/"))
        self.assertEqual(self.client.json_calls, 2)
        yield wait_for(reactor, lambda: self.counters["stop_calls"] == 1, timeout=5)
        counters = self.counters.snapshot()
        self.assertEqual(counters["json_calls"], {content.content_id: 2})
        self.assertEqual((counters["sessions_opened"], counters["sessions_live"]), (2, 1))
        self.assertEqual(counters["sessions_superseded"] + counters["sessions_stopped"], 1)
        live = self.sim.engine.sessions[content.infohash]
        self.assertEqual((live.kind, live.pid), ("hls", session.pid))
        self.assertEqual(self.client.stop_calls, 1)
        self.assertTrue((yield self.client.stop(session)))
        self.assertEqual(self.counters["sessions_live"], 0)

    @inlineCallbacks
    def test_refused_json_opens_through_the_manifest(self) -> None:
        """A getstream that refuses format=json (no session opened) makes a manifest call and nothing to stop."""
        content = DEFAULT_CONTENTS[0]
        self.sim.engine.set_fault("json_refused", content=content.content_id)
        session = yield self.client.open_session(selector(content))
        self.assertEqual(session.format, HLS)
        self.assertEqual((self.client.json_calls, self.client.stop_calls), (2, 0))
        self.assertEqual(self.counters["sessions_opened"], 1)

    @inlineCallbacks
    def test_ordinary_content_stays_ts(self) -> None:
        """Content that is not encrypted opens with one getstream call, as a TS session."""
        session = yield self.client.open_session(selector(DEFAULT_CONTENTS[0]))
        self.assertEqual((session.format, self.client.json_calls), (TS, 1))

    @inlineCallbacks
    def test_other_json_errors_stay_failures(self) -> None:
        """A getstream error that does not ask for HLS (failed to load content) fails without a manifest call."""
        try:
            yield self.client.open_session(Selector("id", "f" * 40))
        except EngineError as e:
            self.assertIs(e.kind, ErrorKind.REFUSED)
        else:
            self.fail("open_session did not fail")
        self.assertEqual(self.client.json_calls, 1)

    @inlineCallbacks
    def test_read_hls_gives_valid_contiguous_ts(self) -> None:
        """read_hls on the simulator's HLS delivers whole segments in order: one clean TS, no splice."""
        content = DEFAULT_CONTENTS[1]
        session = yield self.client.open_session(selector(content))
        checker = TSChecker()
        splices: List[str] = []
        ends: List[PlaybackEnd] = []
        reader = self.client.read_hls(session.playback_url, on_data=checker.feed,
                                      on_splice=lambda: splices.append("splice"), on_end=ends.append,
                                      first_byte_timeout=5.0, idle_timeout=5.0)
        self.addCleanup(reader.stop)
        yield wait_for(reactor, lambda: reader.segments_read >= 3 or bool(ends), timeout=15)
        self.assertEqual((ends, splices), ([], []))
        self.assertTrue(checker.aligned_at_start)
        self.assertTrue(checker.psi_before_first_video)
        self.assertTrue(checker.first_video_random_access)
        self.assertEqual((checker.cc_errors, checker.resyncs), (0, 0))
        reader.stop()
        # each segment fetched once (the last one may have been in flight at the stop)
        self.assertIn(self.counters["hls_segment_gets"], (reader.segments_read, reader.segments_read + 1))
        yield self.client.stop(session)
