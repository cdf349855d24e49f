# -*- test-case-name: tests.test_decoder -*-
"""
A real decoder for tests and benchmarks: the static ffmpeg that the
C{imageio-ffmpeg} wheel ships (a test dependency), run as a child process by
the reactor.

- L{decode}: C{ffmpeg -i URL -t SECONDS -vf showinfo -f null -}, i.e. demux
  and decode SECONDS of the stream; the result counts the video frames
  decoded, the decode errors reported, and when stream info and the first
  frame came.
- L{probe}: C{ffmpeg -i URL} alone, the way C{ffprobe} (and every media server
  before it plays) looks at a stream: it reads until it has the stream info,
  prints it and exits.

Both end by a deadline at the latest (the process is killed by its pid).
Times are seconds from the spawn, on the reactor's clock. ffmpeg runs with
C{-loglevel +level+info}, so each line carries its level: every C{[error]}
(or worse) line is a decode error, and so is a line of any level that reports
corrupt input (L{CORRUPTION}), e.g. the demuxer's "Packet corrupt" warning on
a continuity error, or the H.264 decoder's "concealing ... errors".

L{decoder_unavailable} says why the binary cannot run here (tests skip
with that reason), or None.
"""

from __future__ import annotations

import re
import subprocess
from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple

import attr
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IDelayedCall, IProcessTransport
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from acetwist.reactor import IReactor

#: lines (at any level) that report damaged input or a damaged picture
CORRUPTION = re.compile(
    r"corrupt|concealing|non-existing PPS|decode_slice_header|missing picture|no frame|"
    r"Continuity check|invalid NAL|Invalid data|error while decoding|out of range",
    re.IGNORECASE,
)
_LEVEL = re.compile(r"\[(panic|fatal|error|warning|info)\] ")
_STREAM = re.compile(r"^\s*Stream #\d+:\d+\S*: (Video|Audio|Data|Subtitle): (\w+)")
_FRAME = re.compile(r"\[Parsed_showinfo_\d+ @ [^]]*\] \[info\] n:\s*\d+ ")
#: what C{ffmpeg -i URL} without an output says once the info is printed (not an error of the input)
_NO_OUTPUT = "At least one output file must be specified"
_SEVERE = ("panic", "fatal", "error")


def ffmpeg_executable() -> str:
    """The path of the ffmpeg binary the C{imageio-ffmpeg} wheel ships (ImportError/RuntimeError if none)."""
    import imageio_ffmpeg

    return str(imageio_ffmpeg.get_ffmpeg_exe())


def decoder_unavailable() -> Optional[str]:
    """Why ffmpeg cannot run on this machine, or None when it can (tests skip with that reason)."""
    try:
        exe = ffmpeg_executable()
    except Exception as e:
        return f"no ffmpeg from imageio-ffmpeg: {e}"
    try:
        # once, before any reactor runs a test; a few ms
        done = subprocess.run([exe, "-hide_banner", "-version"], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        return f"ffmpeg at {exe} cannot run here: {e}"
    if done.returncode != 0:
        return f"ffmpeg at {exe} exited {done.returncode}: {done.stderr[-300:]!r}"
    return None


@attr.s(auto_attribs=True, frozen=True)
class DecodeResult:
    """What one ffmpeg run saw."""

    #: ffmpeg's argv, for messages
    argv: Tuple[str, ...]
    exit_code: Optional[int]
    #: the signal that ended it (None when it exited)
    signal: Optional[int]
    #: killed on the deadline
    timed_out: bool
    #: codec names of the streams found, in order (e.g. ("h264", "aac"))
    streams: Tuple[str, ...]
    #: video frames decoded (L{decode} only)
    frames: int
    #: lines reporting decode errors or corrupt input
    errors: Tuple[str, ...]
    #: other warnings (informational)
    warnings: Tuple[str, ...]
    #: seconds from the spawn to the stream info, or None if it never came
    stream_info_after: Optional[float]
    #: seconds from the spawn to the first decoded video frame, or None
    first_frame_after: Optional[float]
    #: seconds from the spawn to the end
    elapsed: float
    stderr: str

    @property
    def found_h264_and_aac(self) -> bool:
        return "h264" in self.streams and "aac" in self.streams

    def describe(self, tail: int = 3000) -> str:
        """A summary and the end of ffmpeg's stderr, for failure messages."""
        return (f"ffmpeg exit={self.exit_code} signal={self.signal} timed_out={self.timed_out} "
                f"streams={self.streams} frames={self.frames} errors={len(self.errors)} "
                f"stream_info_after={self.stream_info_after} first_frame_after={self.first_frame_after} "
                f"elapsed={self.elapsed:.2f}\nargv: {' '.join(self.argv)}"
                + (f"\nstderr (end):\n{self.stderr[-tail:]}" if tail > 0 else ""))


class StderrParser:
    """Follows ffmpeg's C{-loglevel +level+info} stderr line by line (each stamped with its arrival time)."""

    def __init__(self, probe: bool = False) -> None:
        self.probe = probe
        self.streams: List[str] = []
        self.frames = 0
        self.errors: List[str] = []
        self.warnings: List[str] = []
        self.stream_info_at: Optional[float] = None
        self.first_frame_at: Optional[float] = None
        self._in_input_info = False

    def line(self, text: str, at: float) -> None:
        if _FRAME.search(text):
            self.frames += 1
            if self.first_frame_at is None:
                self.first_frame_at = at
            return
        if "Input #0" in text:
            self._in_input_info = True
            if self.stream_info_at is None:
                self.stream_info_at = at
        elif self._in_input_info:
            found = _STREAM.match(text.split("] ", 1)[-1])
            if found:
                self.streams.append(found.group(2))
            elif not text.startswith("[info]   "):
                self._in_input_info = False
        level = _LEVEL.search(text)
        name = level.group(1) if level else "info"
        if self.probe and _NO_OUTPUT in text:
            return
        if name in _SEVERE or CORRUPTION.search(text):
            self.errors.append(text)
        elif name == "warning":
            self.warnings.append(text)


class _Watch(ProcessProtocol):
    def __init__(self, run: "_Run") -> None:
        self.run = run

    def errReceived(self, data: bytes) -> None:
        self.run.stderr_data(data)

    def outReceived(self, data: bytes) -> None:
        """ffmpeg writes nothing we read to stdout (the null muxer's output is discarded)."""

    def processEnded(self, reason: Failure) -> None:
        self.run.ended(reason)


class _Run:
    def __init__(self, reactor: IReactor, argv: Sequence[str], deadline: float, probe: bool) -> None:
        self.reactor = reactor
        self.argv = tuple(argv)
        self.parser = StderrParser(probe=probe)
        self.result: Deferred[DecodeResult] = Deferred()
        self._stderr = bytearray()
        self._partial = b""
        self._timed_out = False
        self.started = reactor.seconds()
        # no proxy variables (ffmpeg honours http_proxy) and nothing else from our environment
        self.process: IProcessTransport = reactor.spawnProcess(_Watch(self), self.argv[0], self.argv, env={})
        self._timer: Optional[IDelayedCall] = reactor.callLater(deadline, self._kill)

    def _kill(self) -> None:
        self._timer = None
        self._timed_out = True
        try:
            self.process.signalProcess("KILL")
        except Exception:
            pass  # it ended meanwhile; processEnded follows

    def stderr_data(self, data: bytes) -> None:
        at = self.reactor.seconds() - self.started
        self._stderr += data
        # the stats line ends in \r; every other line in \n
        lines = re.split(rb"[\r\n]", self._partial + data)
        self._partial = lines.pop()
        for raw in lines:
            if raw:
                self.parser.line(raw.decode("utf-8", "replace"), at)

    def ended(self, reason: Failure) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        at = self.reactor.seconds() - self.started
        if self._partial:
            self.parser.line(self._partial.decode("utf-8", "replace"), at)
            self._partial = b""
        status = reason.value
        exit_code: Optional[int] = None
        signal: Optional[int] = None
        if isinstance(status, ProcessTerminated):
            exit_code, signal = status.exitCode, status.signal
        elif isinstance(status, ProcessDone):
            exit_code = 0
        p = self.parser
        self.result.callback(DecodeResult(
            argv=self.argv, exit_code=exit_code, signal=signal, timed_out=self._timed_out,
            streams=tuple(p.streams), frames=p.frames, errors=tuple(p.errors), warnings=tuple(p.warnings),
            stream_info_after=p.stream_info_at, first_frame_after=p.first_frame_at, elapsed=at,
            stderr=self._stderr.decode("utf-8", "replace"),
        ))


def _base(executable: Optional[str]) -> List[str]:
    return [executable or ffmpeg_executable(), "-hide_banner", "-nostdin", "-loglevel", "+level+info"]


def decode(reactor: IReactor, url: str, seconds: float, *, deadline: float = 30.0,
           input_options: Sequence[str] = (), executable: Optional[str] = None) -> Deferred[DecodeResult]:
    """
    Decode the first C{seconds} (stream time) of C{url} with ffmpeg; fires with
    a L{DecodeResult} when ffmpeg ends, or after C{deadline} s (killed,
    C{timed_out}). C{input_options} go before C{-i}.
    """
    argv = [*_base(executable), *input_options, "-i", url, "-t", f"{seconds:g}",
            "-vf", "showinfo", "-f", "null", "-"]
    return _Run(reactor, argv, deadline, probe=False).result


def probe(reactor: IReactor, url: str, *, deadline: float = 30.0, input_options: Sequence[str] = (),
          executable: Optional[str] = None) -> Deferred[DecodeResult]:
    """
    C{ffmpeg -i URL} with no output, as C{ffprobe} does: it reads until it
    has the stream info, prints it and exits (exit code 1, as there is no
    output; not an error). Fires with a L{DecodeResult} whose
    C{stream_info_after} is the probing time.
    """
    argv = [*_base(executable), *input_options, "-i", url]
    return _Run(reactor, argv, deadline, probe=True).result
