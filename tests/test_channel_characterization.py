"""
Characterization of today's Channel, written before the redesign of issue 8
against the public API only (the registry, add_client/start/stop/status and
the public attributes), so the new state machines must keep every behaviour.
"""

import json
from typing import Any, Dict, List

from twisted.internet.defer import Deferred

from acetwist.channel import Channel, ClientInfo
from acetwist.errors import ErrorKind
from acetwist.interfaces import Block, Lease
from acetwist.upstream import EngineError, EngineSession, PlaybackEnd, Selector
from tests.channel_harness import ChannelHarness
from tests.fakes import FakeCoordinator, FakeEngine, FakeSink, gop

ID = "1" * 40
OTHER_ID = "2" * 40
KEY = f"id:{ID}"

STATUS_KEYS = {
    "key", "state", "engine", "infohash", "playback_session_id", "playback_url", "stat_url", "command_url",
    "role", "owner", "epoch", "created_at", "uptime", "bytes_in", "bytes_out", "bitrate", "recoveries",
    "sessions_opened", "last_end_reason", "ring", "clients", "error",
    "parameters",  # added by issue 9: the engine parameters the channel was opened with
    "session_format",  # added by issue 11: ts, or hls for content the engine serves only as HLS
    "hls",  # added by issue 11: the channel's HLS segments
}
CLIENT_KEYS = {"id", "ip", "user_agent", "connected_at", "connected_for", "bytes_sent", "queue_bytes", "skips",
               "paused", "started", "kind"}  # kind: added by issue 11 (ts or hls)
NO_SESSION = {"infohash": None, "playback_session_id": None, "playback_url": None, "stat_url": None,
              "command_url": None}

#: a connection failure and an empty reply: the two ends that keep their backoff after issue 8
REFUSED = ("playback request failed: Connection refused",
           EngineError(503, "engine unreachable: ConnectionRefusedError", retry_after=5))
EMPTY = ("engine closed the stream", EngineError(502, "engine ended the stream before any data", kind=ErrorKind.EMPTY))


class HoldingCoordinator(FakeCoordinator):
    """A FakeCoordinator whose claims, once C{hold_claims} is set, wait for the test to answer them."""

    def __init__(self) -> None:
        super().__init__()
        self.hold_claims = False
        self.held: List[Deferred[Any]] = []

    def claim(self, key: str, aliases: bool = True) -> Deferred[Any]:
        if not self.hold_claims:
            return super().claim(key, aliases)
        self.claims += 1
        d: Deferred[Any] = Deferred()
        self.held.append(d)
        return d


class HoldingEngine(FakeEngine):
    """A FakeEngine whose stop calls, once C{hold_stops} is set, wait for the test to answer them."""

    def __init__(self) -> None:
        super().__init__()
        self.hold_stops = False
        self.stop_replies: List[Deferred[bool]] = []

    def stop(self, session: EngineSession) -> Deferred[bool]:
        if not self.hold_stops:
            return super().stop(session)
        self.stop_calls += 1
        self.stopped.append(session.pid)
        d: Deferred[bool] = Deferred()
        self.stop_replies.append(d)
        return d


class CharacterizationTestCase(ChannelHarness):
    # the ladder at its defaults: three re-reads, two new sessions, backoff from 1 s
    reconnect_attempts = 3
    session_attempts = 2
    engine: "HoldingEngine"
    coordinator: "HoldingCoordinator"

    def make_engine(self) -> "HoldingEngine":
        return HoldingEngine()

    def make_coordinator(self) -> "HoldingCoordinator":
        return HoldingCoordinator()

    def attach(self, channel: Channel, client_id: str = "c") -> FakeSink:
        """Add a player to C{channel}; its sink closing leaves the channel."""
        sink = FakeSink()
        sink.on_close = channel.remove_client
        channel.add_client(sink, ClientInfo(client_id, "127.0.0.1", "test", self.clock.seconds()))
        return sink

    def join(self, value: str = ID, client_id: str = "c") -> "tuple[Channel, FakeSink]":
        channel = self.registry.channel_for(Selector("id", value))
        sink = self.attach(channel, client_id)
        channel.start()
        return channel, sink

    def go_live(self) -> "tuple[Channel, FakeSink]":
        channel, sink = self.join()
        self.engine.answer()
        self.engine.readers[-1].feed(gop(0))
        self.clock.advance(0.5)  # flush the partial block; 0.5 keeps every later clock time exact
        return channel, sink

    def become_follower(self) -> "tuple[Channel, FakeSink]":
        self.coordinator.other_owner = Lease("other", 7)
        return self.join()

    def advance_until_claimed(self) -> Deferred[Any]:
        """Let a follower whose owner vanished watch until it claims; the claim is held."""
        self.coordinator.other_owner = None
        self.coordinator.hold_claims = True
        for _ in range(20):
            if self.coordinator.held:
                break
            self.clock.advance(1.0)
        [claim] = self.coordinator.held
        return claim


class ClaimTests(CharacterizationTestCase):
    def test_failed_claim_fails_every_waiting_player_and_never_calls_the_engine(self) -> None:
        """When the cluster cannot answer the claim, every waiting player gets 503 with a retry_after and the channel fails and is forgotten."""
        self.coordinator.hold_claims = True
        channel, first = self.join()
        again, second = self.join(client_id="d")
        self.assertIs(again, channel)
        self.assertEqual(self.coordinator.claims, 1)
        self.coordinator.held[0].errback(ConnectionError("redis away"))
        for sink in (first, second):
            self.assertEqual(sink.error.status, 503)
            self.assertEqual(sink.error.retry_after, 2)
            self.assertEqual(sink.events, ["start", "fail"])
        self.assertEqual(channel.state, "failed")
        self.assertFalse(channel.alive)
        self.assertEqual(channel.status()["error"], "cluster unavailable: redis away")
        self.assertEqual(self.registry.channels(), [])
        self.assertIsNone(self.registry.get(KEY))
        self.assertIsNot(self.registry.channel_for(Selector("id", ID)), channel)
        self.assertEqual(self.engine.json_calls, 0)
        self.assertEqual(self.engine.stop_calls, 0)
        self.assertEqual(self.coordinator.released, [])
        self.assertEqual([r.client_id for r in self.coordinator.left], ["c", "d"])

    def test_claim_granted_after_stop_is_released_without_an_engine_call(self) -> None:
        """A lease granted after the channel was stopped is released at once, and no engine session is opened."""
        self.coordinator.hold_claims = True
        channel, sink = self.join()
        channel.stop("shutting down")
        self.assertEqual(sink.error.status, 503)
        self.assertEqual(sink.error.retry_after, 1)
        self.coordinator.held[0].callback(Lease(self.coordinator.worker_id, 1))
        self.assertEqual(self.coordinator.released, [KEY])
        self.assertEqual(self.engine.json_calls, 0)
        self.assertEqual(self.coordinator.followers, [])
        self.assertEqual(channel.state, "stopped")
        self.clock.advance(60)
        self.assertEqual(self.coordinator.metadata, [])
        self.assertEqual(self.coordinator.claims, 1)

    def test_claim_refused_after_stop_neither_follows_nor_calls_the_engine(self) -> None:
        """A claim answered 'owned elsewhere' after the channel was stopped starts no follower and calls no engine."""
        self.coordinator.hold_claims = True
        channel, _ = self.join()
        channel.stop("shutting down")
        self.coordinator.held[0].callback(None)
        self.assertEqual(self.coordinator.followers, [])
        self.assertEqual(self.coordinator.released, [])
        self.assertEqual(self.engine.json_calls, 0)
        self.assertEqual(channel.role, "none")
        self.clock.advance(60)
        self.assertEqual(self.coordinator.claims, 1)

    def test_claim_failing_after_stop_leaves_the_channel_stopped(self) -> None:
        """A claim that fails after the channel was stopped neither fails the channel nor reaches its former players."""
        self.coordinator.hold_claims = True
        channel, sink = self.join()
        channel.stop("shutting down")
        self.coordinator.held[0].errback(ConnectionError("redis away"))
        self.assertEqual(channel.state, "stopped")
        self.assertIsNone(channel.status()["error"])
        self.assertEqual(sink.events, ["start", "fail"])
        self.assertEqual(sink.error.status, 503)


class TakeoverTests(CharacterizationTestCase):
    def test_takeover_granted_after_stop_is_released_without_an_engine_call(self) -> None:
        """A follower whose takeover claim is granted after the channel was stopped releases the lease and opens no session."""
        channel, sink = self.become_follower()
        claim = self.advance_until_claimed()
        channel.stop("shutting down")
        self.assertTrue(self.coordinator.followers[0].stopped)
        claim.callback(Lease(self.coordinator.worker_id, 8))
        self.assertEqual(self.coordinator.released, [KEY])
        self.assertEqual(self.engine.json_calls, 0)
        self.assertEqual(channel.state, "stopped")
        self.assertEqual(channel.role, "none")
        self.assertIsNone(channel.lease)
        self.assertEqual(len(self.coordinator.followers), 1)
        self.clock.advance(60)
        self.assertEqual(self.coordinator.claims, 2)

    def test_takeover_granted_after_grace_ended_the_channel_is_released(self) -> None:
        """A takeover claim that is answered only after the last player left and the grace ran out is released, and no session is opened."""
        channel, sink = self.become_follower()
        claim = self.advance_until_claimed()
        sink.leave()
        self.clock.advance(self.settings.grace + 0.5)
        self.assertEqual(channel.state, "stopped")
        self.assertEqual(self.registry.channels(), [])
        claim.callback(Lease(self.coordinator.worker_id, 8))
        self.assertEqual(self.coordinator.released, [KEY])
        self.assertEqual(self.engine.json_calls, 0)
        self.assertEqual(self.engine.stop_calls, 0)

    def test_takeover_refused_after_stop_changes_nothing(self) -> None:
        """A takeover claim answered 'owned elsewhere' after the channel was stopped releases nothing and follows no one."""
        channel, _ = self.become_follower()
        claim = self.advance_until_claimed()
        channel.stop("shutting down")
        claim.callback(None)
        self.assertEqual(self.coordinator.released, [])
        self.assertEqual(len(self.coordinator.followers), 1)
        self.assertEqual(self.engine.json_calls, 0)
        self.assertEqual(channel.state, "stopped")


class StatusTests(CharacterizationTestCase):
    def assertStatus(self, status: Dict[str, Any], **expected: Any) -> None:
        """Every field is present with its type, nothing else is, and the C{expected} ones have those values."""
        self.assertEqual(set(status), STATUS_KEYS)
        json.dumps(status)  # /status serves it as JSON
        types = {"key": str, "state": str, "role": str, "created_at": float, "uptime": float,
                 "bytes_in": int, "bytes_out": int, "bitrate": int, "recoveries": int, "sessions_opened": int,
                 "ring": dict, "clients": list, "parameters": dict}
        optional = {"engine": str, "infohash": str, "playback_session_id": str, "playback_url": str, "stat_url": str,
                    "command_url": str, "session_format": str, "owner": str, "epoch": int, "last_end_reason": str, "error": str}
        for name, kind in types.items():
            self.assertIsInstance(status[name], kind, name)
        for name, kind in optional.items():
            if status[name] is not None:
                self.assertIsInstance(status[name], kind, name)
        self.assertEqual(set(status["ring"]), {"blocks", "bytes", "resyncs"})
        for value in status["ring"].values():
            self.assertIsInstance(value, int)
        for client in status["clients"]:
            self.assertEqual(set(client), CLIENT_KEYS)
        self.assertEqual(status["key"], KEY)
        # the engine the session runs on (issue 10: none before an engine was chosen, or for a follower)
        self.assertIn(status["engine"], (None, FakeEngine.base_url))
        if status["playback_url"] is not None:
            self.assertEqual(status["engine"], FakeEngine.base_url)
        for name, value in expected.items():
            self.assertEqual(status[name], value, name)

    def session_fields(self, n: int) -> Dict[str, Any]:
        session = self.engine.session(n)
        return {"infohash": session.infohash, "playback_session_id": session.playback_session_id,
                "playback_url": session.playback_url, "stat_url": session.stat_url,
                "command_url": session.command_url}

    def test_starting_before_the_claim_is_answered(self) -> None:
        """Before the claim is answered the channel is starting with no role, owner, epoch, session or bytes."""
        self.coordinator.hold_claims = True
        channel, sink = self.join()
        sink.bytes_sent, sink.lag_bytes, sink.skips, sink.paused = 1000, 300, 2, True
        self.clock.advance(2.5)
        self.assertStatus(
            channel.status(), state="starting", role="none", owner=None, epoch=None, **NO_SESSION,
            created_at=0.0, uptime=2.5, bytes_in=0, bytes_out=1000, bitrate=0, recoveries=0, sessions_opened=0,
            last_end_reason=None, ring={"blocks": 0, "bytes": 0, "resyncs": 0}, error=None,
            clients=[{"id": "c", "ip": "127.0.0.1", "user_agent": "test", "connected_at": 0.0, "connected_for": 2.5,
                      "bytes_sent": 1000, "queue_bytes": 300, "skips": 2, "paused": True, "started": False,
                      "kind": "ts"}],
        )

    def test_starting_as_owner_while_the_engine_call_is_pending(self) -> None:
        """Once the lease is granted the starting channel shows this worker as owner with the lease's epoch."""
        channel, _ = self.join()
        self.assertStatus(channel.status(), state="starting", role="owner", owner="test-worker", epoch=1,
                          **NO_SESSION, sessions_opened=0, bytes_in=0)

    def test_prebuffering_shows_the_engine_session(self) -> None:
        """While prebuffering the status names the engine session's infohash, id and URLs."""
        channel, _ = self.join()
        self.engine.answer()
        self.assertStatus(channel.status(), state="prebuffering", role="owner", owner="test-worker", epoch=1,
                          **self.session_fields(0), sessions_opened=1, bytes_in=0,
                          ring={"blocks": 0, "bytes": 0, "resyncs": 0})

    def test_live_counts_bytes_blocks_and_bitrate(self) -> None:
        """A live channel reports the bytes read, the ring's blocks and bytes, a bitrate and started players."""
        channel, sink = self.go_live()
        self.engine.readers[-1].feed(gop(1))
        self.clock.advance(0.5)
        sink.bytes_sent = 4000
        status = channel.status()
        total = len(gop(0)) + len(gop(1))
        self.assertStatus(status, state="live", role="owner", owner="test-worker", epoch=1, **self.session_fields(0),
                          bytes_in=total, bytes_out=4000, recoveries=0, sessions_opened=1, last_end_reason=None,
                          ring={"blocks": len(channel.ring), "bytes": total, "resyncs": 0}, error=None, uptime=1.0)
        ring = channel.ring
        first, newest = ring.get(ring.first_seq), ring.get(ring.next_seq - 1)
        self.assertGreater(len(ring), 1)
        self.assertGreater(status["bitrate"], 0)
        self.assertEqual(status["bitrate"], int(total * 8 / (newest.created - first.created)))
        [client] = status["clients"]
        self.assertEqual((client["started"], client["bytes_sent"], client["connected_for"]), (True, 4000, 1.0))

    def test_recovering_counts_the_incident_and_keeps_the_session(self) -> None:
        """A recovering channel reports the recovery, why the stream ended, and still names its session."""
        channel, _ = self.go_live()
        self.engine.readers[0].end("cut")
        self.assertStatus(channel.status(), state="recovering", role="owner", epoch=1, **self.session_fields(0),
                          recoveries=1, sessions_opened=1, last_end_reason="cut", bytes_in=len(gop(0)), error=None)

    def test_lingering_keeps_the_departed_players_bytes(self) -> None:
        """A lingering channel lists no players but still counts the bytes they were sent."""
        channel, sink = self.go_live()
        sink.bytes_sent = 5000
        sink.leave()
        self.assertStatus(channel.status(), state="lingering", role="owner", owner="test-worker", epoch=1,
                          **self.session_fields(0), clients=[], bytes_out=5000, bytes_in=len(gop(0)))

    def test_follower_shows_no_owner_and_the_mirror_epoch(self) -> None:
        """A follower shows no owner or session; its epoch is unknown until the first mirrored block, then the owner's."""
        channel, _ = self.become_follower()
        self.assertStatus(channel.status(), state="starting", role="follower", owner=None, epoch=None, **NO_SESSION,
                          sessions_opened=0, bytes_in=0)
        self.coordinator.followers[0].on_block(Block(0, gop(0), True, b"", 0, 0.0), 7)
        self.assertStatus(channel.status(), state="live", role="follower", owner=None, epoch=7, **NO_SESSION,
                          sessions_opened=0, bytes_in=len(gop(0)), ring={"blocks": 1, "bytes": len(gop(0)), "resyncs": 0})

    def test_failed_shows_the_error_and_no_players(self) -> None:
        """A failed channel reports the engine's error message, no session and no players."""
        channel, _ = self.join()
        self.engine.refuse(EngineError(502, "engine: failed to load content"))
        self.assertStatus(channel.status(), state="failed", error="engine: failed to load content", **NO_SESSION,
                          clients=[], sessions_opened=0, bytes_in=0, recoveries=0)

    def test_stopped_shows_no_players_and_no_error(self) -> None:
        """A stopped channel reports no players and no error, and keeps its counters."""
        channel, sink = self.go_live()
        sink.bytes_sent = 700
        channel.stop("shutting down")
        self.assertStatus(channel.status(), state="stopped", error=None, clients=[], bytes_in=len(gop(0)),
                          sessions_opened=1, recoveries=0)


class LateEngineReplyTests(CharacterizationTestCase):
    def test_session_granted_after_stop_is_stopped_once_and_never_read(self) -> None:
        """An engine session that arrives after stop is stopped exactly once and otherwise ignored."""
        channel, _ = self.join()
        self.assertTrue(channel.stop("shutting down").called)
        self.engine.answer()
        self.assertEqual(self.engine.stopped, ["pid-0"])
        self.assertEqual(self.engine.readers, [])
        self.assertIsNone(channel.session)
        self.assertEqual(channel.state, "stopped")
        self.assertEqual(channel.status()["sessions_opened"], 0)
        channel.stop("again")
        self.clock.advance(60)
        self.assertEqual(self.engine.stop_calls, 1)
        self.assertEqual(self.registry.channels(), [])

    def test_session_granted_on_the_ladder_after_stop_is_stopped_once(self) -> None:
        """A new session the ladder asked for that arrives after stop is stopped once, and the old one is not stopped twice."""
        channel, _ = self.go_live()
        self.engine.readers[0].end("cut")
        for delay in (1.0, 2.0, 4.0):
            self.clock.advance(delay)
            self.engine.readers[-1].end(*REFUSED)
        self.clock.advance(8.0)
        self.assertEqual((self.engine.json_calls, self.engine.stopped), (2, ["pid-0"]))
        channel.stop("shutting down")
        self.engine.answer()
        self.assertEqual(self.engine.stopped, ["pid-0", "pid-1"])
        self.assertEqual(len(self.engine.readers), 4)
        self.assertEqual(channel.state, "stopped")
        self.clock.advance(60)
        self.assertEqual(self.engine.stop_calls, 2)
        self.assertEqual(self.engine.json_calls, 2)

    def test_engine_refusal_after_stop_is_ignored(self) -> None:
        """An engine error that arrives after stop neither fails the channel nor reaches its former players."""
        channel, sink = self.join()
        channel.stop("shutting down")
        self.engine.refuse(EngineError(502, "engine: failed to load content"))
        self.assertEqual(channel.state, "stopped")
        self.assertIsNone(channel.status()["error"])
        self.assertEqual(sink.error.status, 503)
        self.assertEqual(self.engine.stop_calls, 0)

    def test_reader_end_after_stop_is_ignored(self) -> None:
        """A playback end reported after stop starts no recovery and opens nothing."""
        channel, _ = self.go_live()
        reader = self.engine.readers[0]
        channel.stop("shutting down")
        self.assertTrue(reader.stopped)
        reader.on_end(PlaybackEnd("cut", reader.bytes_read))  # a reader breaking its contract
        self.clock.advance(60)
        self.assertEqual(channel.state, "stopped")
        self.assertEqual(channel.recoveries, 0)
        self.assertEqual((len(self.engine.readers), self.engine.json_calls, self.engine.stop_calls), (1, 1, 1))

    def test_end_from_a_reader_replaced_by_a_handed_over_session_is_ignored(self) -> None:
        """An end reported late by a reader that a handed-over session replaced changes nothing."""
        by_hash = self.registry.channel_for(Selector("infohash", "ab" * 20))
        self.attach(by_hash)
        by_hash.start()
        self.engine.answer(0, infohash="ab" * 20)
        first = self.engine.readers[0]
        first.feed(gop(0))
        self.clock.advance(0.5)
        self.join()  # the id channel's session names the same infohash: it is handed to by_hash
        self.engine.answer(1, infohash="ab" * 20)
        self.assertTrue(first.stopped)
        self.engine.readers[-1].feed(gop(1))
        self.clock.advance(0.5)
        first.on_end(PlaybackEnd("late", 10))
        self.clock.advance(60)
        self.assertEqual(by_hash.state, "live")
        self.assertEqual([r for r in self.engine.readers if not r.stopped], [self.engine.readers[1]])
        self.assertEqual(self.engine.readers[1].url, self.engine.session(1).playback_url)
        self.assertIsNone(by_hash.status()["last_end_reason"])

    def test_second_end_from_an_ended_reader_is_ignored(self) -> None:
        """A reader that reports its end twice starts one recovery, not two."""
        channel, _ = self.go_live()
        first = self.engine.readers[0]
        first.end("cut")
        self.clock.advance(1.0)
        self.engine.readers[1].feed(gop(1))
        self.clock.advance(0.5)
        first.on_end(PlaybackEnd("late", 10))
        self.clock.advance(60)
        self.assertEqual(channel.state, "live")
        self.assertEqual(channel.recoveries, 1)
        self.assertEqual([r for r in self.engine.readers if not r.stopped], [self.engine.readers[1]])


class LadderTests(CharacterizationTestCase):
    def assertNextReadAfter(self, delay: float) -> None:
        """No read happens before C{delay} seconds, one happens at C{delay}."""
        count = len(self.engine.readers)
        self.clock.advance(delay - 0.5)
        self.assertEqual(len(self.engine.readers), count)
        self.clock.advance(0.5)
        self.assertEqual(len(self.engine.readers), count + 1)

    def assertNextSessionAfter(self, delay: float) -> None:
        """No engine call happens before C{delay} seconds, one happens at C{delay}."""
        count = self.engine.json_calls
        self.clock.advance(delay - 0.5)
        self.assertEqual(self.engine.json_calls, count)
        self.clock.advance(0.5)
        self.assertEqual(self.engine.json_calls, count + 1)

    def test_rereads_back_off_then_new_sessions_then_the_channel_fails(self) -> None:
        """After a cut the same URL is re-read after 1, 2 and 4 s, new sessions are asked after 8 and 8 s, then players fail."""
        channel, sink = self.go_live()
        url = self.engine.readers[0].url
        self.engine.readers[0].end("cut")
        self.assertEqual(channel.state, "recovering")
        for delay, end in ((1.0, REFUSED), (2.0, EMPTY), (4.0, REFUSED)):
            self.assertNextReadAfter(delay)
            reader = self.engine.readers[-1]
            self.assertEqual((reader.url, reader.first_byte_timeout), (url, self.settings.recovery_first_byte_timeout))
            reader.end(*end)
            self.assertEqual(channel.state, "recovering")
        self.assertNextSessionAfter(8.0)
        self.assertEqual(self.engine.stopped, ["pid-0"])  # the old session is stopped before a new one is asked
        self.engine.refuse(EngineError(503, "engine unreachable: ConnectionRefusedError", retry_after=5))
        self.assertNextSessionAfter(8.0)  # 16 s capped at 8
        self.assertEqual(channel.recoveries, 1)
        self.assertIsNone(sink.error)
        self.engine.refuse(EngineError(503, "engine unreachable: ConnectionRefusedError", retry_after=5))
        self.assertEqual(channel.state, "failed")
        self.assertEqual(sink.error.status, 502)
        self.assertEqual(sink.error.message,
                         "engine stream lost and recovery failed (engine unreachable: ConnectionRefusedError)")
        self.assertEqual(channel.recoveries, 1)
        self.assertEqual(len(self.engine.readers), 4)
        self.assertEqual(self.engine.stopped, ["pid-0"])
        self.assertEqual(self.registry.channels(), [])

    def test_new_session_on_the_ladder_gets_the_full_first_byte_deadline(self) -> None:
        """A session opened by the ladder is read with the full first-byte deadline, and its data ends the incident."""
        channel, sink = self.go_live()
        self.engine.readers[0].end("cut")
        for delay in (1.0, 2.0, 4.0):
            self.clock.advance(delay)
            self.engine.readers[-1].end(*REFUSED)
        self.clock.advance(8.0)
        self.engine.answer()
        reader = self.engine.readers[-1]
        self.assertEqual((reader.url, reader.first_byte_timeout),
                         (self.engine.session(1).playback_url, self.settings.first_byte_timeout))
        reader.feed(gop(1))
        self.clock.advance(0.5)
        self.assertEqual(channel.state, "live")
        self.assertEqual(channel.session.pid, "pid-1")
        self.assertEqual((channel.recoveries, channel.status()["sessions_opened"]), (1, 2))
        self.assertIn(sink, channel.sinks)
        self.assertIsNone(sink.error)

    def test_recoveries_count_incidents_and_each_starts_at_the_bottom_rung(self) -> None:
        """Failed rungs within one incident count one recovery; after data flows again the next cut counts another and starts at 1 s."""
        channel, _ = self.go_live()
        self.engine.readers[0].end("cut")
        self.clock.advance(1.0)
        self.engine.readers[-1].end(*REFUSED)
        self.assertNextReadAfter(2.0)
        self.assertEqual(channel.recoveries, 1)
        self.engine.readers[-1].feed(gop(1))
        self.clock.advance(0.5)
        self.assertEqual(channel.state, "live")
        self.engine.readers[-1].end("cut again")
        self.assertEqual(channel.recoveries, 2)
        self.assertNextReadAfter(1.0)
        self.assertEqual(self.engine.json_calls, 1)

    def test_bytes_in_counts_every_read(self) -> None:
        """The bytes read are counted across the readers of one incident."""
        channel, _ = self.go_live()
        self.engine.readers[0].end("cut")
        self.clock.advance(1.0)
        self.engine.readers[-1].feed(gop(1))
        self.assertEqual(channel.bytes_in, len(gop(0)) + len(gop(1)))


class LingerTests(CharacterizationTestCase):
    def test_player_joining_a_lingering_channel_restarts_the_full_grace_when_it_leaves(self) -> None:
        """A player joining a lingering channel makes it live again, and the whole grace counts again after it leaves."""
        channel, first = self.go_live()
        first.leave()
        self.clock.advance(3.0)
        second = self.attach(channel, "d")
        self.assertEqual(channel.state, "live")
        self.clock.advance(1.0)
        second.leave()
        self.assertEqual(channel.state, "lingering")
        self.clock.advance(self.settings.grace - 0.5)  # well past the first grace's end
        self.assertEqual((channel.state, self.engine.stop_calls), ("lingering", 0))
        self.clock.advance(0.5)
        self.assertEqual(channel.state, "stopped")
        self.assertEqual(self.engine.stopped, ["pid-0"])

    def test_player_joining_a_lingering_recovering_channel_sees_it_recovering(self) -> None:
        """A player joining a channel that lingers while recovering finds it recovering, not live."""
        channel, first = self.go_live()
        first.leave()
        self.engine.readers[0].end("cut")
        self.assertEqual(channel.state, "lingering")
        self.attach(channel, "d")
        self.assertEqual(channel.state, "recovering")

    def test_player_joining_a_lingering_prebuffering_channel_sees_it_prebuffering(self) -> None:
        """A player joining a channel that lingers before its first byte finds it prebuffering."""
        channel, first = self.join()
        self.engine.answer()
        first.leave()
        self.assertEqual(channel.state, "lingering")
        self.attach(channel, "d")
        self.assertEqual(channel.state, "prebuffering")
        self.clock.advance(self.settings.grace + 1)
        self.assertEqual(self.engine.stop_calls, 0)


class StopTests(CharacterizationTestCase):
    def test_stop_fires_only_when_the_engine_answered_its_stop(self) -> None:
        """stop() returns a Deferred that fires once the engine answered the stop call, while the registry forgets the channel at once."""
        channel, sink = self.go_live()
        self.engine.hold_stops = True
        d = channel.stop("shutting down")
        self.assertFalse(d.called)
        self.assertEqual(channel.state, "stopped")
        self.assertFalse(channel.alive)
        self.assertIn("finish", sink.events)
        self.assertIsNone(self.registry.get(KEY))
        self.assertIsNot(self.registry.channel_for(Selector("id", ID)), channel)
        self.engine.stop_replies[0].callback(True)
        self.assertIsNone(self.successResultOf(d))

    def test_stop_without_a_session_fires_at_once(self) -> None:
        """Stopping a channel that never got an engine session fires at once."""
        channel, _ = self.join()
        self.engine.hold_stops = True
        self.assertIsNone(self.successResultOf(channel.stop("shutting down")))
        self.assertEqual(self.engine.stop_calls, 0)

    def test_stop_all_fires_when_every_engine_stop_answered(self) -> None:
        """Registry.stop_all fires only after the engine answered the stop of every channel."""
        first, _ = self.join(ID)
        self.engine.answer(0, infohash="ab" * 20)
        second, _ = self.join(OTHER_ID)
        self.engine.answer(1, infohash="cd" * 20)
        self.assertEqual(len(self.registry.channels()), 2)
        self.engine.hold_stops = True
        d = self.registry.stop_all()
        self.assertEqual(self.registry.channels(), [])
        self.assertEqual(sorted(self.engine.stopped), ["pid-0", "pid-1"])
        self.engine.stop_replies[0].callback(True)
        self.assertFalse(d.called)
        self.engine.stop_replies[1].callback(True)
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual((first.state, second.state), ("stopped", "stopped"))
