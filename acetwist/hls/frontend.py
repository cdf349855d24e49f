# -*- test-case-name: tests.test_hls_frontend -*-
"""
The HLS requests: a channel's live playlist and its segments, each request
counted to an L{HlsViewer} of the channel (one per address and user agent).

A segment's URI names its channel by an opaque token that encodes the stream
key, so any worker of a cluster can serve it: a worker without the channel
joins it (it follows the owner and replays the owner's mirror, whose marks
give the same segments), then answers from its own segments.
"""

from __future__ import annotations

import re
import weakref
from typing import TYPE_CHECKING, Callable, Dict, Optional, Tuple
from urllib.parse import quote

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.server import Request

from acetwist.config import Settings
from acetwist.errors import EngineError, ErrorKind
from acetwist.hls.playlist import media_playlist
from acetwist.hls.segmenter import Segment, Segmenter
from acetwist.hls.viewer import HlsViewer, viewer_key
from acetwist.upstream import Selector

if TYPE_CHECKING:
    from acetwist.channel import Channel
    from acetwist.registry import Registry

#: segments a channel has before its first playlist is answered
FIRST_PLAYLIST_SEGMENTS = 2

_KINDS = {"c": "id", "h": "infohash"}
_TOKEN = re.compile(r"([ch])([0-9a-f]{40})")


def channel_token(key: str) -> str:
    """The opaque token of stream key C{key} in segment URIs."""
    kind, _, value = key.partition(":")
    prefix = next(p for p, k in _KINDS.items() if k == kind)
    return prefix + value


def key_of_token(token: str) -> Optional[Tuple[str, str]]:
    """The (kind, value) a segment URI's token names, or None."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    return _KINDS[match.group(1)], match.group(2)


class HlsFrontend:
    """Serves playlists and segments from the registry's channels."""

    def __init__(self, registry: "Registry", settings: Settings, clock: IReactorTime, *, clustered: bool) -> None:
        self.registry = registry
        self.settings = settings
        self.clock = clock
        self.clustered = clustered
        self.playlists = 0
        self.segments = 0
        self._viewers: "weakref.WeakKeyDictionary[Channel, Dict[Tuple[str, str], HlsViewer]]" = (
            weakref.WeakKeyDictionary())

    @property
    def first_segment_timeout(self) -> float:
        """How long a first playlist request waits: the engine's deadlines, then three segments' time."""
        settings = self.settings
        return settings.json_timeout + settings.first_byte_timeout + 4 * settings.hls_segment

    @property
    def segment_timeout(self) -> float:
        """How long a request for a segment still being cut (or replayed from the mirror) waits."""
        return 3 * self.settings.hls_segment + 5.0

    def viewers(self) -> int:
        return sum(len(v) for v in self._viewers.values())

    # ------------------------------------------------------------ requests

    def playlist(self, request: Request, selector: Selector, credential: bytes) -> "Deferred[bytes]":
        """The live playlist of C{selector}'s channel, once it has two segments. Raises L{EngineError}."""
        channel = self.registry.channel_for(selector)
        viewer = self._viewer(channel, request)
        hls = channel.hls
        token = channel_token(channel.key)
        suffix = f"?token={quote(credential.decode('utf-8', 'replace'), safe='')}" if self.settings.token else ""

        def uri(segment: Segment) -> str:
            return f"/ace/hls/{token}/{segment.sequence}.ts{suffix}"

        def render(_: None) -> bytes:
            body = media_playlist(hls.window(self.settings.hls_window), hls.target_duration, uri)
            viewer.served(len(body))
            self.playlists += 1
            return body

        # two segments before the first answer: with one, hls.js stalls at once and GStreamer 1.22's
        # hlsdemux2 cannot match the next playlist to it (its sync loop never looks at index 0)
        wanted = min(FIRST_PLAYLIST_SEGMENTS, self.settings.hls_window)
        waiting = viewer.wait(lambda: len(hls.segments) >= wanted, self.first_segment_timeout, "HLS segment")
        return waiting.addCallback(render)

    def segment(self, request: Request, token: str, sequence: int) -> "Deferred[Segment]":
        """Segment C{sequence} of the channel C{token} names, waiting while it is being cut. Raises L{EngineError}."""
        selected = key_of_token(token)
        if selected is None:
            raise EngineError(404, "unknown stream token")
        kind, value = selected
        channel = self.registry.get(f"{kind}:{value}")
        if channel is None:
            if not self.clustered:
                raise EngineError(404, "no such stream here (it has ended): reload the playlist")
            channel = self.registry.channel_for(Selector(kind, value, ()))
        hls = channel.hls
        newest, cutting = hls.newest, hls.cutting
        latest = max(n for n in (newest, cutting, -1) if n is not None)
        if latest >= 0 and sequence > latest + 1:
            raise EngineError(404, f"segment {sequence} is not in this stream")
        viewer = self._viewer(channel, request)

        def settled() -> bool:
            newest = hls.newest
            return newest is not None and newest >= sequence

        def found(_: None) -> Segment:
            segment = hls.get(sequence)
            if segment is None:
                raise EngineError(404, f"segment {sequence} has left the window (or was never cut)")
            viewer.served(segment.size)
            self.segments += 1
            return segment

        def not_cut(failure: Failure) -> Failure:
            failure.trap(EngineError)
            if isinstance(failure.value, EngineError) and failure.value.kind is ErrorKind.TIMEOUT:
                raise EngineError(404, f"segment {sequence} was not cut in time")
            return failure

        return viewer.wait(settled, self.segment_timeout, "segment").addCallbacks(found, not_cut)

    # ------------------------------------------------------------ viewers

    def _viewer(self, channel: "Channel", request: Request) -> HlsViewer:
        """The viewer behind C{request} on C{channel}: found, or joined (and the channel started)."""
        info = self.registry.client_info(request)
        key = viewer_key(info.ip, info.user_agent)
        viewers = self._viewers.setdefault(channel, {})
        viewer = viewers.get(key)
        if viewer is None or viewer.closed:
            self.registry.check_client_limit()
            viewer = HlsViewer(self.clock, self.settings.hls_idle_timeout,
                               _closed(viewers, key, channel.hls, channel.player_gone()))
            viewers[key] = viewer
            channel.hls.retain = True
            channel.replay_mirror = True
            channel.add_client(viewer, info)
            channel.start()
        viewer.touch()
        return viewer


def _closed(viewers: Dict[Tuple[str, str], HlsViewer], key: Tuple[str, str], segmenter: Segmenter,
            gone: Callable[[HlsViewer, str], None]) -> Callable[[HlsViewer, str], None]:
    """
    What a viewer calls when it leaves: it is forgotten here, and leaves its
    channel, whose segments outlive its ring no more once no viewer is left.
    """

    def closed(viewer: HlsViewer, reason: str) -> None:
        if viewers.get(key) is viewer:
            del viewers[key]
        if not viewers:
            segmenter.retain = False
        gone(viewer, reason)

    return closed
