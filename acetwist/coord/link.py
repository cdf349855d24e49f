# -*- test-case-name: tests.test_coord_redis,tests.test_coord_link -*-
"""
L{Link}: a small pool of connections to Redis that knows whether any is
usable, reconnects by itself and prepares every connection (AUTH, SELECT).

This is the only module that uses txredisapi, and only its public protocol:
L{txredisapi.RedisProtocol} built with C{charset=None, convertNumbers=False}
(binary-safe replies), its C{execute_command}, C{connected} and
C{whenDisconnected}, and its error classes. Connecting, reconnecting and
backing off are Twisted's L{ClientService}. AUTH and SELECT are sent by us
on every (re)connection: txredisapi's own C{dbid}/C{password} handling stops
reconnecting for good after one failure (txredisapi issue #146).
C{tests.test_coord_link} checks these assumptions against the installed
txredisapi.

txredisapi binds the global reactor when it is imported, so this module must
not be imported before twistd has installed its reactor (L{acetwist.service}
imports the Redis coordinator lazily).
"""

from __future__ import annotations

import math
import random
import zlib
from typing import Any, Callable, List, Optional, Protocol, Set, cast

from twisted.application.internet import ClientService
from twisted.internet import defer
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import (
    IAddress,
    IReactorTCP,
    IReactorTime,
    IStreamClientEndpoint,
    ITCPTransport,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from acetwist.coord.base import CoordinatorUnavailable
from acetwist.coord.settings import RedisSettings
from acetwist.deferreds import observe
from acetwist.tls import import_txredisapi

# with TLS forgone, txredisapi's top-level TLS imports are answered by stand-ins (acetwist.tls)
txredisapi = import_txredisapi()

log = Logger()

#: The reconnection delay is drawn between this fraction of its nominal value
#: and the nominal value, so it never exceeds C{reconnect_max_delay}.
JITTER = 0.12


class RedisConnection(Protocol):
    """What we use of a connected txredisapi protocol."""

    connected: int
    transport: Optional[ITCPTransport]

    def execute_command(self, *args: Any) -> Deferred[Any]: ...

    def whenDisconnected(self) -> Deferred[Any]: ...


class _ProtocolFactory(Factory):
    """Builds binary-safe txredisapi protocols (bytes in, bytes out, no number guessing)."""

    noisy = False

    def buildProtocol(self, addr: Optional[IAddress]) -> Any:
        protocol = txredisapi.RedisProtocol(charset=None, convertNumbers=False)
        protocol.factory = self
        return protocol


def is_timeout(failure: Failure) -> bool:
    """A command that got no answer within its deadline."""
    return failure.check(defer.TimeoutError, txredisapi.TimeoutError) is not None


def is_refusal(failure: Failure) -> bool:
    """Redis answered with an error (a bad command or script: worth logging)."""
    return failure.check(txredisapi.ResponseError) is not None


def is_disconnection(failure: Failure) -> bool:
    """The connection was lost or was not there."""
    return failure.check(txredisapi.ConnectionError) is not None


def redis_endpoint(reactor: IReactorTime, settings: RedisSettings) -> IStreamClientEndpoint:
    """Where Redis is (the reactor also provides IReactorTCP, as every real reactor does)."""
    host, port, timeout = settings.host, settings.port, settings.connect_timeout
    tcp = cast(IReactorTCP, reactor)
    if isIPAddress(host):
        return TCP4ClientEndpoint(tcp, host, port, timeout=timeout)
    if isIPv6Address(host):
        return TCP6ClientEndpoint(tcp, host, port, timeout=timeout)
    return HostnameEndpoint(reactor, host, port, timeout=timeout)


class Link:
    """
    C{poolsize} connections to Redis, each kept up by a L{ClientService}.
    A connection is usable once AUTH and SELECT (when configured) succeeded.

    @ivar connects: connections that became usable, ever.
    @ivar reconnected_at: when (reactor seconds) a connection last became
        usable after the link had been up and then down (None before that).
    """

    def __init__(self, settings: RedisSettings, reactor: IReactorTime, poolsize: int, name: str,
                 on_up: Optional[Callable[[], None]] = None, quiet: bool = False) -> None:
        self.settings = settings
        self.reactor = reactor
        self.name = name
        self.on_up = on_up
        self.quiet = quiet
        self.closed = False
        self.was_up = False
        self.connects = 0
        self.reconnected_at: Optional[float] = None
        self._rejected = 0
        self._usable: List[RedisConnection] = []
        self._alive: Set[RedisConnection] = set()
        self._waiters: List[Deferred[None]] = []
        self._close_d: Optional[Deferred[Any]] = None
        self._complaint: Optional[str] = None
        endpoint = redis_endpoint(reactor, settings)
        self._services = [
            ClientService(endpoint, _ProtocolFactory(), retryPolicy=self.retry_delay, clock=reactor)
            for _ in range(poolsize)
        ]

    # ------------------------------------------------------------ state

    @property
    def up(self) -> bool:
        return not self.closed and any(conn.connected for conn in self._usable)

    @property
    def trying(self) -> bool:
        """Whether the link still (re)connects (until L{close})."""
        return not self.closed and any(service.running for service in self._services)

    def retry_delay(self, attempt: int) -> float:
        """
        Seconds before reconnection attempt C{attempt} (1, 2, ...): from half
        a second, growing by e, never above C{reconnect_max_delay}. Connections
        refused by AUTH/SELECT count as failed attempts too.
        """
        top = self.settings.reconnect_max_delay
        step = max(attempt, self._rejected) - 1
        nominal = min(min(0.5, top) * math.e ** min(step, 100), top)
        return nominal * random.uniform(1 - JITTER, 1.0)

    def connection(self, route: str = "") -> Optional[RedisConnection]:
        """A usable connection, the same one for the same route while the pool is unchanged."""
        live = [conn for conn in self._usable if conn.connected]
        if self.closed or not live:
            return None
        return live[zlib.crc32(route.encode("utf-8", "replace")) % len(live)]

    def when_up(self) -> Deferred[None]:
        """Fires when a connection is usable (at once if one is); cancellable."""
        if self.up:
            return succeed(None)
        if self.closed:
            return defer.fail(CoordinatorUnavailable("closed"))

        def forget(d: Deferred[None]) -> None:
            if d in self._waiters:
                self._waiters.remove(d)

        d: Deferred[None] = Deferred(forget)
        self._waiters.append(d)
        return d

    def send(self, conn: RedisConnection, *args: Any, timeout: Optional[float] = None) -> Deferred[Any]:
        """One command on C{conn}, failing after C{timeout}; a connection that misses it is dropped."""
        d: Deferred[Any] = defer.maybeDeferred(conn.execute_command, *args)
        d.addTimeout(self.settings.command_timeout if timeout is None else timeout, self.reactor)

        def dropped(failure: Failure) -> Failure:
            if is_timeout(failure):
                self.drop(conn)
            return failure

        return d.addErrback(dropped)

    def drop(self, conn: RedisConnection) -> None:
        """Abort C{conn} (it missed a deadline); it is replaced by a new one."""
        if conn.transport is not None and conn.connected:
            log.warn("Redis {name}: no answer within the deadline; reconnecting", name=self.name)
            conn.transport.abortConnection()

    # ------------------------------------------------------------ connections

    def start(self) -> None:
        for service in self._services:
            service.startService()
            self._watch(service)

    def _watch(self, service: ClientService) -> None:
        if self.closed:
            return

        def arrived(conn: Any) -> None:
            # Hand the connection over on the next turn: ClientService has
            # not finished its own bookkeeping while it fires.
            self.reactor.callLater(0, self._arrived, service, cast(RedisConnection, conn))

        service.whenConnected().addCallbacks(arrived, lambda f: None)

    def _arrived(self, service: ClientService, conn: RedisConnection) -> None:
        if self.closed:
            if conn.transport is not None:
                conn.transport.abortConnection()
            return
        if not conn.connected:
            self._watch(service)
            return
        self._alive.add(conn)
        conn.whenDisconnected().addCallback(lambda _: self._lost(service, conn))
        self._prepare(conn).addCallbacks(lambda _: self._ready(conn), lambda f: self._refused(conn, f))

    def _prepare(self, conn: RedisConnection) -> Deferred[Any]:
        steps: List[List[Any]] = []
        if self.settings.password is not None:
            steps.append(["AUTH"] + ([self.settings.username] if self.settings.username else [])
                         + [self.settings.password])
        if self.settings.db:
            steps.append(["SELECT", self.settings.db])

        @inlineCallbacks
        def run() -> Any:
            for step in steps:
                yield self.send(conn, *step)

        return run()

    def _ready(self, conn: RedisConnection) -> None:
        if self.closed or not conn.connected:
            return
        self._rejected = 0
        self._complaint = None
        self._usable.append(conn)
        self.connects += 1
        if not self.was_up:
            self.was_up = True
            if self.connects > 1:
                self.reconnected_at = self.reactor.seconds()
            (log.debug if self.quiet else log.info)(
                "Redis {name}: connected to {host}:{port}", name=self.name,
                host=self.settings.host, port=self.settings.port)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)
        if self.on_up is not None:
            self.on_up()

    def _refused(self, conn: RedisConnection, failure: Failure) -> None:
        self._rejected += 1
        message = failure.getErrorMessage()
        if message != self._complaint:
            self._complaint = message
            log.error("Redis {name}: AUTH/SELECT failed ({why}); retrying", name=self.name, why=message)
        if conn.transport is not None:
            conn.transport.abortConnection()

    def _lost(self, service: ClientService, conn: RedisConnection) -> None:
        self._alive.discard(conn)
        if conn in self._usable:
            self._usable.remove(conn)
        if self.closed:
            return
        if self.was_up and not self.up:
            self.was_up = False
            say = log.debug if self.quiet else log.warn
            say("Redis {name}: connection lost; reconnecting", name=self.name)
        # ClientService learns of the loss right after this callback.
        self.reactor.callLater(0, self._watch, service)

    # ------------------------------------------------------------ closing

    def close(self) -> Deferred[None]:
        """
        Stop reconnecting, close every connection; fires when they are
        closed. Connections that have not closed after C{command_timeout}
        (a hung Redis not reading what we still have to write) are aborted.
        """
        if self._close_d is None:
            self.closed = True
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.errback(CoordinatorUnavailable("closed"))
            self._close_d = defer.gatherResults([service.stopService() for service in self._services],
                                                consumeErrors=True)
            self._close_d.addErrback(lambda f: None)
            abort = self.reactor.callLater(self.settings.command_timeout, self._abort_all)

            def closed(result: Any) -> Any:
                if abort.active():
                    abort.cancel()
                return result

            self._close_d.addBoth(closed)
        return observe(self._close_d)

    def _abort_all(self) -> None:
        for conn in list(self._alive):
            if conn.transport is not None:
                conn.transport.abortConnection()
