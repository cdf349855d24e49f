# -*- test-case-name: tests.test_http_limits -*-
"""
The HTTP server side: a L{Site} whose connections are bounded before any
application code runs.

- At most C{max_connections} open connections, and C{max_connections_per_ip}
  from one client address: a connection over either cap is closed as soon as
  it is accepted (nothing is read from it).
- A request head (request line and headers) must arrive within
  C{header_timeout} of the connection opening, or of the first byte of the
  next request on a kept-alive connection; otherwise a 408 and the
  connection is closed. A slow client that trickles bytes cannot hold a
  connection: Twisted's idle timeout is reset by every byte, this deadline is
  not. Once a head is complete the deadline is gone, so a player receiving a
  stream is never cut by it (Twisted's own idle timeout still applies).
- No route takes a request body: a request announcing one
  (C{Content-Length} above 0, or chunked) is answered 413 from its headers,
  before the body is read or buffered, and the connection is closed.
- A malformed head is a JSON 400, an over-long line a 431 (Twisted closes
  without a word), and after any refusal what the client still sends is
  dropped unparsed for a moment so it can read the answer.
- The access log never holds a token: query parameters named like C{token}
  are redacted, and the C{Authorization} header is not logged.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Dict, Optional

import attr
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress, IConsumer, IDelayedCall
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request
from twisted.web.iweb import IAccessLogFormatter
from twisted.web.resource import IResource
from twisted.web.server import Site
from zope.interface import provider

from acetwist.redact import redact_uri

if TYPE_CHECKING:
    from acetwist.config import Settings
    from acetwist.reactor import IReactor

#: after refusing a request, read and drop at most this much of what the
#: client still sends (so it can read our answer instead of a reset) ...
LINGER_BYTES = 1 << 20
#: ... for at most this long, then the connection is aborted
LINGER_SECONDS = 2.0
#: at most one warning about refused connections per this many seconds
WARN_EVERY = 10.0


@attr.s(frozen=True, auto_attribs=True)
class Limits:
    """What one client may hold; 0 means no limit."""

    header_timeout: float = 10.0
    max_connections: int = 1024
    max_connections_per_ip: int = 64

    @classmethod
    def from_settings(cls, settings: "Settings") -> "Limits":
        return cls(settings.header_timeout, settings.max_connections, settings.max_connections_per_ip)


@attr.s(auto_attribs=True)
class ConnectionStats:
    """Counters of the HTTP server side, shown in C{/status} under C{http}."""

    open: int = 0
    peak: int = 0
    accepted: int = 0
    refused_max_connections: int = 0
    refused_per_ip: int = 0
    header_timeouts: int = 0
    bodies_refused: int = 0

    def status(self) -> Dict[str, int]:
        return attr.asdict(self)


def _host(address: Optional[IAddress]) -> Optional[str]:
    """The client address that per-IP limits count (None for UNIX sockets)."""
    if isinstance(address, (IPv4Address, IPv6Address)):
        return address.host
    return None


def _escape(value: bytes | str) -> str:
    """Printable ASCII for a log line: bytes as Python escapes, double quotes escaped."""
    if isinstance(value, str):
        value = value.encode("utf-8", "backslashreplace")
    return repr(value)[2:-1].replace('"', '\\"')


@provider(IAccessLogFormatter)
def access_log_line(timestamp: Optional[str], request: Request) -> str:
    """Twisted's combined log format, with the URI's and referrer's tokens redacted."""
    address = request.getClientAddress()
    ip = address.host if isinstance(address, (IPv4Address, IPv6Address)) else "-"
    referrer = redact_uri(request.getHeader(b"referer") or b"-")
    agent = request.getHeader(b"user-agent") or b"-"
    length = request.sentLength or "-"
    return (
        f'"{_escape(ip)}" - - {timestamp} "{_escape(request.method)} {_escape(redact_uri(request.uri))} '
        f'{_escape(request.clientproto)}" {request.code} {length} "{_escape(referrer)}" "{_escape(agent)}"'
    )


def raw_response(status: int, phrase: str, message: str) -> bytes:
    """A whole HTTP/1.1 response with a JSON error body and C{Connection: close}."""
    body = json.dumps({"error": message, "status": status}).encode() + b"\n"
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "Content-Type: application/json\r\n"
        "Cache-Control: no-store\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class ProxyHTTPChannel(HTTPChannel):
    """An L{HTTPChannel} with a deadline for each request head and no request bodies."""

    log = Logger()

    #: set by L{ProxySite.buildProtocol}
    site: "ProxySite"
    #: the client address counted against the per-IP limit, if any
    counted_host: Optional[str] = None
    _counted = False
    _head_deadline: Optional[IDelayedCall] = None
    _linger: Optional[IDelayedCall] = None
    _await_next_head = False
    _discarding = False
    _discarded = 0

    # ------------------------------------------------------------ head deadline

    def connectionMade(self) -> None:
        super().connectionMade()
        self._arm_head_deadline()

    def dataReceived(self, data: bytes) -> None:
        if self._discarding:
            self._discarded += len(data)
            if self._discarded > LINGER_BYTES:
                self._abort()
            return
        if self._await_next_head:
            # The first byte of the next request on a kept-alive connection.
            self._await_next_head = False
            self._arm_head_deadline()
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:
        self._disarm_head_deadline()
        if self.length != 0:
            # Content-Length above zero (an int) or chunked (None): no route takes a body.
            self.site.stats.bodies_refused += 1
            self._refuse(413, "Content Too Large", "this proxy takes no request body")
            return
        super().allHeadersReceived()

    def requestDone(self, request: Any) -> None:
        # Before the parent replays pipelined data, which may start the next head.
        self._await_next_head = bool(self.persistent)
        super().requestDone(request)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._disarm_head_deadline()
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        self._linger = None
        if self._counted:
            self._counted = False
            self.site.release(self)
        super().connectionLost(reason)

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        timeout = self.site.limits.header_timeout
        if timeout > 0:
            self._head_deadline = self.callLater(timeout, self._head_timed_out)

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None and self._head_deadline.active():
            self._head_deadline.cancel()
        self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        self.site.stats.header_timeouts += 1
        self._refuse(408, "Request Timeout", "the request head did not arrive in time")

    # ------------------------------------------------------------ refusing

    def lineLengthExceeded(self, line: bytes) -> None:
        """A request line or header line over C{MAX_LENGTH}: a 431 (Twisted would close without a word)."""
        self._refuse(431, "Request Header Fields Too Large", "a request line or header is too long")

    def _respondToBadRequestAndDisconnect(self) -> None:
        """Twisted's answer to a malformed head (a bare 400 and a close), as JSON and with the lingering close."""
        self._refuse(400, "Bad Request", "malformed HTTP request")

    def _refuse(self, status: int, phrase: str, message: str) -> None:
        """
        Answer C{status} without reading further and close: our side is shut
        at once, and what the client still sends is read and dropped (within
        L{LINGER_BYTES} and L{LINGER_SECONDS}) so it sees the answer, not a reset.
        """
        transport = self.transport
        if transport is None or self._discarding:
            return
        self._discarding = True
        self.clearLineBuffer()
        self.persistent = False
        transport.write(raw_response(status, phrase, message))
        consumer = IConsumer(transport, None)
        if consumer is not None:
            consumer.unregisterProducer()  # this channel no longer produces (as in HTTPChannel.loseConnection)
        half_close = getattr(transport, "loseWriteConnection", None)
        if half_close is None:
            transport.loseConnection()
            return
        half_close()
        self._linger = self.callLater(LINGER_SECONDS, self._abort)

    def _abort(self) -> None:
        transport = self.transport
        if transport is not None:
            getattr(transport, "abortConnection", transport.loseConnection)()


class _Refused(Protocol):
    """
    A connection over a cap: dropped as soon as it is made, nothing read.
    (Returning None from buildProtocol would do for plain TCP, but a TLS
    listener wraps whatever it gets and breaks on None.)
    """

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.abortConnection()  # type: ignore[attr-defined]


class ProxySite(Site):
    """
    A L{Site} that counts its connections, refuses those over L{Limits}, and
    logs requests with tokens redacted.
    """

    logger = Logger()
    # Twisted types Site.protocol as a factory of its HTTP/2-capable wrapper;
    # this proxy speaks HTTP/1.1 only (see acceptableProtocols).
    protocol = ProxyHTTPChannel  # type: ignore[assignment]

    def __init__(self, resource: IResource, limits: Limits, stats: ConnectionStats, reactor: "IReactor") -> None:
        super().__init__(resource, logFormatter=access_log_line, reactor=reactor)
        self.limits = limits
        self.stats = stats
        self.per_host: Dict[str, int] = {}
        self._refused_since_warning = 0
        self._warned_at: Optional[float] = None

    def acceptableProtocols(self) -> list[bytes]:
        return [b"http/1.1"]

    def buildProtocol(self, addr: IAddress) -> Protocol:  # type: ignore[override]
        host = _host(addr)
        limits, stats = self.limits, self.stats
        if limits.max_connections and stats.open >= limits.max_connections:
            stats.refused_max_connections += 1
            self._warn_refused(host, "--max-connections")
            return _Refused()
        if host is not None and limits.max_connections_per_ip and \
                self.per_host.get(host, 0) >= limits.max_connections_per_ip:
            stats.refused_per_ip += 1
            self._warn_refused(host, "--max-connections-per-ip")
            return _Refused()
        channel = super().buildProtocol(addr)
        assert isinstance(channel, ProxyHTTPChannel)
        channel._counted = True
        channel.counted_host = host
        stats.open += 1
        stats.accepted += 1
        stats.peak = max(stats.peak, stats.open)
        if host is not None:
            self.per_host[host] = self.per_host.get(host, 0) + 1
        return channel

    def release(self, channel: ProxyHTTPChannel) -> None:
        """A counted connection closed."""
        self.stats.open -= 1
        host = channel.counted_host
        if host is not None:
            left = self.per_host.get(host, 1) - 1
            if left > 0:
                self.per_host[host] = left
            else:
                self.per_host.pop(host, None)

    def _warn_refused(self, host: Optional[str], limit: str) -> None:
        """Log refusals at most once per L{WARN_EVERY} seconds (a flood must not flood the log)."""
        self._refused_since_warning += 1
        now = self.reactor.seconds()
        if self._warned_at is not None and now - self._warned_at < WARN_EVERY:
            return
        self.logger.warn("connection from {host} refused: {limit} reached ({n} refused since the last warning)",
                      host=host or "-", limit=limit, n=self._refused_since_warning)
        self._warned_at = now
        self._refused_since_warning = 0


def make_site(resource: IResource, settings: "Settings", stats: ConnectionStats, reactor: "IReactor") -> ProxySite:
    """The proxy's site, with the limits of C{settings}."""
    return ProxySite(resource, Limits.from_settings(settings), stats, reactor)
