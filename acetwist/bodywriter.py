# -*- test-case-name: tests.test_bodywriter -*-
"""
A player's response body, written with as little work per write as its
connection allows.

Twisted's path for one write of a streaming response: C{Request.write}
frames a chunk (three pieces), the channel hands them to the transport, the
transport buffers them and asks the reactor to watch the socket for
writability (an C{epoll_ctl}); on the next reactor turn it joins its buffer
into one new bytes object (a user-space copy per player), sends it, and stops
watching (another C{epoll_ctl}). Fanned out to hundreds of players, that is
most of the proxy's CPU after the kernel's own copy.

L{BodyWriter} sends at once instead when it safely can: on a plain TCP
connection (not TLS, not HTTP/2) whose transport holds nothing and is neither
closing nor aborted, the chunk header, the ring's blocks and the closing CRLF
go to the socket in one scatter/gather C{sendmsg}, with no copy and no reactor
round trip. Whatever the kernel does not take (a short send, EAGAIN) is handed
to the transport, which then owns the order: while it holds anything, every
later write goes through it too, so no byte overtakes another, and its buffer
pauses the sink exactly as before (the IPushProducer contract stays
Twisted's). Any other error from C{sendmsg} hands the whole write to the
transport, whose own send meets the same error and closes the connection the
usual way. Every other connection (TLS, a test's C{StringTransport}) gets the
same framing through the transport's C{writeSequence}, still without joining
the blocks.

The fast path reads a few of Twisted's private attributes (the transport's
buffer, C{_aborting}, the request's C{_disconnected}); L{direct_capable}
checks them once per connection against the pinned Twisted, and
C{--direct-send off} turns the whole path off (every write then goes through
C{Request.write}, public API only).
"""

from __future__ import annotations

import errno
from typing import Any, List, Optional, Sequence

from twisted.internet.tcp import Server as TCPServer
from twisted.web.http import NO_BODY_CODES, HTTPChannel, Request

# (names imported one by one: twisted.web.http is wrapped by a deprecation
# proxy whose every attribute look-up costs more than a write's own work)

#: errors of a non-blocking send that mean "nothing taken, try later"
_RETRY_LATER = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS})

#: C{sendmsg} takes at most IOV_MAX (1024 on Linux) buffers; longer writes go
#: through the transport
MAX_BUFFERS = 512

_CRLF = b"\r\n"


def direct_capable(transport: Any) -> bool:
    """
    C{transport} is one whose socket L{BodyWriter} may write to itself: a
    plain TCP server connection of the POSIX reactors (a TLS one, a UNIX
    socket, HTTP/2 or a test double is not).
    """
    return type(transport) is TCPServer and not transport.TLS and hasattr(transport, "socket")


def _idle(transport: TCPServer) -> bool:
    """Open, not closing, and with nothing buffered: a send now cannot overtake anything."""
    return bool(
        transport.connected
        and not transport.disconnected
        and not transport.disconnecting
        and not transport._aborting
        and not transport._writeDisconnecting
        and not transport._writeDisconnected
        and not transport.producerPaused
        and not transport._tempDataLen
        and transport.offset == len(transport.dataBuffer)
    )


def unsent(buffers: Sequence[bytes], sent: int) -> List[bytes]:
    """What is left of C{buffers} after the first C{sent} bytes went out (only a split buffer is copied)."""
    for index, buffer in enumerate(buffers):
        if sent < len(buffer):
            return [buffer[sent:] if sent else buffer, *buffers[index + 1 :]]
        sent -= len(buffer)
    return []


class BodyWriter:
    """
    Writes the parts of a streaming response body (the ring's blocks, in
    order) to the player's connection, directly to its socket when that is
    safe, through Twisted's transport otherwise.

    @ivar direct: the direct path is allowed (C{--direct-send}).
    @ivar direct_writes: writes the socket took whole from C{sendmsg}.
    @ivar partial_writes: direct sends the socket took only part of (the
        rest went to the transport).
    @ivar transport_writes: writes that went to the transport whole.
    """

    def __init__(self, request: Any, direct: bool = True) -> None:
        self.request = request
        self.direct = direct
        self.direct_writes = 0
        self.partial_writes = 0
        self.transport_writes = 0
        self._capable: Optional[bool] = None  # decided at the first write

    @property
    def direct_ready(self) -> bool:
        """
        Writes to this player go to its socket directly (once the head is
        out): larger writes then cost less, whereas through Twisted's
        transport a write above its 64 KiB buffer pauses the producer and one
        above its 128 KiB send limit is split and copied.
        """
        return self.direct and self._capable is True

    def write(self, parts: Sequence[bytes]) -> None:
        """Write C{parts} (non-empty bytes) as one piece of the body: one chunk when the response is chunked."""
        request = self.request
        if self._capable is None:
            self._capable = direct_capable(getattr(getattr(request, "channel", None), "transport", None))
        if not self._framing_ours(request):
            # the first write (it sends the head), HEAD, a gone player, or no Twisted request at all
            self.transport_writes += 1
            request.write(parts[0] if len(parts) == 1 else b"".join(parts))
            return
        size = 0
        for part in parts:
            size += len(part)
        buffers = [b"%x\r\n" % size, *parts, _CRLF] if request.chunked else list(parts)
        request.sentLength += size
        channel = request.channel
        transport = channel.transport
        if self._capable and len(buffers) <= MAX_BUFFERS and _idle(transport):
            sent = self._send(transport, buffers)
            if sent is not None:
                if sent == size + (len(buffers[0]) + 2 if request.chunked else 0):
                    self.direct_writes += 1
                    return
                if sent:
                    self.partial_writes += 1
                    channel.writeSequence(unsent(buffers, sent))
                    return
        self.transport_writes += 1
        channel.writeSequence(buffers)

    def _framing_ours(self, request: Any) -> bool:
        """The head is out and the body is ours to frame (what C{Request.write} would do, without its copy)."""
        return bool(
            self.direct
            and isinstance(request, Request)
            and request.startedWriting
            and not request.finished
            and not request._disconnected
            and isinstance(request.channel, HTTPChannel)
            and request.method != b"HEAD"
            and request.code not in NO_BODY_CODES
        )

    @staticmethod
    def _send(transport: TCPServer, buffers: List[bytes]) -> Optional[int]:
        """Bytes the socket took now (0 when it would block), or None on any other error (the transport will meet it)."""
        try:
            return int(transport.socket.sendmsg(buffers))
        except OSError as e:
            if e.errno in _RETRY_LATER:
                return 0
            return None
