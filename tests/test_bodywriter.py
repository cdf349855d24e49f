"""
Tests for acetwist.bodywriter and the sink's write side: a ClientSink on a
real twisted.web Request, over a real HTTPChannel, over Twisted's real TCP
transport (tcp.Server) whose socket is an in-memory fake that takes only as
many bytes as its "kernel buffer" has room for, refuses with EAGAIN when
full, and can fail as a reset connection does. The reactor is a
MemoryReactorClock: the test plays its part by calling the transport's
doWrite while it asks for writability.
"""

from __future__ import annotations

import errno
import random
from typing import Any, List, Optional, Tuple

from twisted.internet import tcp
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web import http

from acetwist import ts
from acetwist.bodywriter import BodyWriter, direct_capable, unsent
from acetwist.ring import TSRing
from acetwist.sink import ClientSink
from tests.test_ring import Stream

P = ts.PACKET_SIZE
BLOCK = 40 * P  # 7520 bytes: a handful of blocks overflow Twisted's 64 KiB buffer


class FakeSocket:
    """
    A connected non-blocking socket in memory: C{room} bytes fit in its send
    buffer (the peer "reads" by adding room); past that C{send}/C{sendmsg}
    take what fits, or raise EAGAIN when nothing does; C{fail_with} makes
    every later send raise that errno.
    """

    def __init__(self, room: int) -> None:
        self.room = room
        self.received = bytearray()
        self.sendmsg_calls = 0
        self.send_calls = 0
        self.eagain = 0
        self.fail_with: Optional[int] = None
        self.sends_after_failure = 0

    def _take(self, data: bytes) -> int:
        if self.fail_with is not None:
            self.sends_after_failure += 1
            raise OSError(self.fail_with, "connection reset by peer")
        if not self.room:
            self.eagain += 1
            raise BlockingIOError(errno.EAGAIN, "would block")
        taken = data[: self.room]
        self.received += taken
        self.room -= len(taken)
        return len(taken)

    def send(self, data: Any) -> int:
        self.send_calls += 1
        return self._take(bytes(data))

    def sendmsg(self, buffers: List[bytes]) -> int:
        self.sendmsg_calls += 1
        return self._take(b"".join(buffers))

    def setblocking(self, flag: bool) -> None:
        pass

    def setsockopt(self, *args: Any) -> None:
        pass

    def fileno(self) -> int:
        return 99

    def getsockname(self) -> Tuple[str, int]:
        return ("127.0.0.1", 8080)

    def getpeername(self) -> Tuple[str, int]:
        return ("127.0.0.1", 50000)

    def shutdown(self, how: int) -> None:
        pass

    def close(self) -> None:
        pass


class Connection:
    """One player connection: Twisted's own tcp.Server transport on a FakeSocket, an HTTPChannel, a Request."""

    def __init__(self, reactor: MemoryReactorClock, room: int = 1 << 30) -> None:
        captured: List[http.Request] = []

        class CapturingRequest(http.Request):
            def process(self) -> None:
                captured.append(self)

        self.reactor = reactor
        self.socket = FakeSocket(room)
        self.channel = http.HTTPChannel()
        self.channel.requestFactory = CapturingRequest  # type: ignore[assignment]
        self.channel.callLater = reactor.callLater  # type: ignore[method-assign]
        self.transport = tcp.Server(self.socket, self.channel, ("127.0.0.1", 50000), None, 1, reactor)  # type: ignore[arg-type]
        self.channel.makeConnection(self.transport)
        self.channel.dataReceived(b"GET /ace/getstream?id=x HTTP/1.1\r\nHost: proxy\r\n\r\n")
        self.request = captured[0]
        self.lost = False

    def pump(self) -> None:
        """The reactor's turn: while the transport waits for writability and the socket has room, let it write."""
        for _ in range(1000):
            if self.lost or self.transport not in self.reactor.writers or (
                    not self.socket.room and self.socket.fail_with is None):
                return
            result = self.transport.doWrite()
            if result is not None:  # what the reactor does with a failed write
                self.lost = True
                self.reactor.removeWriter(self.transport)
                self.transport.connectionLost(Failure(result))  # type: ignore[arg-type]
                return

    def read(self, size: int) -> None:
        """The player reads C{size} bytes: room in the socket buffer, then the reactor's turn."""
        self.socket.room += size
        self.pump()

    def body(self) -> bytes:
        """The body the player received, chunked framing checked and removed."""
        return dechunk(bytes(self.socket.received))[0]


def dechunk(raw: bytes) -> Tuple[bytes, int]:
    """The body of a chunked response (head dropped) and its number of chunks; a framing error raises."""
    _, _, rest = raw.partition(b"\r\n\r\n")
    body, chunks = [], 0
    while rest:
        line, sep, rest = rest.partition(b"\r\n")
        if not sep:
            break  # a partial chunk header at the end
        size = int(line, 16)
        if not size:
            break
        body.append(rest[:size])
        chunks += 1
        if len(rest) < size + 2:
            break  # the connection ended inside this chunk
        if rest[size : size + 2] != b"\r\n":
            raise AssertionError("chunk not closed by CRLF")
        rest = rest[size + 2 :]
    return b"".join(body), chunks


class WriteSideCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.ring = TSRing(self.reactor, block_size=BLOCK, flush_interval=0.05, on_block=self._on_block,
                           max_bytes=64 * 1024 * 1024, max_seconds=1000)
        self.stream = Stream()
        self.sinks: List[ClientSink] = []

    def _on_block(self, block: Any) -> None:
        for sink in list(self.sinks):
            sink.wake()

    def feed(self, data: bytes) -> None:
        self.ring.feed(data)
        self.ring.flush()

    def add(self, connection: Connection, **kwargs: Any) -> ClientSink:
        sink = ClientSink(connection.request, self.ring, self.reactor, max_lag_bytes=1 << 30, **kwargs)
        self.sinks.append(sink)
        sink.start()
        return sink

    def stream_so_far(self) -> bytes:
        """What a player that joined at the first keyframe has been sent: its PSI, then every block from it on."""
        first = self.ring.next_keyframe(self.ring.first_seq)
        assert first is not None
        return first.psi + b"".join(self.ring.get(s).data for s in range(first.seq, self.ring.next_seq))  # type: ignore[union-attr]

    def run_session(self, direct: bool, seed: int, room: int = 20000) -> Tuple[Connection, ClientSink, int]:
        """
        A live stream in uneven pieces to one player that reads uneven amounts
        (often less than arrives, so the socket fills, sends are short or
        refused, Twisted buffers and pauses the sink); at the end it reads
        everything. Returns the connection, the sink and in how many turns it was paused.
        """
        rng = random.Random(seed)
        self.feed(self.stream.gop(30))
        connection = Connection(self.reactor, room=room)
        sink = self.add(connection, direct_send=direct, write_batch=3 * BLOCK)
        pauses = 0
        for _ in range(120):
            data = self.stream.gop(rng.randint(5, 60)) if rng.random() < 0.2 else self.stream.filler(rng.randint(1, 90))
            self.feed(data)
            pauses += int(sink.paused)
            connection.read(rng.choice([0, 0, 0, 500, 3000, 8000, 30000]))
        for _ in range(200):
            connection.read(1 << 20)
            if not sink.lag_bytes and connection.transport not in self.reactor.writers:
                break
        return connection, sink, pauses


class IdenticalBytesTests(WriteSideCase):
    def test_fast_path_and_fallback_deliver_the_same_body(self) -> None:
        """Under short sends, EAGAIN and pause/resume, the direct path and Twisted's path deliver identical bytes in order."""
        for seed in range(4):
            direct_connection, direct_sink, direct_pauses = self.run_session(direct=True, seed=seed)
            self.sinks.clear()
            self.setUp()
            fallback_connection, fallback_sink, fallback_pauses = self.run_session(direct=False, seed=seed)
            self.sinks.clear()
            self.setUp()
            direct_body, fallback_body = direct_connection.body(), fallback_connection.body()
            self.assertEqual(direct_body, fallback_body)
            self.assertEqual(len(direct_body), direct_sink.bytes_sent)
            checker = ts.TSChecker()
            checker.feed(direct_body)
            self.assertTrue(checker.aligned_at_start)
            self.assertEqual((checker.cc_errors, checker.trailing_bytes), (0, 0))
            # both paths were exercised, with the hard cases
            writer = direct_sink.writer
            self.assertGreater(writer.direct_writes, 0)
            self.assertGreater(writer.partial_writes, 0)
            self.assertGreater(direct_pauses, 0)
            self.assertGreater(fallback_pauses, 0)
            self.assertEqual(fallback_connection.socket.sendmsg_calls, 0)
            self.assertEqual((direct_sink.skips, fallback_sink.skips), (0, 0))

    def test_refused_direct_send_goes_to_the_transport_in_order(self) -> None:
        """A direct send refused with EAGAIN hands the write to the transport; later writes queue behind it, in order."""
        self.feed(self.stream.gop(30))
        connection = Connection(self.reactor)
        sink = self.add(connection)
        connection.pump()
        connection.socket.room = 0
        self.feed(self.stream.filler(40))
        self.assertEqual(connection.socket.eagain, 1)
        self.assertIn(connection.transport, self.reactor.writers)
        self.feed(self.stream.filler(40))
        self.assertEqual(connection.socket.sendmsg_calls, 1)  # the transport holds data: no second direct try
        connection.read(1 << 20)
        self.feed(self.stream.filler(40))  # the transport is empty again: direct
        self.assertEqual((sink.writer.direct_writes, sink.writer.transport_writes), (1, 3))
        self.assertEqual(connection.body(), self.stream_so_far())

    def test_direct_writes_skip_the_transport(self) -> None:
        """With room in the socket, every write after the head is one sendmsg and Twisted buffers nothing."""
        self.feed(self.stream.gop(30))
        connection = Connection(self.reactor)
        sink = self.add(connection)
        connection.pump()  # the head and the first write went through Request.write
        for _ in range(10):
            self.feed(self.stream.filler(40))  # one block
            self.assertNotIn(connection.transport, self.reactor.writers)
        self.assertEqual(sink.writer.direct_writes, 10)
        self.assertEqual(connection.socket.sendmsg_calls, 10)
        self.assertEqual(connection.body(), self.stream_so_far())


class NeverIntoClosedOrPausedTests(WriteSideCase):
    def test_nothing_is_sent_while_paused(self) -> None:
        """A sink paused by Twisted's full buffer sends nothing, directly or otherwise, until the buffer drains."""
        self.feed(self.stream.gop(30))
        connection = Connection(self.reactor, room=0)
        sink = self.add(connection)
        for _ in range(30):
            self.feed(self.stream.filler(60))
            if sink.paused:
                break
        self.assertTrue(sink.paused)
        calls = (connection.socket.sendmsg_calls, connection.socket.send_calls, len(connection.socket.received))
        buffered = connection.transport._tempDataLen
        for _ in range(5):
            self.feed(self.stream.filler(60))
        self.assertEqual((connection.socket.sendmsg_calls, connection.socket.send_calls,
                          len(connection.socket.received)), calls)
        self.assertEqual(connection.transport._tempDataLen, buffered)
        connection.read(1 << 24)
        self.assertFalse(sink.paused)
        self.assertEqual(connection.body(), self.stream_so_far())

    def test_connection_lost_mid_write(self) -> None:
        """A reset during a direct send goes to Twisted, which loses the connection; the sink closes and sends no more."""
        self.feed(self.stream.gop(30))
        connection = Connection(self.reactor, room=30000)
        sink = self.add(connection)
        self.feed(self.stream.filler(100))
        delivered = len(connection.socket.received)
        connection.socket.fail_with = errno.ECONNRESET
        self.feed(self.stream.filler(100))  # the direct send fails: the write goes to the transport
        self.assertFalse(sink.closed)
        connection.pump()  # the transport's own send meets the reset: connection lost
        self.assertTrue(connection.lost)
        self.assertTrue(sink.closed)
        self.assertEqual(sink.close_reason, "gone")
        attempts = connection.socket.sends_after_failure
        for _ in range(5):
            self.feed(self.stream.filler(100))
        self.assertEqual(connection.socket.sends_after_failure, attempts)
        self.assertEqual(len(connection.socket.received), delivered)

    def test_nothing_is_sent_after_an_abort(self) -> None:
        """Once the transport is aborting (the connectionLost still to come), no direct send reaches the socket."""
        self.feed(self.stream.gop(30))
        connection = Connection(self.reactor)
        sink = self.add(connection)
        connection.pump()
        connection.transport.abortConnection()
        received = len(connection.socket.received)
        self.feed(self.stream.filler(100))
        self.assertEqual(len(connection.socket.received), received)
        self.assertEqual(sink.writer.direct_writes, 0)
        self.reactor.advance(0)  # the abort's connectionLost
        self.assertTrue(sink.closed)


class FallbackTests(WriteSideCase):
    def test_direct_capable_only_for_plain_tcp(self) -> None:
        """Only Twisted's plain TCP server transport qualifies: not one that started TLS, not a TLS listener's, not a test double."""
        connection = Connection(self.reactor)
        self.assertTrue(direct_capable(connection.transport))
        connection.transport.TLS = True  # what startTLS sets: writes then go through the TLS layer
        self.assertFalse(direct_capable(connection.transport))
        connection.transport.TLS = False
        self.assertFalse(direct_capable(TLSMemoryBIOProtocol(None, connection.channel)))  # type: ignore[arg-type]
        self.assertFalse(direct_capable(StringTransport()))

    def test_other_transports_get_the_same_bytes_through_write_sequence(self) -> None:
        """On a transport that is not plain TCP (TLS, a test double), the framed parts go to writeSequence, unjoined."""
        transport = StringTransport()
        channel = http.HTTPChannel()
        captured: List[http.Request] = []

        class CapturingRequest(http.Request):
            def process(self) -> None:
                captured.append(self)

        channel.requestFactory = CapturingRequest  # type: ignore[assignment]
        channel.callLater = self.reactor.callLater  # type: ignore[method-assign]
        channel.makeConnection(transport)
        channel.dataReceived(b"GET / HTTP/1.1\r\nHost: proxy\r\n\r\n")
        writer = BodyWriter(captured[0])
        writer.write([b"a" * 188])
        sequences: List[List[bytes]] = []
        transport.writeSequence = sequences.append  # type: ignore[method-assign]
        block, psi = b"b" * 376, b"c" * 188
        writer.write([psi, block])
        self.assertEqual(sequences, [[b"234\r\n", psi, block, b"\r\n"]])
        self.assertIs(sequences[0][2], block)
        self.assertEqual((writer.transport_writes, writer.direct_writes), (2, 0))

    def test_switched_off_every_write_is_request_write(self) -> None:
        """With direct sends off, every write goes through Request.write (public API) as one chunk."""
        self.feed(self.stream.gop(30))
        connection = Connection(self.reactor)
        sink = self.add(connection, direct_send=False)
        for _ in range(5):
            self.feed(self.stream.filler(40))  # one block
            connection.pump()
        self.assertEqual(connection.socket.sendmsg_calls, 0)
        self.assertEqual(sink.writer.transport_writes, 6)
        self.assertEqual(dechunk(bytes(connection.socket.received))[1], 6)

    def test_unsent_keeps_the_order_and_copies_only_a_split_buffer(self) -> None:
        """What is left after a short send: the rest of the split buffer, then the later buffers themselves."""
        a, b, c = b"abc", b"defgh", b"ij"
        self.assertEqual(unsent([a, b, c], 0), [a, b, c])
        self.assertEqual(unsent([a, b, c], 4), [b"efgh", c])
        self.assertIs(unsent([a, b, c], 8)[0], c)
        self.assertEqual(unsent([a, b, c], 10), [])


class HoldTests(WriteSideCase):
    def test_live_writes_wait_for_write_delay(self) -> None:
        """At the live edge, blocks are written together once the oldest unsent one is write_delay old."""
        self.feed(self.stream.gop(30))
        connection = Connection(self.reactor)
        sink = self.add(connection, write_delay=0.1)
        connection.pump()
        self.assertEqual(dechunk(bytes(connection.socket.received))[1], 1)  # the joiner was not held
        for _ in range(3):
            self.reactor.advance(0.04)
            self.feed(self.stream.filler(10))
        self.assertEqual(dechunk(bytes(connection.socket.received))[1], 1)
        self.reactor.advance(0.04)
        self.feed(self.stream.filler(10))  # the first held block is now 0.12 s old
        body, chunks = dechunk(bytes(connection.socket.received))
        self.assertEqual(chunks, 2)
        self.assertEqual(sink.lag_bytes, 0)
        self.assertEqual(len(body), sink.bytes_sent)

    def test_held_blocks_are_written_when_due_even_if_the_upstream_goes_quiet(self) -> None:
        """Blocks held at the live edge are written after twice write_delay at the latest, without a next block."""
        self.feed(self.stream.gop(30))
        connection = Connection(self.reactor)
        sink = self.add(connection, write_delay=0.1)
        self.feed(self.stream.filler(10))
        self.assertGreater(sink.lag_bytes, 0)
        self.reactor.advance(0.19)
        self.assertGreater(sink.lag_bytes, 0)
        self.reactor.advance(0.01)  # twice write_delay: the bound when no block comes
        connection.pump()
        self.assertEqual(sink.lag_bytes, 0)
        self.assertEqual(connection.body(), self.stream_so_far())
        self.assertEqual(self.reactor.getDelayedCalls(), [] if not sink._stall else [sink._stall])

    def test_writes_through_the_transport_are_not_held(self) -> None:
        """Without the direct path (TLS, --direct-send off) every block is written at once: large writes would pause the sink."""
        self.feed(self.stream.gop(30))
        connection = Connection(self.reactor)
        sink = self.add(connection, write_delay=10.0, direct_send=False)
        for _ in range(3):
            self.feed(self.stream.filler(10))
            self.assertEqual(sink.lag_bytes, 0)

    def test_half_a_batch_is_written_at_once(self) -> None:
        """Half a write_batch waiting is written without waiting for write_delay."""
        self.feed(self.stream.gop(30))
        connection = Connection(self.reactor)
        sink = self.add(connection, write_delay=10.0, write_batch=4 * BLOCK)
        self.feed(self.stream.filler(40))
        self.assertEqual(sink.lag_bytes, 40 * P)
        self.feed(self.stream.filler(40))
        self.assertEqual(sink.lag_bytes, 0)

    def test_finish_writes_what_was_held(self) -> None:
        """A channel that ends cleanly first writes the blocks a player was being held for."""
        self.feed(self.stream.gop(30))
        connection = Connection(self.reactor)
        sink = self.add(connection, write_delay=10.0)
        self.feed(self.stream.filler(10))
        self.assertGreater(sink.lag_bytes, 0)
        sink.finish()
        connection.pump()
        self.assertEqual(sink.close_reason, "finished")
        self.assertEqual(connection.body(), self.stream_so_far())
        self.assertEqual(len(connection.body()), sink.bytes_sent)


class PinnedTwistedTests(SynchronousTestCase):
    def test_the_private_attributes_the_direct_path_reads_exist(self) -> None:
        """The pinned Twisted's TCP transport and request have every private attribute the direct path reads (an upgrade that drops one fails here, not mid-stream)."""
        connection = Connection(MemoryReactorClock())
        for name in ("_aborting", "_writeDisconnecting", "_writeDisconnected", "_tempDataLen", "offset",
                     "dataBuffer", "producerPaused", "disconnecting", "disconnected", "connected", "socket", "TLS"):
            self.assertTrue(hasattr(connection.transport, name), name)
        for name in ("_disconnected", "startedWriting", "finished", "chunked", "sentLength", "code", "method"):
            self.assertTrue(hasattr(connection.request, name), name)


class DirectWriterUnitTests(SynchronousTestCase):
    def test_writer_before_the_head_uses_request_write(self) -> None:
        """The first write goes through Request.write, which sends the response head with it."""
        reactor = MemoryReactorClock()
        connection = Connection(reactor)
        writer = BodyWriter(connection.request)
        writer.write([b"G" * 188, b"G" * 188])
        connection.pump()
        self.assertTrue(bytes(connection.socket.received).startswith(b"HTTP/1.1 200 OK"))
        self.assertEqual(connection.body(), b"G" * 376)
        self.assertEqual((writer.transport_writes, writer.direct_writes), (1, 0))
        writer.write([b"x" * 10])
        self.assertEqual(writer.direct_writes, 1)
        self.assertEqual(connection.body(), b"G" * 376 + b"x" * 10)
        self.assertEqual(connection.request.sentLength, 386)
