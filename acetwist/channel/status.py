"""What /status shows of a channel, and the bitrate of a ring."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict

from acetwist.ring import TSRing

if TYPE_CHECKING:
    from acetwist.channel.channel import Channel


def channel_status(channel: "Channel") -> Dict[str, Any]:
    """Every field of a channel in /status: its key and parameters, state and role, session URLs, owner and epoch, counters, ring and players."""
    now = channel.clock.seconds()
    session = channel.session
    lease = channel.lease
    return {
        "key": channel.key,
        "parameters": dict(channel.selector.extra),
        "state": channel.state,
        "engine": channel.engine_url,
        "infohash": session.infohash if session else None,
        "playback_session_id": session.playback_session_id if session else None,
        "playback_url": session.playback_url if session else None,
        "stat_url": session.stat_url if session else None,
        "command_url": session.command_url if session else None,
        "session_format": session.format if session else None,
        "role": channel.role,
        "owner": lease.owner if lease else None,
        "epoch": lease.epoch if lease else channel.follow_epoch,
        "created_at": channel.created_at,
        "uptime": round(now - channel.created_at, 3),
        "bytes_in": channel.bytes_in,
        "bytes_out": channel.bytes_out_total(),
        "bitrate": channel.bitrate(),
        "recoveries": channel.recoveries,
        "sessions_opened": channel.sessions_opened,
        "last_end_reason": channel.last_end_reason,
        "ring": {"blocks": len(channel.ring), "bytes": channel.ring.total_bytes, "resyncs": channel.ring.resyncs},
        "hls": {"segments": len(channel.hls.segments), "newest": channel.hls.newest,
                "target_duration": channel.hls.target_duration, "dropped": channel.hls.dropped},
        "clients": channel.roster.status(),
        "error": channel.error.message if channel.error else None,
    }


def stream_metadata(channel: "Channel") -> Dict[str, Any]:
    """What an owner shares of its stream with the cluster (every worker's /status shows it)."""
    lease = channel.lease
    assert lease is not None
    session = channel.session
    return {
        "state": channel.state,
        "engine": channel.engine_url or "",
        "owner": lease.owner,
        "epoch": lease.epoch,
        "bitrate": channel.bitrate(),
        "started": channel.created_at,
        "bytes_in": channel.bytes_in,
        "infohash": session.infohash if session else "",
    }


def ring_bitrate(ring: TSRing) -> int:
    """Bits per second over the ring's history (0 until it spans some time)."""
    first = ring.get(ring.first_seq)
    newest = ring.get(ring.next_seq - 1)
    if first is None or newest is None or newest.created <= first.created:
        return 0
    return int(ring.total_bytes * 8 / (newest.created - first.created))
