# -*- test-case-name: tests.test_upstream -*-
"""
What the engine's two HTTP clients share: the JSON calls of
L{acetwist.upstream.EngineClient} and the playback reads of
L{acetwist.playback.PlaybackReader}. They send the same User-Agent and
classify a connection that failed the same way.
"""

from __future__ import annotations

from twisted.internet import error as net_error
from twisted.python.failure import Failure
from twisted.web.client import RequestTransmissionFailed, ResponseNeverReceived

from acetwist.errors import EngineError, ErrorKind

USER_AGENT = b"acetwist"


def is_connection_failure(failure: Failure) -> bool:
    """
    The engine could not be reached: the connection was refused, could not
    be made, or was lost before any response (L{ResponseNeverReceived} wraps
    the loss; L{RequestTransmissionFailed} a loss while the request was sent).
    """
    return bool(
        failure.check(
            net_error.ConnectError,  # refused, TCP timeout, no route, connect timeout
            net_error.DNSLookupError,
            net_error.ConnectingCancelledError,
            net_error.ConnectionClosed,  # lost, done, aborted
            ResponseNeverReceived,
            RequestTransmissionFailed,
        )
    )


def could_not_connect(failure: Failure) -> bool:
    """
    No connection could be made at all (refused, timed out, no route, no
    name): the engine itself is down, as opposed to a connection it accepted
    and then dropped (as an engine does to a session it superseded).
    """
    return bool(failure.check(net_error.ConnectError, net_error.DNSLookupError, net_error.ConnectingCancelledError))


def unreachable(failure: Failure) -> EngineError:
    """The error for a call that failed as L{is_connection_failure} says: unreachable, retry after 5 s."""
    assert failure.type is not None
    error = EngineError(503, f"engine unreachable: {failure.type.__name__}", retry_after=5,
                        kind=ErrorKind.UNREACHABLE)
    error.engine_down = could_not_connect(failure)
    return error
