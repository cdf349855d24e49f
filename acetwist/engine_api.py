# -*- test-case-name: tests.test_engine_contract -*-
"""
What a channel needs of the AceStream engine, as zope interfaces and the
value types they carry.

- L{IEngine}: start a session for a L{Selector}, read its playback URL,
  stop it. L{acetwist.upstream.EngineClient} talks HTTP to a real engine;
  L{acetwist.testing.FakeEngine} is completed by hand in tests. Both pass
  C{tests/test_engine_contract.py}.
- L{IPlaybackReader}: one read of a playback URL, ended by a L{PlaybackEnd}:
  a progressive MPEG-TS read (L{acetwist.playback}) or a read of the
  engine's HLS (L{acetwist.engine_hls}), as the session's C{format} says.

Failures are L{acetwist.errors.EngineError}s whose C{kind} says why.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Tuple
from urllib.parse import urlencode

import attr
from zope.interface import Attribute, Interface

from acetwist.errors import EngineError, ErrorKind

if TYPE_CHECKING:
    from typing import Callable

    from twisted.internet.defer import Deferred


@attr.s(frozen=True, auto_attribs=True)
class Selector:
    """
    What a player asked for: C{kind} is C{"id"} or C{"infohash"}; C{extra}
    are passed-through engine parameters (sorted pairs). They are not part of
    the stream key: the engine keeps one session per content, so a content is
    one channel whatever parameters players add.
    """

    kind: str
    value: str
    extra: Tuple[Tuple[str, str], ...] = ()

    @property
    def key(self) -> str:
        return stream_key(self.kind, self.value)

    @property
    def parameters(self) -> str:
        """The passed-through parameters as a query string (empty when none)."""
        return urlencode(sorted(self.extra))


def stream_key(kind: str, value: str) -> str:
    """The stream key of a content: C{id:<hex>} or C{infohash:<hex>}."""
    return f"{kind}:{value}"


#: An engine session whose playback URL is progressive MPEG-TS (getstream).
TS = "ts"
#: An engine session whose playback URL is an HLS playlist (manifest.m3u8): encrypted content.
HLS = "hls"


@attr.s(frozen=True, auto_attribs=True)
class EngineSession:
    """
    One engine playback session, with its URLs rebased onto the engine's own
    address. C{format} is L{TS} (read with L{IEngine.read}) or L{HLS} (read
    with L{IEngine.read_hls}).
    """

    playback_url: str
    stat_url: Optional[str]
    command_url: Optional[str]
    infohash: str
    playback_session_id: str
    pid: str
    is_live: int = 1
    bitrate: Optional[int] = None
    format: str = TS


@attr.s(frozen=True, auto_attribs=True)
class PlaybackEnd:
    """
    Why a playback read ended. C{bytes_read} tells a cut of a flowing stream
    from a failure to start; C{error} is set unless a flowing stream simply
    ended (the engine closed it cleanly after data).
    """

    reason: str
    bytes_read: int
    error: Optional[EngineError] = None

    @property
    def kind(self) -> Optional[ErrorKind]:
        """The error's kind, or None for a clean end of a flowing stream."""
        return self.error.kind if self.error is not None else None


class IPlaybackReader(Interface):
    """One GET of a playback URL, started; bytes go to C{on_data}, then one L{PlaybackEnd} to C{on_end}."""

    url = Attribute("The playback URL being read (str).")
    bytes_read = Attribute("Stream bytes delivered so far (int).")

    def stop() -> None:
        """Abandon the read; no callback follows."""


class IEngine(Interface):
    """One AceStream engine, as a channel uses it."""

    base_url = Attribute("The engine's scheme://host:port (str).")
    json_calls = Attribute("JSON start calls (getstream, and manifest.m3u8 for encrypted content) made so far (int).")
    stop_calls = Attribute("stop calls made so far (int).")

    def open_session(selector: Selector) -> "Deferred[EngineSession]":
        """
        Start an engine session for C{selector} (with a fresh player id).
        Fires with an L{EngineSession} whose URLs are on C{base_url}, or fails
        with an L{EngineError}. Content the engine serves only as HLS gives
        a session of C{format} L{HLS}.
        """

    def read(
        url: str,
        *,
        on_data: "Callable[[bytes], None]",
        on_end: "Callable[[PlaybackEnd], None]",
        first_byte_timeout: float,
        idle_timeout: float,
    ) -> IPlaybackReader:
        """
        Start reading playback URL C{url}. C{on_end} is called exactly once,
        unless the reader's C{stop} was called first.
        """

    def read_hls(
        url: str,
        *,
        on_data: "Callable[[bytes], None]",
        on_splice: "Callable[[], None]",
        on_end: "Callable[[PlaybackEnd], None]",
        first_byte_timeout: float,
        idle_timeout: float,
    ) -> IPlaybackReader:
        """
        Start reading the HLS playlist C{url} (an L{HLS} session's): segment
        bytes in order to C{on_data}, C{on_splice} before a segment that does
        not continue the previous one. C{on_end} as for L{read}.
        """

    def stop(session: EngineSession) -> "Deferred[bool]":
        """Ask the engine to stop C{session}: True if it did, False otherwise (unknown, error, timeout); never fails."""

    def close() -> "Deferred[None]":
        """Release the client's resources once calls in flight are done."""
