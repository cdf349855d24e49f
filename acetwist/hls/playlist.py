# -*- test-case-name: tests.test_hls_segmenter -*-
"""The live media playlist of a channel's newest segments."""

from __future__ import annotations

from typing import Callable, List

from acetwist.hls.segmenter import Segment

CONTENT_TYPE = b"application/vnd.apple.mpegurl"


def media_playlist(segments: List[Segment], target_duration: int, uri: Callable[[Segment], str]) -> bytes:
    """
    C{#EXTM3U} version 3 with C{segments} (oldest first, at least one): never
    an C{#EXT-X-ENDLIST}, since the channel is live. A discontinuity before the
    first listed segment is carried by C{#EXT-X-DISCONTINUITY-SEQUENCE} alone.
    """
    first = segments[0]
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{target_duration}",
        f"#EXT-X-MEDIA-SEQUENCE:{first.sequence}",
        f"#EXT-X-DISCONTINUITY-SEQUENCE:{first.discontinuity}",
    ]
    for segment in segments:
        if segment.discontinuous and segment is not first:
            lines.append("#EXT-X-DISCONTINUITY")
        lines.append(f"#EXTINF:{segment.duration:.3f},")
        lines.append(uri(segment))
    return ("\n".join(lines) + "\n").encode()
