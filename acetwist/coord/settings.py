"""
Settings of the coordinators. This module imports nothing from txredisapi
(which binds the global reactor at import time), so it is safe to import
before twistd has chosen a reactor.
"""

from __future__ import annotations

from typing import Any, Optional, TypedDict
from urllib.parse import unquote, urlsplit

import attr


def _positive(instance: Any, attribute: "attr.Attribute[Any]", value: Any) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, not {value!r}")


def check_prefix(value: str) -> None:
    """A key prefix is non-empty, without blanks or glob characters (it is used in SCAN patterns)."""
    if not value or any(c in value for c in " \t\r\n*?[]"):
        raise ValueError(f"prefix must be non-empty, without blanks or glob characters, not {value!r}")


def _prefix(instance: Any, attribute: "attr.Attribute[Any]", value: str) -> None:
    check_prefix(value)


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class CoordSettings:
    """
    Timings shared by every coordinator. Durations are seconds, except
    C{lease_ms}.

    @ivar lease_ms: how long an ownership lease lives without a renew; a dead
        owner is replaced after about this long. The owner should renew every
        third of it.
    @ivar client_ttl: a player record disappears this long after its last
        refresh from real delivery (this is how a dead worker's players age
        out of the cluster-wide count).
    @ivar progress_interval: C{client_progress} writes a player's record at most
        this often (more frequent calls are absorbed locally).
    @ivar worker_ttl: a worker disappears from the cluster this long after its
        last heartbeat.
    @ivar heartbeat_interval: seconds between worker heartbeats.
    @ivar stream_ttl: a stream's metadata and index entry live this long after
        the last C{update_stream}, C{claim} or C{renew}.
    @ivar mirror_ttl: the block mirror of a stream lives this long after its
        last publish.
    @ivar mirror_maxlen: about this many blocks are kept in a stream's mirror.
    @ivar alias_ttl: an alias (two stream keys the engine said are one
        stream, as C{id:X} and C{infohash:Y}) is kept this long after it was
        last learned.
    """

    lease_ms: int = attr.ib(default=5000, validator=_positive)
    client_ttl: float = attr.ib(default=30.0, validator=_positive)
    progress_interval: float = attr.ib(default=5.0, validator=_positive)
    worker_ttl: float = attr.ib(default=15.0, validator=_positive)
    heartbeat_interval: float = attr.ib(default=5.0, validator=_positive)
    stream_ttl: float = attr.ib(default=60.0, validator=_positive)
    mirror_ttl: float = attr.ib(default=30.0, validator=_positive)
    mirror_maxlen: int = attr.ib(default=200, validator=_positive)
    alias_ttl: float = attr.ib(default=86400.0, validator=_positive)

    @property
    def lease(self) -> float:
        """The lease in seconds."""
        return self.lease_ms / 1000.0

    @property
    def reclaim_margin(self) -> float:
        """
        Seconds a live owner may need, beyond one renew interval, to claim its
        stream again after its lease vanished. A follower takes over only
        after seeing no owner for longer than C{lease / 3 +} this. In memory
        a lease never vanishes behind its owner's back, so a small constant.
        """
        return 0.5


class HeartbeatTimings(TypedDict):
    heartbeat_interval: float
    progress_interval: float
    worker_ttl: float
    client_ttl: float


def heartbeat_timings(heartbeat: float) -> HeartbeatTimings:
    """
    The timings of settings refreshed every C{heartbeat} seconds (worker
    heartbeats and player-record writes), with the TTLs kept well above the
    refresh: workers live C{max(15, 3 x heartbeat)} and player records
    C{max(30, 4 x heartbeat)} after their last refresh (the defaults up to a
    heartbeat of 5 s and 7.5 s). For C{CoordSettings(**...)} and
    C{RedisSettings.from_url(url, **...)}.
    """
    defaults = CoordSettings()
    return HeartbeatTimings(
        heartbeat_interval=heartbeat,
        progress_interval=heartbeat,
        worker_ttl=max(defaults.worker_ttl, 3 * heartbeat),
        client_ttl=max(defaults.client_ttl, 4 * heartbeat),
    )


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class RedisSettings(CoordSettings):
    """
    Where Redis is and how acetwist uses it (see C{docs/redis.md}).

    @ivar url: C{redis://[[user]:password@]host[:port][/db]}. A non-zero db is
        selected by acetwist itself on every (re)connection, not through
        txredisapi's C{dbid} (txredisapi issue #146).
    @ivar prefix: every key starts with C{<prefix>:}; several deployments may
        share one Redis with different prefixes.
    @ivar command_timeout: every command fails after this long; a connection
        whose command timed out is dropped and re-established.
    @ivar max_in_flight: fire-and-forget writes (mirror publishes, heartbeats,
        player records, metadata) beyond this many unanswered ones are skipped
        and counted, never queued.
    @ivar poolsize: connections for ordinary commands (each follower has its
        own extra connection for blocking reads).
    @ivar follow_block: seconds a follower's C{XREAD BLOCK} waits for new
        entries before asking again.
    @ivar follow_count: most entries a follower reads per C{XREAD}.
    @ivar connect_timeout: TCP connect timeout.
    @ivar reconnect_max_delay: longest wait between reconnection attempts.
    @ivar epoch_ttl: the per-stream epoch counter lives this long after the
        last claim or renew.
    """

    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = attr.ib(default="acetwist", validator=_prefix)
    command_timeout: float = attr.ib(default=2.0, validator=_positive)
    max_in_flight: int = attr.ib(default=128, validator=_positive)
    poolsize: int = attr.ib(default=2, validator=_positive)
    follow_block: float = attr.ib(default=2.0, validator=_positive)
    follow_count: int = attr.ib(default=32, validator=_positive)
    connect_timeout: float = attr.ib(default=3.0, validator=_positive)
    reconnect_max_delay: float = attr.ib(default=2.0, validator=_positive)
    epoch_ttl: float = attr.ib(default=86400.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        parse_redis_url(self.url)

    @property
    def reclaim_margin(self) -> float:
        """
        A live owner whose lease vanished (Redis came back empty) claims again
        at its next renew after its link reconnected: at most
        C{reconnect_max_delay} (the reconnection backoff never exceeds it)
        plus half a second for the connection and the claim itself.
        """
        return self.reconnect_max_delay + 0.5

    @property
    def settle_after_reconnect(self) -> float:
        """
        Seconds after this worker's connection to the cluster came back during
        which a player count is not trusted: every worker has had time to
        reconnect (C{reclaim_margin}) and to rewrite the records of players
        that receive data (a progress interval, plus one heartbeat by which
        the progress call may be late).
        """
        return self.reclaim_margin + self.progress_interval + self.heartbeat_interval

    @property
    def data_set_ttl(self) -> float:
        """
        TTL of the cluster's data-set marker, refreshed by every heartbeat: it
        expires as soon as any refreshed player record could have expired
        because nobody reached the cluster (records are rewritten at least
        every C{progress_interval + heartbeat_interval}), and never sooner
        than two heartbeats.
        """
        return max(self.client_ttl - self.progress_interval - self.heartbeat_interval,
                   2 * self.heartbeat_interval)

    @classmethod
    def from_url(cls, url: str, **kw: Any) -> "RedisSettings":
        """Settings for C{url}; other settings from keywords, C{None} meaning the default."""
        return cls(url=url, **{k: v for k, v in kw.items() if v is not None})

    @property
    def host(self) -> str:
        return parse_redis_url(self.url)[0]

    @property
    def port(self) -> int:
        return parse_redis_url(self.url)[1]

    @property
    def db(self) -> int:
        return parse_redis_url(self.url)[2]

    @property
    def username(self) -> Optional[str]:
        return parse_redis_url(self.url)[3]

    @property
    def password(self) -> Optional[str]:
        return parse_redis_url(self.url)[4]


def parse_redis_url(url: str) -> "tuple[str, int, int, Optional[str], Optional[str]]":
    """
    C{redis://[[user]:password@]host[:port][/db]} to C{(host, port, db,
    username, password)}. Raises C{ValueError} for anything else (TLS
    C{rediss://} and unix sockets are not supported).
    """
    parts = urlsplit(url.strip())
    if parts.scheme != "redis" or not parts.hostname:
        raise ValueError(f"{url!r} is not a Redis URL like redis://127.0.0.1:6379/0")
    try:
        port = parts.port or 6379
    except ValueError as e:
        raise ValueError(f"{url!r}: {e}") from None
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"{url!r}: the database must be a number, as in redis://host:6379/0")
    if parts.query or parts.fragment:
        raise ValueError(f"{url!r}: query parameters are not supported")
    db = int(path) if path else 0
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return parts.hostname, port, db, username, password
