"""The HLS playlist parser: what a reader that fetches each segment once, in order, takes from an engine's playlist."""

from twisted.trial.unittest import SynchronousTestCase

from acetwist.engine_http import resolve
from acetwist.m3u8 import MAX_PLAYLIST_BYTES, MediaSegment, PlaylistError, parse_playlist

ENGINE = b"""#EXTM3U
#EXT-X-VERSION:3
#EXT-X-TARGETDURATION:7
#EXT-X-MEDIA-SEQUENCE:41
#EXTINF:5.005,
http://localhost:6878/ace/c/ab/41.ts
#EXTINF:4.8,
http://localhost:6878/ace/c/ab/42.ts
"""


class ParseTests(SynchronousTestCase):
    def test_engine_playlist(self) -> None:
        """An engine's media playlist gives its target duration, and each segment its sequence, URI and duration."""
        playlist = parse_playlist(ENGINE)
        self.assertEqual((playlist.target_duration, playlist.media_sequence, playlist.ended), (7.0, 41, False))
        self.assertEqual(playlist.segments, (
            MediaSegment(41, "http://localhost:6878/ace/c/ab/41.ts", 5.005, False),
            MediaSegment(42, "http://localhost:6878/ace/c/ab/42.ts", 4.8, False),
        ))
        self.assertEqual(playlist.newest, 42)
        self.assertEqual(playlist.variants, ())

    def test_crlf_bom_blank_lines_comments_and_unknown_tags(self) -> None:
        """CRLF line ends, a byte order mark, blank lines, comments and unknown tags change nothing."""
        text = ("\ufeff#EXTM3U\r\n\r\n#EXT-X-TARGETDURATION:2\r\n# a comment\r\n#EXT-X-MEDIA-SEQUENCE:3\r\n"
                "#EXT-X-PROGRAM-DATE-TIME:2024-01-01T00:00:00Z\r\n#EXT-X-UNKNOWN:X=1\r\n#EXTINF:2.0,title\r\n"
                "3.ts\r\n#EXTINF:2,\r\n  4.ts  \r\n")
        playlist = parse_playlist(text.encode("utf-8"))
        self.assertEqual([(s.sequence, s.uri, s.duration) for s in playlist.segments],
                         [(3, "3.ts", 2.0), (4, "4.ts", 2.0)])

    def test_discontinuity_belongs_to_the_next_segment(self) -> None:
        """#EXT-X-DISCONTINUITY marks the segment that follows it, only that one."""
        playlist = parse_playlist(b"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-DISCONTINUITY-SEQUENCE:4\n"
                                  b"#EXTINF:2,\na.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:2,\nb.ts\n#EXTINF:2,\nc.ts\n")
        self.assertEqual([s.discontinuity for s in playlist.segments], [False, True, False])

    def test_endlist_and_missing_extinf(self) -> None:
        """#EXT-X-ENDLIST ends the playlist; a segment without #EXTINF has no duration; no media sequence means 0."""
        playlist = parse_playlist(b"#EXTM3U\nx.ts\n#EXT-X-ENDLIST\n")
        self.assertTrue(playlist.ended)
        self.assertEqual(playlist.segments, (MediaSegment(0, "x.ts", None, False),))
        self.assertIsNone(playlist.target_duration)

    def test_master_playlist_lists_variants(self) -> None:
        """A master playlist gives its variants' URIs in order and no segments."""
        playlist = parse_playlist(b'#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS="avc1.42c01e"\n'
                                  b"low/index.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=4000000\nhigh/index.m3u8\n")
        self.assertEqual((playlist.variants, playlist.segments), (("low/index.m3u8", "high/index.m3u8"), ()))

    def test_empty_live_playlist(self) -> None:
        """A live playlist with no segment yet is valid and empty."""
        playlist = parse_playlist(b"#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n")
        self.assertEqual((playlist.segments, playlist.newest), ((), None))

    def test_refusals(self) -> None:
        """Not a playlist, bad numbers, byte ranges, encrypted segments and oversized text are PlaylistErrors."""
        cases = [
            b"",
            b"<html>502</html>",
            b"\x47\x40\x00\x10" * 47,
            b"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:-1\n",
            b"#EXTM3U\n#EXT-X-TARGETDURATION:soon\n",
            b"#EXTM3U\n#EXTINF:nan,\na.ts\n",
            b"#EXTM3U\n#EXT-X-BYTERANGE:1000@0\na.ts\n",
            b'#EXTM3U\n#EXT-X-KEY:METHOD=AES-128,URI="k"\na.ts\n',
            b"#EXTM3U\n" + b"#" * MAX_PLAYLIST_BYTES,
        ]
        for data in cases:
            self.assertRaises(PlaylistError, parse_playlist, data)
        self.assertEqual(len(parse_playlist(b"#EXTM3U\n#EXT-X-KEY:METHOD=NONE\na.ts\n").segments), 1)


class ResolveTests(SynchronousTestCase):
    def test_relative_and_absolute_uris_land_on_the_engine(self) -> None:
        """Relative URIs resolve against the playlist URL; absolute ones are rebased onto the engine's address."""
        playlist = "http://127.0.0.1:6878/ace/m/ab/tok.m3u8"
        self.assertEqual(resolve("7.ts", playlist), "http://127.0.0.1:6878/ace/m/ab/7.ts")
        self.assertEqual(resolve("/ace/c/ab/7.ts", playlist), "http://127.0.0.1:6878/ace/c/ab/7.ts")
        self.assertEqual(resolve("http://localhost:6878/ace/c/ab/7.ts?x=1", playlist),
                         "http://127.0.0.1:6878/ace/c/ab/7.ts?x=1")
        self.assertEqual(resolve("//engine.example/ace/c/ab/7.ts", playlist), "http://127.0.0.1:6878/ace/c/ab/7.ts")
