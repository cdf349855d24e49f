# -*- test-case-name: tests.test_sim_pool -*-
"""
Listening ports that a fault can close and reopen.

L{ListenSwitch} keeps a listener in the state a condition asks for
(listening or not), retrying a port that is still busy. L{EndpointListener}
is such a listener for twistd, on an endpoint description; it remembers the
port it was given, so that a C{tcp:0} listener reopens on the same port.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from twisted.application import service
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IProtocolFactory, IReactorTime, IStreamServerEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from acetwist.sim.config import endpoint_port, with_port

RETRY_LISTEN = 0.5

#: stops listening; may return a Deferred that fires once it has
Pause = Callable[[], Optional[Deferred[None]]]
#: listens again; raises when the port is busy
Resume = Callable[[], None]


class ListenSwitch:
    """
    Listens when C{wanted()} is true and not otherwise: call L{reconcile}
    whenever C{wanted()} may have changed. Give it the listener with
    L{set_listener}; it starts out listening.
    """

    def __init__(self, reactor: IReactorTime, wanted: Callable[[], bool], log: Logger) -> None:
        self.reactor = reactor
        self._wanted = wanted
        self.log = log
        self._pause: Optional[Pause] = None
        self._resume: Optional[Resume] = None
        self._listening = True
        self._busy = False
        self._retry: Optional[IDelayedCall] = None
        self._stopped = False

    @property
    def listening(self) -> bool:
        return self._listening

    def set_listener(self, pause: Pause, resume: Resume) -> None:
        """C{pause()} stops listening (may return a Deferred); C{resume()} listens again (may raise)."""
        self._pause, self._resume = pause, resume
        self.reconcile()

    def reconcile(self) -> None:
        wanted = not self._stopped and self._wanted()
        if self._busy or self._pause is None or self._resume is None or wanted == self._listening:
            return
        if self._listening:
            self._busy = True
            self.log.info("no longer listening")

            def paused(_: object) -> None:
                self._listening = False
                self._busy = False
                self.reconcile()

            maybeDeferred(self._pause).addBoth(paused)
            return
        try:
            self._resume()
        except Exception as e:
            self.log.warn("listening again failed ({error}); retrying", error=e)
            self._retry = self.reactor.callLater(RETRY_LISTEN, self._retry_listen)
            return
        self._listening = True
        self.log.info("listening again")

    def _retry_listen(self) -> None:
        self._retry = None
        self.reconcile()

    def stop(self) -> None:
        """Never listen again (the owner stops listening itself); cancel a pending retry."""
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None


@implementer(IStreamServerEndpoint)
class _Recording:
    """An endpoint that reports the port number it got."""

    def __init__(self, endpoint: IStreamServerEndpoint, bound: Callable[[int], None]) -> None:
        self.endpoint = endpoint
        self.bound = bound

    def listen(self, protocolFactory: IProtocolFactory) -> "Deferred[IListeningPort]":
        def got(port: IListeningPort) -> IListeningPort:
            number = getattr(port.getHost(), "port", None)
            if isinstance(number, int):
                self.bound(number)
            return port

        return self.endpoint.listen(protocolFactory).addCallback(got)


class EndpointListener:
    """
    A twistd listening service on C{description} that can be paused and
    resumed (replaced by a fresh service) while its parent runs. The first
    listen happens in C{privileged_start}, so a busy port stops twistd.

    @ivar port_number: the TCP port once bound (None before, and for non-TCP endpoints).
    """

    def __init__(self, reactor: Any, description: str, factory: IProtocolFactory,
                 bound: Optional[Callable[[int], None]] = None) -> None:
        self.reactor = reactor
        self.description = description
        self.factory = factory
        self.port_number: Optional[int] = None
        self._bound = bound
        self._running = False
        self.service: Optional[service.Service] = self._service()

    def _port_bound(self, number: int) -> None:
        self.port_number = number
        if self._bound is not None:
            self._bound(number)

    def _service(self) -> service.Service:
        description = self.description
        if self.port_number is not None and endpoint_port(description) == 0:
            description = with_port(description, self.port_number)
        endpoint = _Recording(serverFromString(self.reactor, description), self._port_bound)
        fresh = StreamServerEndpointService(endpoint, self.factory)
        fresh._raiseSynchronously = True  # as strports.service does: a busy port raises from privilegedStartService
        return fresh

    def privileged_start(self) -> None:
        if self.service is not None:
            self.service.privilegedStartService()

    def start(self) -> None:
        self._running = True
        if self.service is not None:
            self.service.startService()

    def pause(self) -> Optional[Deferred[None]]:
        listening, self.service = self.service, None
        if listening is not None and listening.running:
            return listening.stopService()
        return None

    def resume(self) -> None:
        fresh = self._service()
        if self._running:
            fresh.privilegedStartService()  # raises when the port is busy
            fresh.startService()
        self.service = fresh

    def stop(self) -> Optional[Deferred[None]]:
        self._running = False
        return self.pause()
