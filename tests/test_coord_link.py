"""
What L{acetwist.coord.link} assumes of the installed txredisapi (only its
public protocol and errors), checked so that an upgrade that breaks an
assumption fails here with a message saying which; and the link's own
behaviour on a real redis-server.
"""

from __future__ import annotations

import inspect
from typing import Any, List

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tests.test_coord_contract import RedisHarness


def _why(what: str) -> str:
    import txredisapi

    version = getattr(txredisapi, "__version__", "?")
    return f"txredisapi {version}: {what}; acetwist/coord/link.py relies on it"


class TxredisapiAssumptionTests(SynchronousTestCase):
    def test_protocol_api(self) -> None:
        """RedisProtocol takes charset and convertNumbers and has execute_command, whenDisconnected and connected."""
        import txredisapi

        params = inspect.signature(txredisapi.RedisProtocol.__init__).parameters
        for name in ("charset", "convertNumbers"):
            self.assertIn(name, params, _why(f"RedisProtocol() no longer takes {name}="))
        protocol = txredisapi.RedisProtocol(charset=None, convertNumbers=False)
        for name in ("execute_command", "whenDisconnected"):
            self.assertTrue(callable(getattr(protocol, name, None)), _why(f"RedisProtocol has no {name}()"))
        self.assertFalse(protocol.connected, _why("a new RedisProtocol is not 'connected == 0'"))
        self.assertIsInstance(protocol.whenDisconnected(), Deferred, _why("whenDisconnected() is not a Deferred"))

    def test_error_classes(self) -> None:
        """ResponseError, ConnectionError and TimeoutError exist, and a reply timeout is a connection error."""
        import txredisapi

        for name in ("ResponseError", "ConnectionError", "TimeoutError"):
            self.assertTrue(issubclass(getattr(txredisapi, name, type(None)), Exception),
                            _why(f"txredisapi.{name} is gone"))
        self.assertTrue(issubclass(txredisapi.TimeoutError, txredisapi.ConnectionError),
                        _why("TimeoutError is no longer a ConnectionError"))

    def test_protocol_ready_without_auth_or_select(self) -> None:
        """Given no password and no db, a protocol is usable as soon as it is connected, without asking its factory anything."""
        import txredisapi
        from twisted.internet.testing import StringTransport

        protocol = txredisapi.RedisProtocol(charset=None, convertNumbers=False)
        protocol.makeConnection(StringTransport())
        self.assertTrue(protocol.connected, _why("a connected protocol without AUTH/SELECT is not ready at once"))
        transport = protocol.transport
        reply = protocol.execute_command("GET", b"k\x00")
        self.assertEqual(transport.value(), b"*2\r\n$3\r\nGET\r\n$2\r\nk\x00\r\n", _why("commands are not sent as RESP"))
        answers: List[Any] = []
        reply.addCallback(answers.append)
        protocol.dataReceived(b"$5\r\n12345\r\n")
        self.assertEqual(answers, [b"12345"], _why("charset=None, convertNumbers=False no longer gives raw bytes"))


class LinkTests(RedisHarness, TestCase):
    @inlineCallbacks
    def test_connections_are_replaced_after_they_die(self) -> Any:
        """A link whose connections are killed reconnects by itself, counts the connects and notes when it came back."""
        from acetwist.coord.link import Link

        link = Link(self.settings(), reactor, 2, "test")
        self.addCleanup(link.close)
        link.start()
        yield link.when_up()
        yield self.until(lambda: link.connects == 2)
        self.assertIsNone(link.reconnected_at)
        conn = link.connection("x")
        assert conn is not None
        yield link.send(conn, "SET", "k", "1.0")
        self.assertEqual((yield link.send(conn, "GET", "k")), b"1.0")
        self.server.command("CLIENT", "KILL", "TYPE", "normal")
        yield self.until(lambda: link.connects == 4 and link.up)
        self.assertIsNotNone(link.reconnected_at)
        self.assertTrue(link.trying)
        yield link.close()
        self.assertFalse(link.trying or link.up)
