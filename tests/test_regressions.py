"""
Regressions found by review of the channel redesign and the hardening:
late claims and counts, garbage cycles, the negative cache, a merge race,
redaction of a fragment, the connection cap on a TLS listener.
"""

import gc
import weakref
from typing import Any, List

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from acetwist.channel import Channel, ClientInfo
from acetwist.errors import EngineError, ErrorKind
from acetwist.interfaces import Lease
from acetwist.redact import redact_uri
from acetwist.testing import wait_for
from acetwist.registry import Registry
from acetwist.upstream import Selector
from tests.channel_harness import ChannelHarness
from tests.fakes import FakeCoordinator, FakeSink, gop

ID = "1" * 40
KEY = f"id:{ID}"


class SlowCoordinator(FakeCoordinator):
    """Claims and counts answered by hand (Redis slow or paused)."""

    def __init__(self) -> None:
        super().__init__()
        self.slow_claims = False
        self.slow_counts = False
        self.pending_claims: List["Deferred[Any]"] = []
        self.pending_counts: List["Deferred[int]"] = []

    def claim(self, stream_key: str, aliases: bool = True) -> "Deferred[Any]":
        if not self.slow_claims:
            return super().claim(stream_key, aliases)
        self.claims += 1
        d: "Deferred[Any]" = Deferred()
        self.pending_claims.append(d)
        return d

    def client_count(self, stream_key: str) -> "Deferred[int]":
        if not self.slow_counts:
            return super().client_count(stream_key)
        d: "Deferred[int]" = Deferred()
        self.pending_counts.append(d)
        return d


def outcome(d: "Deferred[Any]") -> List[Failure]:
    """The failures left at the end of C{d}'s chain (consumed, so nothing is logged at GC)."""
    failures: List[Failure] = []
    d.addErrback(failures.append)
    return failures


class Base(ChannelHarness):
    coordinator: "SlowCoordinator"

    def make_coordinator(self) -> "SlowCoordinator":
        return SlowCoordinator()

    def join(self) -> "tuple[Channel, FakeSink]":
        """A player joins the way Registry.join wires it: the sink reports its close through player_gone()."""
        channel = self.registry.channel_for(Selector("id", ID))
        sink = FakeSink()
        sink.on_close = channel.player_gone()
        channel.add_client(sink, ClientInfo("c", "127.0.0.1", "test", self.clock.seconds()))
        channel.start()
        return channel, sink


class LateClaimTests(Base):
    def test_claim_answered_after_the_channel_stopped_releases_the_lease(self) -> None:
        """A lease granted after the channel was stopped while claiming (shutdown with Redis slow) is released, without an error."""
        self.coordinator.slow_claims = True
        channel, sink = self.join()
        channel.stop("shutting down")
        del channel, sink  # the registry forgot it: nothing else keeps an ended channel
        claim = self.coordinator.pending_claims[0]
        failures = outcome(claim)
        claim.callback(Lease(self.coordinator.worker_id, 1))
        self.assertEqual([f.type for f in failures], [])
        self.assertEqual(self.coordinator.released, [KEY])


class GraceCountTests(Base):
    def test_count_answered_after_a_player_came_and_went_is_ignored(self) -> None:
        """A grace count that answers after a player joined and left again (the grace restarted) changes nothing and raises nothing."""
        channel, sink = self.join()
        self.engine.answer()
        self.engine.readers[-1].feed(gop(0))
        self.clock.advance(0.1)
        self.coordinator.slow_counts = True
        sink.leave()
        self.clock.advance(self.settings.grace)  # the grace is up: the owner asks for the cluster's count
        [count] = self.coordinator.pending_counts
        _, again = self.join()  # a player comes back while the count is on its way ...
        again.leave()  # ... and leaves: the channel lingers anew
        failures = outcome(count)
        count.callback(0)  # the stale answer
        self.assertEqual([f.type for f in failures], [])
        self.assertTrue(channel.alive)
        self.assertEqual(channel.state, "lingering")


class CycleTests(Base):
    def test_an_ended_owner_leaves_no_garbage_cycle(self) -> None:
        """Once an owner channel ended and was dropped, its lifecycle machine and engine source are freed by reference counting."""
        channel, sink = self.join()
        self.engine.answer()
        self.engine.readers[-1].feed(gop(0))
        self.clock.advance(0.1)
        lifecycle = weakref.ref(channel._lifecycle)
        engine_core = weakref.ref(channel._engine_sources[0].core)
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)
        channel.stop("shutting down")
        del channel, sink
        self.assertIsNone(engine_core())
        self.assertIsNone(lifecycle())


class RedactionTests(SynchronousTestCase):
    def test_token_after_a_hash_is_redacted(self) -> None:
        """Twisted parses ?a=1#&token=S as a token parameter (it authenticates), so the access log must not keep it either."""
        from twisted.web.http import parse_qs

        uri = b"/ace/getstream?id=" + ID.encode() + b"#&token=s3cret"
        self.assertEqual(parse_qs(uri.partition(b"?")[2], 1)[b"token"], [b"s3cret"])
        self.assertNotIn(b"s3cret", redact_uri(uri))


class NegativeCacheTests(Base):
    def setUp(self) -> None:
        super().setUp()
        self.registry = Registry(self.make_channel, clock=self.clock, failed_content_ttl=10.0,
                                 make_sink=lambda request, ring, on_close: FakeSink())

    def refuse_once(self, selector: Selector) -> None:
        channel = self.registry.channel_for(selector)
        sink = FakeSink()
        sink.on_close = channel.player_gone()
        channel.add_client(sink, ClientInfo("c", "127.0.0.1", "test", 0.0))
        channel.start()
        self.engine.refuse(ErrorKind.REFUSED)
        self.assertFalse(channel.alive)

    def test_a_remembered_refusal_keeps_no_request_alive(self) -> None:
        """Players refused from the negative cache are not kept in memory by it (re-raising one exception object grows its traceback)."""

        class Request:
            def getClientAddress(self) -> Any:
                return None

        self.refuse_once(Selector("id", ID))
        refs = []
        for _ in range(3):
            request = Request()
            refs.append(weakref.ref(request))
            with self.assertRaises(EngineError):
                self.registry.join(Selector("id", ID), request)  # type: ignore[arg-type]
            del request
        self.assertEqual([ref() for ref in refs], [None, None, None])

    def test_a_refusal_with_extra_parameters_does_not_refuse_the_plain_content(self) -> None:
        """A player whose own pass-through parameter made the engine refuse does not get the content refused to everyone else for the ttl."""
        self.refuse_once(Selector("id", ID, (("file_indexes", "99"),)))
        calls = self.engine.json_calls
        try:
            self.registry.channel_for(Selector("id", ID)).start()
        except EngineError:
            pass
        self.assertEqual(self.engine.json_calls, calls + 1)


class MergeTests(Base):
    def test_handover_while_the_canonical_channel_opens_survives_a_superseded_own_session(self) -> None:
        """
        infohash:H opens first, id:X second; the engine made X's session last,
        so H's own session is superseded (403): H must not fail its players
        while it holds X's live session.
        """
        by_hash = self.registry.channel_for(Selector("infohash", "ab" * 20))
        hash_sink = FakeSink()
        hash_sink.on_close = by_hash.player_gone()
        by_hash.add_client(hash_sink, ClientInfo("h", "127.0.0.1", "t", 0.0))
        by_hash.start()
        by_id, id_sink = self.join()
        self.engine.answer(1, infohash="ab" * 20)  # id:X's reply arrives first: it hands over to infohash:H
        self.assertEqual(self.registry.channels(), [by_hash])
        self.engine.answer(0, infohash="ab" * 20)  # H's own session, already superseded by X's
        self.engine.readers[-1].gone(403, b"superseded")
        self.assertIsNone(hash_sink.error)
        self.assertIsNone(id_sink.error)
        self.assertTrue(by_hash.alive)


class TLSListenerCapTests(TestCase):
    @inlineCallbacks
    def test_connection_over_the_cap_is_closed_on_a_tls_listener(self) -> Any:
        """With --listen ssl:..., a connection over --max-connections is closed at once, with no traceback (Twisted's TLS wrapper cannot take buildProtocol's None)."""
        from twisted.internet import reactor, ssl
        from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol, serverFromString
        from twisted.web.resource import Resource

        from acetwist.http import ConnectionStats, Limits, ProxySite
        from tests.test_http_loopback import RawClient

        key = ssl.KeyPair.generate(size=2048)
        pem = self.mktemp()
        with open(pem, "wb") as f:
            f.write(key.selfSignedCert(1, CN="localhost").dumpPEM())
        site = ProxySite(Resource(), Limits(10.0, 1, 0), ConnectionStats(), reactor)  # type: ignore[arg-type]
        port = yield serverFromString(reactor, f"ssl:0:interface=127.0.0.1:privateKey={pem}").listen(site)
        self.addCleanup(port.stopListening)
        clients = []
        for _ in range(2):
            client = RawClient()
            yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port, timeout=5), client)
            clients.append(client)
            self.addCleanup(lambda c=client: c.closed if c.closed.called or c.transport.abortConnection() else c.closed)
            yield deferLater(reactor, 0.2, lambda: None)
        over = clients[1]
        yield wait_for(reactor, lambda: over.closed.called, timeout=3.0).addErrback(lambda f: None)
        self.assertTrue(over.closed.called, "the connection over the cap is still open")
        self.assertEqual(self.flushLoggedErrors(AttributeError), [])
