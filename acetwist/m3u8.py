# -*- test-case-name: tests.test_m3u8 -*-
"""
Parsing the HLS playlists an engine serves (RFC 8216), as far as a reader
that fetches each segment once, in order, needs: the target duration, the
media sequence, each segment's URI, duration and whether a discontinuity
comes before it, the end of a finished playlist, and the variants of a
master playlist.

Lenient where it costs nothing (CRLF or CR line ends, a byte order mark,
blank lines, unknown tags and comments are ignored, an C{#EXTINF} may be
missing) and strict where guessing would feed players garbage: the first
line must be C{#EXTM3U}, and byte ranges and encrypted segments are refused.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import attr


class PlaylistError(ValueError):
    """The text is not a playlist this reader can follow."""


@attr.s(frozen=True, auto_attribs=True)
class MediaSegment:
    """One segment: its media sequence number, URI as written, duration, and a discontinuity before it."""

    sequence: int
    uri: str
    duration: Optional[float] = None
    discontinuity: bool = False


@attr.s(frozen=True, auto_attribs=True)
class Playlist:
    """
    A parsed playlist. A media playlist has C{segments}; a master playlist
    has C{variants} (their URIs as written, in order) and no segments.
    """

    target_duration: Optional[float] = None
    media_sequence: int = 0
    segments: Tuple[MediaSegment, ...] = ()
    ended: bool = False
    variants: Tuple[str, ...] = ()

    @property
    def newest(self) -> Optional[int]:
        """The media sequence number of the last segment listed, or None."""
        return self.segments[-1].sequence if self.segments else None


#: The most text a playlist may have (an engine's live window is a few kilobytes).
MAX_PLAYLIST_BYTES = 1 << 20


def _number(tag: str, value: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise PlaylistError(f"{tag}: {value.strip()[:40]!r} is not a number") from None
    if not number >= 0 or number == float("inf"):
        raise PlaylistError(f"{tag}: {value.strip()[:40]!r} is out of range")
    return number


def _integer(tag: str, value: str) -> int:
    text = value.strip()
    if not text.isdigit():
        raise PlaylistError(f"{tag}: {text[:40]!r} is not a whole number")
    return int(text)


def _attribute(attributes: str, name: str) -> Optional[str]:
    """The value of C{name} in an attribute list (C{METHOD=NONE,URI="..."}), quotes removed."""
    for item in attributes.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip().upper() == name:
            return value.strip().strip('"')
    return None


def parse_playlist(data: bytes) -> Playlist:
    """Parse C{data}, an HLS playlist; raises L{PlaylistError} when it cannot be followed."""
    if len(data) > MAX_PLAYLIST_BYTES:
        raise PlaylistError(f"playlist larger than {MAX_PLAYLIST_BYTES} bytes")
    text = data.decode("utf-8", "replace").lstrip("\ufeff")
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines or lines[0] != "#EXTM3U":
        raise PlaylistError("not an HLS playlist (no #EXTM3U first)")
    target: Optional[float] = None
    sequence = 0
    ended = False
    uris: List[Tuple[str, Optional[float], bool]] = []
    variants: List[str] = []
    duration: Optional[float] = None
    discontinuity = False
    variant_next = False
    for line in lines[1:]:
        if not line.startswith("#"):
            if variant_next:
                variants.append(line)
                variant_next = False
            else:
                uris.append((line, duration, discontinuity))
            duration, discontinuity = None, False
            continue
        tag, _, value = line.partition(":")
        if tag == "#EXTINF":
            duration = _number(tag, value.partition(",")[0])
        elif tag == "#EXT-X-TARGETDURATION":
            target = _number(tag, value)
        elif tag == "#EXT-X-MEDIA-SEQUENCE":
            sequence = _integer(tag, value)
        elif tag == "#EXT-X-DISCONTINUITY":
            discontinuity = True
        elif tag == "#EXT-X-ENDLIST":
            ended = True
        elif tag == "#EXT-X-STREAM-INF":
            variant_next = True
        elif tag == "#EXT-X-BYTERANGE":
            raise PlaylistError("segments with byte ranges are not supported")
        elif tag == "#EXT-X-KEY" and (_attribute(value, "METHOD") or "NONE").upper() != "NONE":
            raise PlaylistError("encrypted segments (#EXT-X-KEY) are not supported")
        # any other tag, and comments, are ignored
    segments = tuple(MediaSegment(sequence + i, uri, d, disc) for i, (uri, d, disc) in enumerate(uris))
    return Playlist(target, sequence, segments, ended, tuple(variants))
