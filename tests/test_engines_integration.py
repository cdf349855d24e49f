"""
Several engines behind one proxy (issue 10, "How it is checked", items 1 to
5): real simulator engines on loopback, the orchestrator look-alike, and the
real proxy in this process, with players reading its streams.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

from twisted.internet import reactor
from twisted.internet.defer import DeferredList, inlineCallbacks
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from acetwist.sim.contents import Content, numbered_contents
from acetwist.sim.testing import RunningEngine, RunningSimulator, start_simulator
from acetwist.testing import Player, RunningProxy, fetch, start_proxy, wait_for
from acetwist.ts import TSChecker
from acetwist.ts.packet import PACKET_SIZE, pcr, random_access

log = Logger()

#: issue 10: players of a channel whose engine died get data again within this long, with default settings
FAILOVER_ALLOWED = 45.0
#: the simulator's contents: enough channels for every test
CONTENTS = 6
#: the simulator's bitrate (bit/s)
BITRATE = 2_000_000


def contents(n: int) -> List[Content]:
    """The first C{n} contents of a simulator started with C{contents=CONTENTS}."""
    return numbered_contents(CONTENTS)[:n]


class SpliceChecker(TSChecker):
    """
    A TSChecker that also finds splices (a PCR off the line the previous
    PCRs follow at C{bitrate}: a new engine session) and notes where each
    continuity error fell.

    @ivar splices: (packet index, whether that PCR packet is a random-access point).
    @ivar breaks: continuity errors as (packet index, PID).
    """

    #: a PCR further than this from where the bitrate puts it starts a new segment (27 MHz ticks: 0.1 s)
    TOLERANCE = 2_700_000

    def __init__(self, bitrate: int) -> None:
        super().__init__()
        self.bitrate = bitrate
        self.splices: List[Tuple[int, bool]] = []
        self.breaks: List[Tuple[int, int]] = []
        self._pcr_at: Optional[Tuple[int, int]] = None

    def _packet(self, buf: bytes, offset: int) -> None:
        index = self.packets
        super()._packet(buf, offset)
        value = pcr(buf, offset)
        if value is None:
            return
        if self._pcr_at is not None:
            last_index, last_value = self._pcr_at
            expected = last_value + (index - last_index) * PACKET_SIZE * 8 * 27_000_000 // self.bitrate
            if abs(value - expected) > self.TOLERANCE:
                self.splices.append((index, random_access(buf, offset)))
        self._pcr_at = (index, value)

    def _check_continuity(self, buf: bytes, offset: int, pid: int) -> None:
        before = self.cc_errors
        super()._check_continuity(buf, offset, pid)
        if self.cc_errors != before:
            self.breaks.append((self.packets - 1, pid))


class TimedPlayer(Player):
    """A Player that also records when each piece of the body arrived, and where the stream was spliced."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: List[float] = []
        self.checker: SpliceChecker = SpliceChecker(BITRATE)

    def _data(self, data: bytes) -> None:
        self.arrivals.append(self.reactor.seconds())
        super()._data(data)

    def longest_silence_since(self, since: float) -> float:
        """The longest time without body data, counted from C{since} (or from the last piece before it)."""
        times = [t for t in self.arrivals if t < since][-1:] + [t for t in self.arrivals if t >= since]
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)


class EnginesTestCase(TestCase):
    """
    Starts (in the test body, each test with its own shape) a simulator with
    several engines, perhaps the orchestrator look-alike, and a proxy in front
    of them; stops every player, the proxy and the simulator afterwards.
    """

    timeout = 90
    sim_defaults: Dict[str, Any] = {"prebuffer": 0.3, "burst": 1.0, "bitrate": BITRATE, "contents": CONTENTS}

    def setUp(self) -> None:
        self.players: List[Player] = []
        self.proxy: Optional[RunningProxy] = None

    @inlineCallbacks
    def start(self, engines: int, orchestrator: bool = False, sim: Optional[Dict[str, Any]] = None,
              before_proxy: Any = None, **proxy: Any) -> Any:
        """The simulator (C{engines} engines), then C{before_proxy(sim)}, then the proxy over them."""
        config = dict(self.sim_defaults, **(sim or {}))
        self.sim: RunningSimulator = yield start_simulator(reactor, engines=engines,
                                                           orchestrator=orchestrator, **config)
        self.addCleanup(self.sim.stop)
        if before_proxy is not None:
            before_proxy(self.sim)
        if orchestrator:
            assert self.sim.orchestrator is not None
            proxy.setdefault("orchestrator", self.sim.orchestrator.url)
            proxy.setdefault("engines", ())
        else:
            proxy.setdefault("engines", tuple(self.sim.urls))
        self.proxy = start_proxy(reactor, self.sim.url, **proxy)
        self.addCleanup(self.stop_proxy)
        self.addCleanup(self.hang_up_all)
        return self.sim

    def stop_proxy(self) -> Any:
        """Stop the proxy (once): channels stopped, orchestrator events flushed, engine clients closed."""
        proxy, self.proxy = self.proxy, None
        return proxy.stop() if proxy is not None else None

    def hang_up_all(self) -> Any:
        for player in self.players:
            player.hang_up()
        return DeferredList([p.done for p in self.players])

    # -- players

    def url(self, content: Content) -> str:
        assert self.proxy is not None
        return f"{self.proxy.url}/ace/getstream?id={content.content_id}"

    def play(self, content: Content, timed: bool = False, **kw: Any) -> Player:
        kw.setdefault("limit", 10**9)
        player = (TimedPlayer if timed else Player)(reactor, self.url(content), **kw).start()
        self.players.append(player)
        return player

    def streaming(self, players: Sequence[Player], more_than: int = 200_000, timeout: float = 20) -> Any:
        return wait_for(reactor, lambda: all(p.received > more_than for p in players), timeout=timeout)

    def assertCleanTS(self, player: Player) -> None:
        checker = player.checker
        self.assertFalse(player.done.called, f"the player's connection ended: {player.end_reason}")
        self.assertTrue(checker.aligned_at_start)
        self.assertTrue(checker.first_video_random_access)
        self.assertEqual(checker.resyncs, 0)
        self.assertEqual(checker.cc_errors, 0, checker.cc_errors_by_pid)

    def assertSplicedOnceAtAKeyframe(self, player: Player) -> None:
        """
        The player's connection lives on and its TS is aligned throughout; it
        was spliced once (the new engine session), at a random-access point,
        and its continuity breaks only there: between the splice's PSI and the
        next keyframe.
        """
        assert isinstance(player, TimedPlayer)
        checker = player.checker
        self.assertFalse(player.done.called, f"the player's connection ended: {player.end_reason}")
        self.assertTrue(checker.aligned_at_start)
        self.assertEqual(checker.resyncs, 0)
        [(at, keyframe)] = checker.splices
        self.assertTrue(keyframe, f"the stream resumed at packet {at}, which is not a random-access point")
        following = [i for i, _ in checker.random_access_points if i > at]
        self.assertTrue(following, "no keyframe after the splice")
        for index, pid in checker.breaks:
            self.assertTrue(at - 2 <= index < following[0],
                            f"continuity broken away from the splice: {checker.breaks}")
        pids = [pid for _, pid in checker.breaks]
        self.assertEqual(len(pids), len(set(pids)), checker.breaks)

    # -- what the engines and the proxy say

    def counters(self, engine: RunningEngine) -> Dict[str, Any]:
        return engine.engine.counters.snapshot()

    def sessions_opened(self) -> List[int]:
        """Sessions each engine opened, in engine order."""
        return [self.counters(e)["sessions_opened"] for e in self.sim.engines]

    def sessions_live(self) -> List[int]:
        return [self.counters(e)["sessions_live"] for e in self.sim.engines]

    def json_calls(self, engine: RunningEngine) -> int:
        """Start calls with format=json that reached C{engine}, every content."""
        return sum(self.counters(engine)["json_calls"].values())

    def proxy_json_calls(self, engine: RunningEngine) -> int:
        """getstream calls the proxy made (or tried) towards C{engine}, reachable or not."""
        assert self.proxy is not None
        client = self.proxy.service.pool.engine(engine.url)
        assert client is not None, engine.url
        return client.json_calls

    @inlineCallbacks
    def status(self) -> Any:
        assert self.proxy is not None
        code, _, body = yield fetch(reactor, f"{self.proxy.url}/status")
        self.assertEqual(code, 200, body)
        return json.loads(body)

    def engine_status(self, engine_id: str) -> Dict[str, Any]:
        """The pool's status entry of C{engine_id} (what /status lists under engines)."""
        assert self.proxy is not None
        [entry] = [e for e in self.proxy.service.pool.status() if e["id"] == engine_id]
        return entry


class SpreadTests(EnginesTestCase):
    @inlineCallbacks
    def test_six_channels_on_three_engines_make_two_sessions_on_each(self) -> Any:
        """Six channels requested at once over three equal engines make exactly two engine sessions on each."""
        yield self.start(engines=3)
        players = [self.play(content) for content in contents(6)]
        yield self.streaming(players)
        self.assertEqual(self.sessions_opened(), [2, 2, 2])
        self.assertEqual(self.sessions_live(), [2, 2, 2])
        self.assertEqual([self.json_calls(e) for e in self.sim.engines], [2, 2, 2])
        for player in players:
            self.assertCleanTS(player)
        status = yield self.status()
        self.assertEqual(sorted(c["engine"] for c in status["channels"]), sorted(self.sim.urls * 2))

    @inlineCallbacks
    def test_a_channel_beyond_every_engines_capacity_gets_503_without_an_engine_call(self) -> Any:
        """With capacity 1 on two busy engines, a third channel gets 503 with a JSON body and Retry-After, and no engine hears a third JSON call."""
        yield self.start(engines=2, engine_max_streams=1)
        first, second, third = contents(3)
        players = [self.play(first), self.play(second)]
        yield self.streaming(players)
        self.assertEqual(self.sessions_opened(), [1, 1])

        code, headers, body = yield fetch(reactor, self.url(third))
        self.assertEqual(code, 503, body)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        [retry_after] = headers.getRawHeaders(b"retry-after")
        self.assertGreater(int(retry_after), 0)
        document = json.loads(body)
        self.assertEqual(document["status"], 503)
        self.assertIn("full", document["error"])
        self.assertEqual([self.json_calls(e) for e in self.sim.engines], [1, 1])
        for engine in self.sim.engines:
            self.assertNotIn(third.content_id, self.counters(engine)["json_calls"])
            self.assertEqual(self.proxy_json_calls(engine), 1)
        for player in players:
            self.assertCleanTS(player)

    @inlineCallbacks
    def test_an_engine_down_from_the_start_is_never_chosen(self) -> Any:
        """With one of three engines refusing connections from the start, it is never called and the other two serve every channel."""
        yield self.start(engines=3, before_proxy=lambda sim: sim.engines[1].down(mode="refuse"))
        dead = self.sim.engines[1]
        players = [self.play(content) for content in contents(4)]
        yield self.streaming(players)
        self.assertEqual(self.proxy_json_calls(dead), 0)
        self.assertEqual([self.sessions_opened()[i] for i in (0, 2)], [2, 2])
        # more channels later, after the probes have had their say: still never the dead one
        more = [self.play(content) for content in contents(6)[4:]]
        yield self.streaming(more)
        self.assertEqual(self.proxy_json_calls(dead), 0)
        self.assertEqual([self.sessions_opened()[i] for i in (0, 2)], [3, 3])
        entry = self.engine_status(dead.url)
        self.assertEqual((entry["healthy"], entry["sessions"], entry["last_chosen"]), (False, 0, None))
        for player in players + more:
            self.assertCleanTS(player)


class FailoverTests(EnginesTestCase):
    # every recovery setting at its default; only the simulator's prebuffer is short
    sim_defaults = dict(EnginesTestCase.sim_defaults, prebuffer=0.5)

    @inlineCallbacks
    def test_players_of_a_channel_whose_engine_dies_get_ts_from_another_engine_within_45_s(self) -> Any:
        """When the engine of a live channel dies for good, its players keep their connections and get clean TS from the other engine within 45 s, from one new session, after a stop was tried on the dead one."""
        yield self.start(engines=2)
        assert self.proxy is not None
        settings = self.proxy.service.settings
        self.assertEqual((settings.backoff, settings.reconnect_attempts, settings.session_attempts,
                          settings.failover_timeout, settings.idle_timeout), (1.0, 3, 2, 60.0, 15.0))
        [content] = contents(1)
        players = [self.play(content, timed=True), self.play(content, timed=True)]
        yield self.streaming(players, 300_000)
        [old_index] = [i for i, n in enumerate(self.sessions_live()) if n == 1]
        old, new = self.sim.engines[old_index], self.sim.engines[1 - old_index]
        self.assertEqual(self.counters(new)["sessions_opened"], 0)

        died_at = reactor.seconds()
        yield old.stop()
        marks = [p.received for p in players]
        yield wait_for(reactor, lambda: all(p.received > m + 500_000 for p, m in zip(players, marks)),
                       timeout=FAILOVER_ALLOWED + 10)
        gaps = [round(p.longest_silence_since(died_at), 2) for p in players if isinstance(p, TimedPlayer)]
        log.info("failover with default settings: players went without data for {gaps} s", gaps=gaps)
        for gap in gaps:
            self.assertLessEqual(gap, FAILOVER_ALLOWED, f"players went without data for {gaps} s")
        for player in players:
            self.assertSplicedOnceAtAKeyframe(player)
        self.assertEqual(self.counters(new)["sessions_opened"], 1)
        self.assertEqual(self.counters(new)["sessions_live"], 1)
        assert self.proxy is not None
        old_client = self.proxy.service.pool.engine(old.url)
        assert old_client is not None
        self.assertEqual(old_client.stop_calls, 1, "a stop was tried on the dead engine")
        self.assertFalse(self.engine_status(old.url)["healthy"])
        status = yield self.status()
        [channel] = status["channels"]
        self.assertEqual(channel["engine"], new.url)


class OrchestratorTests(EnginesTestCase):
    def events(self, kind: Optional[str] = None) -> List[Dict[str, Any]]:
        assert self.sim.orchestrator is not None
        return self.sim.orchestrator.events_of(kind)

    def engine_of(self, content: Content) -> RunningEngine:
        """The engine that has a live session of C{content}."""
        [engine] = [e for e in self.sim.engines if content.infohash in e.engine.sessions]
        return engine

    @inlineCallbacks
    def test_a_forwarded_engine_wins_at_equal_load(self) -> Any:
        """Of three engines at equal load the forwarded one (listed second) takes the channel, at load 0 and again at load 1."""
        def forward_second(sim: RunningSimulator) -> None:
            assert sim.orchestrator is not None
            sim.orchestrator.set_engine(sim.engines[1].container_id, forwarded=True)

        yield self.start(engines=3, orchestrator=True, sim={"max_streams_per_engine": 4},
                         before_proxy=forward_second)
        chosen = []
        for content in contents(4):
            player = self.play(content)
            yield self.streaming([player])
            chosen.append(self.engine_of(content).index)
        # load 0 everywhere: the forwarded one; then the least loaded (list order among equals);
        # load 1 everywhere: the forwarded one again
        self.assertEqual(chosen, [1, 0, 2, 1])
        self.assertTrue(self.engine_status("sim-engine-2")["forwarded"])

    @inlineCallbacks
    def test_unhealthy_and_draining_engines_are_skipped(self) -> Any:
        """Engines the orchestrator calls unhealthy or draining get no channel and no call; the healthy ones take every channel."""
        def mark(sim: RunningSimulator) -> None:
            assert sim.orchestrator is not None
            sim.orchestrator.set_engine(sim.engines[0].container_id, health_status="unhealthy")
            sim.orchestrator.set_engine(sim.engines[2].container_id, draining=True)

        yield self.start(engines=4, orchestrator=True, sim={"max_streams_per_engine": 0}, before_proxy=mark)
        players = [self.play(content) for content in contents(4)]
        yield self.streaming(players)
        self.assertEqual(self.sessions_opened(), [0, 2, 0, 2])
        self.assertEqual([self.json_calls(e) for e in self.sim.engines], [0, 2, 0, 2])
        self.assertEqual(self.engine_status("sim-engine-1")["orchestrator_health"], "unhealthy")
        self.assertTrue(self.engine_status("sim-engine-3")["draining"])

        # the list is followed as it changes: the fourth engine drains too, so the next channel goes to the 2nd
        assert self.sim.orchestrator is not None
        self.sim.orchestrator.set_engine(self.sim.engines[3].container_id, draining=True)
        yield wait_for(reactor, lambda: self.engine_status("sim-engine-4")["draining"], timeout=15)
        [fifth] = contents(5)[4:]
        player = self.play(fifth)
        yield self.streaming([player])
        self.assertEqual(self.sessions_opened(), [0, 3, 0, 2])
        self.assertEqual(self.sessions_live(), [0, 3, 0, 2])

    @inlineCallbacks
    def test_a_live_channel_stays_on_a_draining_engine_and_leaves_one_called_unhealthy(self) -> Any:
        """A live channel stays on its engine while the orchestrator drains it, and moves at once to another engine, its players connected, when the orchestrator calls it unhealthy."""
        yield self.start(engines=2, orchestrator=True, orchestrator_interval=0.5)
        [content] = contents(1)
        player = self.play(content, timed=True)
        yield self.streaming([player])
        old = self.engine_of(content)
        new = self.sim.engines[1 - old.index]
        assert self.sim.orchestrator is not None and self.proxy is not None
        source = self.proxy.service.pool.source

        self.sim.orchestrator.set_engine(old.container_id, draining=True)
        yield wait_for(reactor, lambda: self.engine_status(old.container_id)["draining"], timeout=10)
        reads = source.reads
        yield wait_for(reactor, lambda: source.reads >= reads + 2, timeout=10)  # two more list reads
        mark = player.received
        yield wait_for(reactor, lambda: player.received > mark + 300_000, timeout=10)
        self.assertEqual(self.sessions_opened()[new.index], 0)
        self.assertEqual(self.engine_of(content), old)

        self.sim.orchestrator.set_engine(old.container_id, health_status="unhealthy")
        yield wait_for(reactor, lambda: self.counters(new)["sessions_live"] == 1, timeout=10)
        mark = player.received
        yield wait_for(reactor, lambda: player.received > mark + 500_000, timeout=20)
        self.assertEqual(self.counters(old)["sessions_stopped"], 1)
        self.assertEqual(self.counters(new)["sessions_opened"], 1)
        self.assertSplicedOnceAtAKeyframe(player)

    @inlineCallbacks
    def test_one_stream_started_per_session_and_one_stream_ended_after_its_stop(self) -> Any:
        """Each of two channels sends one stream_started naming its engine and session, and one stream_ended for that engine once its last player left."""
        yield self.start(engines=2, orchestrator=True, grace=0.5)
        players = [self.play(content) for content in contents(2)]
        yield self.streaming(players)
        engines = {c.content_id: self.engine_of(c) for c in contents(2)}
        yield wait_for(reactor, lambda: len(self.events("stream_started")) == 2, timeout=10)
        for player in players:
            player.hang_up()
        yield DeferredList([p.done for p in players])
        yield wait_for(reactor, lambda: len(self.events("stream_ended")) == 2, timeout=15)
        yield self.stop_proxy()  # flushes whatever events were still queued

        started = self.events("stream_started")
        ended = self.events("stream_ended")
        self.assertEqual(len(started), 2, started)
        self.assertEqual(len(ended), 2, ended)
        for content in contents(2):
            engine = engines[content.content_id]
            [start] = [b for b in started if b["content_id"] == content.content_id]
            [end] = [b for b in ended if b["content_id"] == content.content_id]
            self.assertEqual(self.counters(engine)["sessions_stopped"], 1)
            self.assertEqual((start["container_id"], start["engine_id"]),
                             (engine.container_id, engine.container_id))
            self.assertEqual(start["engine"], {"host": "127.0.0.1", "port": engine.port_number})
            self.assertEqual(start["stream"], {"key_type": "content_id", "key": content.content_id})
            self.assertEqual(start["labels"]["source"], "acetwist")
            self.assertTrue(start["labels"]["worker"])
            self.assertEqual(start["session"]["is_live"], 1)
            self.assertTrue(start["session"]["playback_session_id"])
            self.assertIn("/ace/stat/", start["session"]["stat_url"])
            self.assertIn("/ace/cmd/", start["session"]["command_url"])
            self.assertEqual(end["container_id"], engine.container_id)
            self.assertTrue(end["reason"])
            assert self.sim.orchestrator is not None
            self.assertEqual(self.sim.orchestrator.stream_count(engine.container_id), 0)

    @inlineCallbacks
    def test_a_move_to_another_engine_sends_stream_ended_before_stream_started(self) -> Any:
        """When a channel's engine dies, the orchestrator hears stream_ended for the dead engine before stream_started for the new one."""
        yield self.start(engines=2, orchestrator=True)
        [content] = contents(1)
        player = self.play(content, timed=True)
        yield self.streaming([player])
        old = self.engine_of(content)
        new = self.sim.engines[1 - old.index]
        yield wait_for(reactor, lambda: len(self.events()) == 1, timeout=10)
        yield old.stop()
        mark = player.received
        yield wait_for(reactor, lambda: player.received > mark + 500_000, timeout=FAILOVER_ALLOWED)
        yield wait_for(reactor, lambda: len(self.events()) >= 3, timeout=10)
        assert self.sim.orchestrator is not None
        received = [(e.kind, e.body["container_id"]) for e in self.sim.orchestrator.events]
        self.assertEqual(received, [("stream_started", old.container_id), ("stream_ended", old.container_id),
                               ("stream_started", new.container_id)])
        self.assertEqual(self.counters(new)["sessions_opened"], 1)
        self.assertEqual(self.sim.orchestrator.stream_count(old.container_id), 0)
        self.assertEqual(self.sim.orchestrator.stream_count(new.container_id), 1)
        self.assertSplicedOnceAtAKeyframe(player)

    @inlineCallbacks
    def serves_with_list_shape(self, v1_engines: str, legacy_engines: str, path: str) -> Any:
        """A proxy in front of an orchestrator whose lists answer so reads the engines from C{path} and serves a channel."""
        def shape(sim: RunningSimulator) -> None:
            assert sim.orchestrator is not None
            sim.orchestrator.configure(v1_engines=v1_engines, legacy_engines=legacy_engines)

        yield self.start(engines=2, orchestrator=True, before_proxy=shape)
        [content] = contents(1)
        player = self.play(content)
        yield self.streaming([player])
        self.assertCleanTS(player)
        status = yield self.status()
        source = status["engine_source"]
        self.assertEqual((source["kind"], source["path"], source["stale"], source["engines"]),
                         ("orchestrator", path, False, 2))
        self.assertEqual(sorted(e["id"] for e in status["engines"]), ["sim-engine-1", "sim-engine-2"])
        # the events arrive, sent under the root of the list that answered
        yield wait_for(reactor, lambda: len(self.events("stream_started")) == 1, timeout=10)
        [started] = self.events("stream_started")
        self.assertEqual(started["container_id"], self.engine_of(content).container_id)
        assert self.proxy is not None and self.sim.orchestrator is not None
        events_path = "/api/v1/events/" if path == "/api/v1/engines" else "/events/"
        self.assertEqual(self.proxy.service.pool.source.events_base, self.sim.orchestrator.url + events_path)

    def test_the_wrapped_list_shape(self) -> Any:
        """An orchestrator that lists {"engines": [...], "total": n} at /api/v1/engines is understood."""
        return self.serves_with_list_shape("wrapped", "404", "/api/v1/engines")

    def test_the_bare_list_shape(self) -> Any:
        """An orchestrator that lists a bare JSON array at /api/v1/engines is understood."""
        return self.serves_with_list_shape("bare", "404", "/api/v1/engines")

    def test_the_legacy_list_path(self) -> Any:
        """An orchestrator whose /api/v1/engines answers 404 is read at /engines (bare array)."""
        return self.serves_with_list_shape("404", "bare", "/engines")

    def test_the_legacy_list_path_wrapped(self) -> Any:
        """An orchestrator whose /api/v1/engines answers 404 is read at /engines in the wrapped shape too."""
        return self.serves_with_list_shape("404", "wrapped", "/engines")

    @inlineCallbacks
    def outage_keeps_the_last_list(self, mode: str) -> Any:
        """During an orchestrator outage (C{mode}) live channels go on, the last list stays and serves a new channel."""
        yield self.start(engines=2, orchestrator=True, orchestrator_interval=0.5)
        first, second = contents(2)
        player = self.play(first)
        yield self.streaming([player])
        assert self.sim.orchestrator is not None
        self.sim.orchestrator.set_outage(mode)
        self.addCleanup(self.sim.orchestrator.clear_outage)
        assert self.proxy is not None
        source = self.proxy.service.pool.source
        failures = source.failures
        yield wait_for(reactor, lambda: source.failures > failures + 1, timeout=20)
        status = yield self.status()
        self.assertTrue(status["engine_source"]["stale"])
        self.assertTrue(status["engine_source"]["last_error"])
        self.assertEqual([(e["id"], e["listed"]) for e in status["engines"]],
                         [("sim-engine-1", True), ("sim-engine-2", True)])

        mark = player.received
        newcomer = self.play(second)
        yield self.streaming([newcomer])
        yield wait_for(reactor, lambda: player.received > mark + 500_000, timeout=10)
        self.assertCleanTS(player)
        self.assertCleanTS(newcomer)
        self.assertEqual(sorted(self.sessions_live()), [1, 1])

        self.sim.orchestrator.clear_outage()
        yield wait_for(reactor, lambda: source.ok is True, timeout=15)
        status = yield self.status()
        self.assertFalse(status["engine_source"]["stale"])
        self.assertEqual(len(status["channels"]), 2)

    def test_an_orchestrator_answering_500_keeps_the_last_list_and_live_channels(self) -> Any:
        """While the orchestrator answers 500, the proxy keeps its last engine list: live channels go on and a new one is served."""
        return self.outage_keeps_the_last_list("500")

    def test_an_orchestrator_not_answering_keeps_the_last_list_and_live_channels(self) -> Any:
        """While the orchestrator holds every request unanswered, the proxy keeps its last engine list: live channels go on and a new one is served."""
        return self.outage_keeps_the_last_list("hang")

    def test_an_orchestrator_refusing_connections_keeps_the_last_list_and_live_channels(self) -> Any:
        """While the orchestrator's port is closed, the proxy keeps its last engine list: live channels go on and a new one is served."""
        return self.outage_keeps_the_last_list("refuse")
