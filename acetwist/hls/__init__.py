"""
HLS output cut from a channel's own TS ring, so one engine session serves TS
players and HLS viewers together.

- L{acetwist.hls.timing}: a keyframe block's presentation time (PTS, else PCR).
- L{acetwist.hls.segmenter}: L{Segmenter}, whole GOPs into numbered segments
  (the owner decides, every follower obeys the owner's marks).
- L{acetwist.hls.playlist}: the live media playlist.
- L{acetwist.hls.viewer}: L{HlsViewer}, an HLS viewer as one of the channel's players.
- L{acetwist.hls.frontend}: the playlist and segment requests.
"""
