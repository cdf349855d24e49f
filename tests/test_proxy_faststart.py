"""Fast start through the real proxy and simulator: a joiner gets the --join-backlog at once."""

from __future__ import annotations

from typing import Any, Generator, List, Optional

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks

from acetwist import ts
from acetwist.testing import Player, wait_for
from acetwist.testing.decoder import DecodeResult, decode, decoder_unavailable
from tests.integration import SimulatorProxyTestCase
from tests.test_cluster import ClusterTestCase

PCR_HZ = 27_000_000


def pcr_seconds(data: bytes) -> float:
    """Stream time covered by C{data}: from its first PCR to its last."""
    values = [v for v in (ts.pcr(p) for p in ts.split_packets(data)) if v is not None]
    return (values[-1] - values[0]) / PCR_HZ if len(values) > 1 else 0.0


class TimedPlayer(Player):
    """A player that also keeps how many bytes had arrived one second after its first byte."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.first_second_bytes: Optional[int] = None

    def _data(self, data: bytes) -> None:
        now = self.reactor.seconds()
        if self.first_byte_at is not None and now - self.first_byte_at > 1.0 and self.first_second_bytes is None:
            self.first_second_bytes = self.received
        super()._data(data)


class FastStartTests(SimulatorProxyTestCase):
    timeout = 60
    backlog = 5.0  # the option's default

    @inlineCallbacks
    def _channel_with_history(self) -> Generator[Deferred[Any], Any, None]:
        """A channel that has run long enough that its ring holds a keyframe the backlog old."""
        self.play(limit=200_000_000)
        yield wait_for(self.reactor, lambda: len(self.proxy.registry.channels()) == 1, timeout=10)
        [channel] = self.proxy.registry.channels()
        self.assertEqual(self.proxy.service.settings.join_backlog, self.backlog)

        def deep_enough() -> bool:
            keyframe = channel.ring.keyframe_back(self.reactor.seconds() - self.backlog)
            return keyframe is not None and keyframe.created <= self.reactor.seconds() - self.backlog

        yield wait_for(self.reactor, deep_enough, timeout=20)

    @inlineCallbacks
    def test_joiner_gets_the_backlog_within_its_first_second(self) -> Generator[Deferred[Any], Any, None]:
        """A joiner receives at least the backlog's seconds of stream (by PCR) in its first second, aligned, PAT/PMT and a keyframe first."""
        yield self._channel_with_history()
        joiner = TimedPlayer(self.reactor, self.stream_url(), limit=200_000_000, keep_bytes=True).start()
        self.players.append(joiner)
        yield wait_for(self.reactor, lambda: joiner.first_second_bytes is not None, timeout=10)
        assert joiner.first_second_bytes is not None
        first_second = bytes(joiner.data[: joiner.first_second_bytes])
        self.assertGreaterEqual(pcr_seconds(first_second), self.backlog)
        checker = ts.TSChecker()
        checker.feed(first_second)
        self.assertTrue(checker.aligned_at_start)
        self.assertEqual((checker.pat_seen_at, checker.pmt_seen_at), (0, 1))
        self.assertTrue(checker.first_video_random_access)
        self.assertTrue(checker.psi_before_first_video)
        self.assertEqual(checker.cc_errors, 0, checker.cc_errors_by_pid)
        [channel] = self.proxy.registry.channels()
        self.assertEqual(channel.roster.skips(), 0)

    @inlineCallbacks
    def test_joining_decoder_decodes_the_backlog_without_errors(self) -> Generator[Deferred[Any], Any, None]:
        """A real decoder joining a running channel decodes the backlog and the live stream after it with no error."""
        unavailable = decoder_unavailable()
        if unavailable:
            self.skipTest(unavailable)  # type: ignore[attr-defined]
        yield self._channel_with_history()
        result: DecodeResult = yield decode(self.reactor, self.stream_url(), self.backlog + 2, deadline=30)
        self.assertEqual(result.exit_code, 0, result.describe())
        self.assertTrue(result.found_h264_and_aac, result.describe())
        self.assertEqual(result.errors, (), result.describe())
        self.assertGreaterEqual(result.frames, int((self.backlog + 2) * 25) - 2, result.describe())


class ZeroBacklogTests(SimulatorProxyTestCase):
    proxy_config = {**SimulatorProxyTestCase.proxy_config, "join_backlog": 0.0}

    @inlineCallbacks
    def test_zero_backlog_joins_at_the_newest_keyframe(self) -> Generator[Deferred[Any], Any, None]:
        """With --join-backlog 0 a joiner gets at most about one GOP (1 s) of stream before live, as before the option."""
        self.play(limit=200_000_000)
        yield wait_for(self.reactor, lambda: len(self.proxy.registry.channels()) == 1, timeout=10)
        [channel] = self.proxy.registry.channels()
        yield wait_for(self.reactor, lambda: channel.ring.keyframes >= 4, timeout=20)
        joiner = TimedPlayer(self.reactor, self.stream_url(), limit=200_000_000, keep_bytes=True).start()
        self.players.append(joiner)
        yield wait_for(self.reactor, lambda: joiner.first_second_bytes is not None, timeout=10)
        assert joiner.first_second_bytes is not None
        spans: List[float] = [pcr_seconds(bytes(joiner.data[: joiner.first_second_bytes]))]
        self.assertLess(spans[0], 2.5)
        self.assertTrue(joiner.checker.first_video_random_access)


class FollowerFastStartTests(ClusterTestCase):
    """The first player on a worker that follows another's mirror gets the backlog too."""

    @inlineCallbacks
    def test_first_joiner_on_a_follower_gets_the_backlog_within_its_first_second(self) -> Generator[Deferred[Any], Any, None]:
        """A fresh follower's ring starts the backlog back in the mirror: its first player gets 5 s of stream in its first second, aligned, PAT/PMT and a keyframe first."""
        w1, w2 = self.workers
        owner_player = self.play(w1)
        yield self.streaming([owner_player])
        # the mirror holds well over the backlog and a GOP once the owner has streamed this long
        yield wait_for(reactor, lambda: reactor.seconds() - (owner_player.first_byte_at or reactor.seconds()) >= 7.0,
                       timeout=20)
        joiner = TimedPlayer(reactor, f"{w2.url}/ace/getstream?id={self.content.content_id}",
                             limit=10**9, keep_bytes=True).start()
        self.players.append(joiner)
        yield wait_for(reactor, lambda: joiner.first_second_bytes is not None, timeout=15)
        assert joiner.first_second_bytes is not None
        first_second = bytes(joiner.data[: joiner.first_second_bytes])
        self.assertGreaterEqual(pcr_seconds(first_second), 5.0)
        self.assertClean(joiner)
        status = yield w2.status()
        [channel] = status["channels"]
        self.assertEqual(channel["role"], "follower")
