# -*- test-case-name: tests.test_config,tests.test_engine_pool_config -*-
"""
The proxy's option table: each option's name, default, parser, help and
acexy alias (L{acetwist.config.settings.resolve} reads it; the twistd
Options in L{acetwist.tap} are built from it).
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import attr

from acetwist.config.values import (
    ConfigError, parse_duration, parse_engine_urls, parse_listen, parse_orchestrator_url, parse_prefix,
    parse_redis_url, parse_size)


def _positive(parser: Callable[[str], float]) -> Callable[[str], float]:
    def check(text: str) -> float:
        value = parser(text)
        if value <= 0:
            raise ConfigError(f"{text!r} must be greater than zero")
        return value

    return check


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise ConfigError(f"{text!r} cannot be negative")
    return value


def _positive_count(text: str) -> int:
    value = _count(text)
    if value == 0:
        raise ConfigError(f"{text!r} must be greater than zero")
    return value


def _text(text: str) -> str:
    return text


def _switch(text: str) -> bool:
    value = text.strip().lower()
    if value in ("on", "yes", "true", "1"):
        return True
    if value in ("off", "no", "false", "0"):
        return False
    raise ConfigError(f"{text!r} is not on or off")


@attr.s(frozen=True, auto_attribs=True)
class OptionSpec:
    name: str
    default: Optional[str]
    parse: Callable[[str], object]
    help: str
    aliases: Tuple[str, ...] = ()
    #: the flag may be given more than once; its values are joined with commas
    repeatable: bool = False


#: The proxy's options. C{name} is the flag (C{--name}), the settings
#: attribute (dashes as underscores) and the environment variable
#: C{ACETWIST_NAME}.
OPTIONS: List[OptionSpec] = [
    OptionSpec("listen", "tcp:8080", parse_listen, "Endpoint to listen on (Twisted endpoint string, or acexy's :8080).",
               ("ACEXY_LISTEN_ADDR",)),
    OptionSpec("engine", "http://127.0.0.1:6878", parse_engine_urls,
               "AceStream engine base URL; repeat the flag or separate URLs with commas for several engines"
               " (not together with --orchestrator).", repeatable=True),
    OptionSpec("orchestrator", None, parse_orchestrator_url,
               "acestream-orchestrator base URL (http://orchestrator:8000): the engines come from its list"
               " instead of --engine, and it hears stream_started / stream_ended events."),
    OptionSpec("orchestrator-key", None, _text, "API key sent to the orchestrator (X-API-Key and Bearer)."),
    OptionSpec("orchestrator-interval", "5", _positive(parse_duration),
               "How often the orchestrator's engine list is read."),
    OptionSpec("engine-max-streams", None, _count,
               "Channels per engine (0: no limit). Default: the orchestrator's max_streams_per_engine, else 0."),
    OptionSpec("engine-check-interval", "10", _positive(parse_duration),
               "How often every engine is probed (get_version); two failed probes in a row make it unhealthy."),
    OptionSpec("failover-timeout", "60", parse_duration,
               "A channel whose engine failed looks this long for another eligible engine before giving up."),
    OptionSpec("redis", None, parse_redis_url,
               "Redis URL (redis://host:port/db) shared by every acetwist worker; omit for a single process."),
    OptionSpec("redis-prefix", "acetwist", parse_prefix, "Prefix of every Redis key acetwist writes."),
    OptionSpec("worker-id", None, _text, "This worker's name in the cluster (default: hostname:pid)."),
    OptionSpec("lease", "3", _positive(parse_duration),
               "Ownership lease of a channel in Redis; a dead owner is replaced after about this long."),
    OptionSpec("heartbeat", "2", _positive(parse_duration),
               "How often players' records and channel metadata are refreshed in the cluster."),
    OptionSpec("grace", "15", parse_duration, "Seconds a channel lingers after its last player leaves."),
    OptionSpec("failed-content-ttl", "10", parse_duration,
               "A content the engine refused (failed to load content) is answered 502 from memory for this long,"
               " without an engine call (0: ask the engine every time)."),
    OptionSpec("token", None, _text, "Require ?token=SECRET (or 'Authorization: Bearer SECRET') on every request."),
    OptionSpec("admin-token", None, _text,
               "Operator token for /status and /metrics, which then show engine session URLs in full "
               "(default: --token; with neither, /status is open and those URLs are redacted)."),
    OptionSpec("json-timeout", "10", _positive(parse_duration),
               "Deadline for the engine's JSON reply to getstream.", ("ACEXY_NO_RESPONSE_TIMEOUT",)),
    OptionSpec("connect-timeout", "5", _positive(parse_duration), "TCP connect timeout towards the engine."),
    OptionSpec("first-byte-timeout", "60", _positive(parse_duration),
               "Deadline for the first stream byte after the engine session opens (covers P2P prebuffering)."),
    OptionSpec("idle-timeout", "15", _positive(parse_duration),
               "No upstream bytes for this long while streaming starts recovery.", ("ACEXY_EMPTY_TIMEOUT",)),
    OptionSpec("stop-timeout", "5", _positive(parse_duration), "Deadline for the engine's reply to stop."),
    OptionSpec("reconnect-attempts", "3", _count, "Recovery: re-reads of the same playback URL before a new session."),
    OptionSpec("session-attempts", "2", _count, "Recovery: new engine sessions tried after the re-reads fail."),
    OptionSpec("backoff", "1", _positive(parse_duration), "Recovery: first backoff delay, doubled per attempt (max 8 s)."),
    OptionSpec("recovery-first-byte-timeout", "20", _positive(parse_duration),
               "Recovery: deadline for data on each recovery attempt."),
    OptionSpec("ring-seconds", "10", _positive(parse_duration), "Seconds of stream history kept per channel."),
    OptionSpec("ring-bytes", "64MiB", parse_size, "Upper bound of the history kept per channel."),
    OptionSpec("block-size", "64KiB", parse_size,
               "Size of the blocks the stream is cut into (whole packets); larger blocks cost less CPU per byte."),
    OptionSpec("block-flush", "50ms", _positive(parse_duration),
               "A partial block is sent after this long, so low bitrates are not delayed."),
    OptionSpec("join-backlog", "5", parse_duration,
               "A new player starts at the newest keyframe at least this far back in the ring and gets that"
               " backlog at link speed, so its decoder starts at once; it then plays that much behind live"
               " (0: start at the newest keyframe). Less than --ring-seconds; the default is at most half of it."),
    OptionSpec("client-max-lag", "16MiB", parse_size,
               "A player further behind than this (on top of the join backlog it is catching up on) skips to the"
               " newest keyframe (counted)."),
    OptionSpec("client-stall-timeout", "20", _positive(parse_duration),
               "A player that accepts no data for this long is disconnected."),
    OptionSpec("write-batch", "256KiB", parse_size, "Largest single write to a player's socket."),
    OptionSpec("hls-segment", "2", _positive(parse_duration),
               "HLS: target segment length; a segment ends at the first keyframe at or after it."),
    OptionSpec("hls-window", "6", _positive_count, "HLS: segments listed in the live playlist."),
    OptionSpec("hls-idle", None, _positive(parse_duration),
               "HLS: a viewer without a request for this long has left (default: 3 x the target duration + 5 s)."),
    OptionSpec("write-delay", "100ms", parse_duration,
               "A player at the live edge gets its data in writes at most this far apart (or of half"
               " --write-batch), not block by block: fewer, larger writes (0: every block at once)."),
    OptionSpec("direct-send", "on", _switch,
               "on: a player's data goes straight to its socket (one sendmsg, no copy) whenever Twisted has"
               " nothing buffered for it; off: every write goes through Twisted's transport."),
    OptionSpec("max-channels", "0", _count, "Most channels at once (0: no limit); more get 503."),
    OptionSpec("max-clients", "0", _count, "Most players at once (0: no limit); more get 503."),
    OptionSpec("header-timeout", "10", _positive(parse_duration),
               "Deadline for receiving a whole request head (request line and headers); then the connection is closed."),
    OptionSpec("max-connections", "1024", _count,
               "Most open HTTP connections (0: no limit); more are closed at once."),
    OptionSpec("max-connections-per-ip", "64", _count,
               "Most open HTTP connections from one client address (0: no limit); more are closed at once. "
               "Behind a reverse proxy every player shares its address: use 0 there."),
    OptionSpec("backlog", "1024", _positive_count,
               "Listen backlog (queued connections not yet accepted), unless --listen gives backlog=."),
]


def env_name(option: str) -> str:
    return "ACETWIST_" + option.upper().replace("-", "_")
