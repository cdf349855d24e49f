"""The real decoder (ffmpeg from the imageio-ffmpeg wheel) that tests and benchmarks run."""

from __future__ import annotations

from typing import Any, Generator, List

from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from acetwist import ts
from acetwist.testing.decoder import DecodeResult, StderrParser, decode, decoder_unavailable, probe
from tests.integration import SimulatorProxyTestCase

UNAVAILABLE = decoder_unavailable()

# Lines as ffmpeg 7.0.2 prints them with -loglevel +level+info (addresses shortened).
PROBE_STDERR = """\
[info] Input #0, mpegts, from 'http://127.0.0.1:1/ace/getstream?id=x':
[info]   Duration: N/A, start: 35.475944, bitrate: N/A
[info]   Program 1 
[info]   Stream #0:0[0x100]: Video: h264 (Constrained Baseline) ([27][0][0][0] / 0x001B), yuv420p, 640x360
[info]   Stream #0:1[0x101]: Audio: aac (LC) ([15][0][0][0] / 0x000F), 48000 Hz, stereo, fltp, 4 kb/s
[fatal] At least one output file must be specified
"""
DECODE_STDERR = """\
[info] Input #0, mpegts, from 'x.ts':
[info]   Stream #0:0[0x100]: Video: h264 (Constrained Baseline), yuv420p, 640x360
[info]   Stream #0:1[0x101]: Audio: aac (LC), 48000 Hz, stereo, fltp
[info] Stream mapping:
[info]   Stream #0:0 -> #0:0 (h264 (native) -> wrapped_avframe (native))
[info] Output #0, null, to 'pipe:':
[info]   Stream #0:0: Video: wrapped_avframe, yuv420p(progressive), 640x360
[Parsed_showinfo_0 @ 0x7f] [info] n:   0 pts:      0 pts_time:0 iskey:1 type:I
[mpegts @ 0x26] [warning] Packet corrupt (stream = 0, dts = 1209235).
[Parsed_showinfo_0 @ 0x7f] [info] n:   1 pts:   3600 pts_time:0.04 iskey:0 type:P
[h264 @ 0x26] [info] concealing 910 DC, 910 AC, 910 MV errors in P frame
[h264 @ 0x26] [error] error while decoding MB 19 1
[aac @ 0x26] [warning] Guessed Channel Layout for Input Stream #0.1 : stereo
"""


def _feed(parser: StderrParser, text: str) -> None:
    for i, line in enumerate(text.splitlines()):
        parser.line(line, float(i))


class StderrParserTests(SynchronousTestCase):
    def test_probe_finds_streams_and_no_error(self) -> None:
        """A probe's stream info names h264 and aac, and the closing 'no output file' is not an error."""
        parser = StderrParser(probe=True)
        _feed(parser, PROBE_STDERR)
        self.assertEqual(parser.streams, ["h264", "aac"])
        self.assertEqual(parser.stream_info_at, 0.0)
        self.assertEqual(parser.errors, [])

    def test_decode_counts_frames_errors_and_output_streams_apart(self) -> None:
        """Frames are the showinfo lines; corrupt-input lines of any level are errors; the output's streams are not input streams."""
        parser = StderrParser()
        _feed(parser, DECODE_STDERR)
        self.assertEqual(parser.streams, ["h264", "aac"])
        self.assertEqual(parser.frames, 2)
        self.assertEqual(parser.first_frame_at, 7.0)
        self.assertEqual(len(parser.errors), 3, parser.errors)
        self.assertEqual(len(parser.warnings), 1)


def _serve(data: bytes) -> Any:
    root = Resource()
    root.putChild(b"stream.ts", Data(data, "video/mp2t"))
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    address = port.getHost()
    assert isinstance(address, IPv4Address)
    return port, f"http://127.0.0.1:{address.port}/stream.ts"


class _Silent(Protocol):
    """Accepts a connection and never answers."""


class DecoderProcessTests(TestCase):
    skip = UNAVAILABLE
    timeout = 30

    @inlineCallbacks
    def test_deadline_kills_a_decoder_that_gets_no_answer(self) -> Generator[Deferred[Any], Any, None]:
        """A decoder whose server never answers is killed on its deadline and reported as timed out."""
        port = reactor.listenTCP(0, Factory.forProtocol(_Silent), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        address = port.getHost()
        assert isinstance(address, IPv4Address)
        result: DecodeResult = yield decode(reactor, f"http://127.0.0.1:{address.port}/", 2, deadline=1.5)
        self.assertTrue(result.timed_out, result.describe())
        self.assertEqual(result.signal, 9)
        self.assertEqual(result.frames, 0)
        self.assertIsNone(result.stream_info_after)


class DecoderThroughProxyTests(SimulatorProxyTestCase):
    skip = UNAVAILABLE

    @inlineCallbacks
    def test_simulator_stream_decodes_without_errors(self) -> Generator[Deferred[Any], Any, None]:
        """Three seconds of the simulator's stream through the proxy decode to h264+aac frames with no error."""
        result: DecodeResult = yield decode(self.reactor, self.stream_url(), 3, deadline=20)
        self.assertEqual(result.exit_code, 0, result.describe())
        self.assertTrue(result.found_h264_and_aac, result.describe())
        self.assertEqual(result.errors, (), result.describe())
        self.assertGreaterEqual(result.frames, 70, result.describe())  # 25 fps
        assert result.stream_info_after is not None and result.first_frame_after is not None, result.describe()
        self.assertLessEqual(result.stream_info_after, result.first_frame_after)

    @inlineCallbacks
    def test_probe_finds_h264_and_aac(self) -> Generator[Deferred[Any], Any, None]:
        """ffmpeg -i on the proxy's stream prints h264 and aac stream info and reports no error."""
        result: DecodeResult = yield probe(self.reactor, self.stream_url(), deadline=20)
        self.assertFalse(result.timed_out, result.describe())
        self.assertEqual(result.exit_code, 1, result.describe())  # no output file given: ffmpeg's own exit code
        self.assertTrue(result.found_h264_and_aac, result.describe())
        self.assertEqual(result.errors, (), result.describe())
        self.assertIsNotNone(result.stream_info_after)

    @inlineCallbacks
    def test_dropped_video_packets_are_reported(self) -> Generator[Deferred[Any], Any, None]:
        """A recording decodes cleanly, and the same recording with video packets dropped mid-GOP reports errors."""
        player = self.play(limit=1_600_000, keep_bytes=True)
        yield player.done
        points = [index for index, _ in player.checker.random_access_points]
        self.assertGreaterEqual(len(points), 3, player.checker.summary())
        video = player.checker.video_pid
        size = ts.PACKET_SIZE
        # cut at the last keyframe: no frame is left incomplete at the end
        clean = bytes(player.data[: points[-1] * size])
        packets = [clean[i : i + size] for i in range(0, len(clean), size)]
        video_at: List[int] = [i for i in range(points[0], points[1]) if ts.packet_pid(packets[i]) == video]
        middle = len(video_at) // 2
        dropped = set(video_at[middle : middle + 3])
        corrupted = b"".join(p for i, p in enumerate(packets) if i not in dropped)

        results = []
        for data in (clean, corrupted):
            port, url = _serve(data)
            self.addCleanup(port.stopListening)
            results.append((yield decode(self.reactor, url, 60, deadline=20)))
        good, bad = results
        self.assertEqual(good.errors, (), good.describe())
        self.assertGreater(good.frames, 0, good.describe())
        self.assertGreater(len(bad.errors), 0, bad.describe())
