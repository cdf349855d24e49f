"""
Test and benchmark helpers shipped with the package (txacme style):

- L{start_proxy}: an in-process proxy on 127.0.0.1 with a free port, and
  L{Player}, an HTTP player that reads a stream, checks it with
  L{acetwist.ts.TSChecker}, records its time to first byte, and can stall
  (L{acetwist.testing.proxy});
- L{ProcessWorker}: real twistd processes on free ports (L{acetwist.testing.processes});
- L{decode} and L{probe}: a real decoder, the ffmpeg of the C{imageio-ffmpeg}
  wheel run by the reactor, that reports decode errors, frames, streams and
  the time to stream info and to the first frame (L{acetwist.testing.decoder});
- fakes for unit tests on C{task.Clock}, each declared against the interface
  it stands in for and checked with C{verifyObject}: L{FakeEngine} and
  L{FakeReader} (L{IEngine}, run through the same contract tests as the real
  client), L{FakeCoordinator} (L{ICoordinator}), L{FakeSink} (L{ISink}).

Everything that touches the network talks only to loopback.
"""

from acetwist.testing.cluster import FakeCoordinator, FakeFollower
from acetwist.testing.decoder import DecodeResult, decode, decoder_unavailable, probe
from acetwist.testing.engine import FakeEngine, FakeReader, engine_error
from acetwist.testing.pool import FakePool, FakeReservation
from acetwist.testing.processes import ExitStatus, ProcessWorker, free_port, repo_root, twistd_command
from acetwist.testing.proxy import Player, RunningProxy, fetch, percentile, split_url, start_proxy, wait_for
from acetwist.testing.sinks import FakeSink, gop

__all__ = [
    "DecodeResult", "ExitStatus", "FakeCoordinator", "FakeEngine", "FakePool", "FakeReservation", "FakeFollower", "FakeReader", "FakeSink", "Player",
    "ProcessWorker", "RunningProxy", "decode", "decoder_unavailable", "engine_error", "fetch", "free_port", "gop", "percentile", "probe", "repo_root",
    "split_url", "start_proxy", "twistd_command", "wait_for",
]
