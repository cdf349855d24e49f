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

from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.server import Request

from acetwist.config import Settings
from acetwist.errors import EngineError, ErrorKind
from acetwist.hls.playlist import media_playlist
from acetwist.hls.segmenter import Segment
from acetwist.hls.viewer import HlsViewer, viewer_key
from acetwist.interfaces import ICoordinator, Lease
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
    """
    Serves playlists and segments from the registry's channels. A request
    reads the channel the registry has for its stream key when it is
    answered, so a request that waits while its channel hands its players to
    another (the same stream by content id and by infohash, or a cluster
    redirect) is answered from that one.
    """

    def __init__(self, registry: "Registry", settings: Settings, clock: IReactorTime, coordinator: ICoordinator,
                 *, clustered: bool) -> None:
        self.registry = registry
        self.settings = settings
        self.clock = clock
        self.coordinator = coordinator
        self.clustered = clustered
        self.playlists = 0
        self.segments = 0
        self._viewers: "weakref.WeakKeyDictionary[Channel, Dict[Tuple[str, str], HlsViewer]]" = (
            weakref.WeakKeyDictionary())

    @property
    def first_segment_timeout(self) -> float:
        """How long a first playlist request waits: the engine's deadlines, then four segments' time."""
        settings = self.settings
        return settings.json_timeout + settings.first_byte_timeout + 4 * settings.hls_segment

    @property
    def segment_timeout(self) -> float:
        """How long a request for a segment still being cut (or replayed from the mirror) waits."""
        return 3 * self.settings.hls_segment + 5.0

    def viewers(self) -> int:
        """HLS viewers of every channel (one per address and user agent)."""
        return sum(1 for channel in self.registry.channels() for sink in channel.sinks
                   if getattr(sink, "kind", None) == HlsViewer.kind)

    # ------------------------------------------------------------ requests

    def playlist(self, request: Request, selector: Selector, credential: bytes) -> "Deferred[bytes]":
        """The live playlist of C{selector}'s channel, once it has two segments. Raises L{EngineError}."""
        viewer = self._viewer(self.registry.channel_for(selector), request)
        suffix = f"?token={quote(credential.decode('utf-8', 'replace'), safe='')}" if self.settings.token else ""
        # two segments before the first answer: with one, hls.js stalls at once and GStreamer 1.22's
        # hlsdemux2 cannot match the next playlist to it (its sync loop never looks at index 0)
        wanted = min(FIRST_PLAYLIST_SEGMENTS, self.settings.hls_window)

        def ready() -> bool:
            channel = self.registry.get(selector.key)
            return channel is not None and len(channel.hls.window(wanted)) >= wanted

        def render(_: None) -> bytes:
            channel = self.registry.get(selector.key)
            if channel is None:
                raise EngineError(503, "channel stopped", retry_after=1)
            token = channel_token(channel.key)
            hls = channel.hls
            body = media_playlist(hls.window(self.settings.hls_window), hls.minimum_target,
                                  lambda segment: f"/ace/hls/{token}/{segment.sequence}.ts{suffix}")
            viewer.served(len(body))
            self.playlists += 1
            return body

        return viewer.wait(ready, self.first_segment_timeout, "HLS segment").addCallback(render)

    def segment(self, request: Request, token: str, sequence: int) -> "Deferred[Segment]":
        """
        Segment C{sequence} of the stream C{token} names, waiting while it is
        being cut. Fails with L{EngineError} (404 for an unknown token, a
        stream not served, a segment out of the window).
        """
        selected = key_of_token(token)
        if selected is None:
            return fail(EngineError(404, "unknown stream token"))
        kind, value = selected
        key = f"{kind}:{value}"
        if self.registry.get(key) is not None:
            return maybeDeferred(self._segment, request, key, sequence)
        if not self.clustered:
            return fail(EngineError(404, "no such stream here (it has ended): reload the playlist"))

        def owned(lease: Optional[Lease]) -> "Deferred[Segment]":
            # another worker serves the stream: follow it (a stale URI must not open an engine session)
            if lease is None:
                raise EngineError(404, "no such stream in the cluster (it has ended): reload the playlist")
            self.registry.channel_for(Selector(kind, value, ()))
            return self._segment(request, key, sequence)

        return self.coordinator.owner(key).addCallback(owned)

    def _segment(self, request: Request, key: str, sequence: int) -> "Deferred[Segment]":
        channel = self.registry.get(key)
        if channel is None:
            raise EngineError(503, "channel stopped", retry_after=1)
        hls = channel.hls
        latest = max(n for n in (hls.newest, hls.cutting, -1) if n is not None)
        if latest >= 0 and sequence > latest + 1:
            raise EngineError(404, f"segment {sequence} is not in this stream")
        viewer = self._viewer(channel, request)

        def settled() -> bool:
            current = self.registry.get(key)
            newest = current.hls.newest if current is not None else None
            return newest is not None and newest >= sequence

        def found(_: None) -> Segment:
            current = self.registry.get(key)
            segment = current.hls.get(sequence) if current is not None else None
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
        """The viewer behind C{request} on C{channel}: found (or moved there by a handover), or joined."""
        info = self.registry.client_info(request)
        key = viewer_key(info.ip, info.user_agent)
        viewers = self._viewers.setdefault(channel, {})
        viewer = viewers.get(key)
        if viewer is None or viewer.closed:
            viewer = self._moved_here(channel, key)
            if viewer is not None:
                viewers[key] = viewer
        if viewer is None:
            self.registry.check_client_limit()
            viewer = HlsViewer(self.clock, self._idle_timeout(channel), _forget(viewers, key, channel.player_gone()))
            viewers[key] = viewer
            if not channel.bytes_in:
                channel.replay_mirror = True  # a new follower replays the mirror: the viewer may ask for cut segments
            channel.add_client(viewer, info)
            channel.start()
        viewer.touch()
        return viewer

    @staticmethod
    def _moved_here(channel: "Channel", key: Tuple[str, str]) -> Optional[HlsViewer]:
        """A live viewer of C{channel} with this address and user agent (another channel handed it over)."""
        for sink, info in channel.sinks.items():
            if isinstance(sink, HlsViewer) and not sink.closed and viewer_key(info.ip, info.user_agent) == key:
                return sink
        return None

    def _idle_timeout(self, channel: "Channel") -> Callable[[], float]:
        """C{--hls-idle}, else 3 x the channel's target duration + 5 s (a long-GOP stream has long segments)."""
        configured = self.settings.hls_idle
        if configured is not None:
            return lambda: configured
        hls = channel.hls
        return lambda: 3 * hls.target_duration + 5.0


def _forget(viewers: Dict[Tuple[str, str], HlsViewer], key: Tuple[str, str],
            gone: Callable[[HlsViewer, str], None]) -> Callable[[HlsViewer, str], None]:
    """What a viewer calls when it leaves: it is forgotten here, and leaves its channel."""

    def closed(viewer: HlsViewer, reason: str) -> None:
        if viewers.get(key) is viewer:
            del viewers[key]
        gone(viewer, reason)

    return closed
