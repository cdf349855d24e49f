"""What a channel needs of an AceStream engine client: L{IEngine} and the readers it starts."""

from __future__ import annotations

from typing import Callable

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from acetwist.upstream import EngineSession, PlaybackEnd, Selector


class IPlaybackReader(Interface):
    """One running read of a playback URL."""

    url = Attribute("The playback URL being read (str).")
    bytes_read = Attribute("Stream bytes delivered so far (int).")

    def stop() -> None:
        """Abandon the read; no callback follows."""


class IEngine(Interface):
    """One AceStream engine, as a channel uses it."""

    base_url = Attribute("The engine's scheme://host:port (str).")
    json_calls = Attribute("getstream JSON calls made so far (int).")
    stop_calls = Attribute("stop calls made so far (int).")

    def open_session(selector: Selector) -> "Deferred[EngineSession]":
        """Start an engine session with a fresh player id; fails with L{EngineError}."""

    def read(
        url: str,
        *,
        on_data: Callable[[bytes], None],
        on_end: Callable[[PlaybackEnd], None],
        first_byte_timeout: float,
        idle_timeout: float,
    ) -> IPlaybackReader:
        """Start reading C{url}; C{on_end} is called exactly once unless the reader is stopped first."""

    def stop(session: EngineSession) -> "Deferred[bool]":
        """Ask the engine to stop C{session}; True if it said ok. Never fails."""

    def close() -> "Deferred[None]":
        """Wait for calls in flight, then close pooled connections."""
