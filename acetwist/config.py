# -*- test-case-name: tests.test_config -*-
"""
Typed settings for the proxy: one table of options, read from flags, then
C{ACETWIST_<NAME>} environment variables, then acexy's variables, then defaults.

Every option is validated when the process starts; a bad value is a usage
error there, never a crash later.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Dict, FrozenSet, List, Mapping, Optional, Set, Tuple
from urllib.parse import urlsplit

import attr

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmg]i?b?|b)?", re.I)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "ki": 1024, "kib": 1024,
               "m": 1000**2, "mb": 1000**2, "mi": 1024**2, "mib": 1024**2,
               "g": 1000**3, "gb": 1000**3, "gi": 1024**3, "gib": 1024**3}


class ConfigError(ValueError):
    """A setting's value is not acceptable."""


def parse_duration(text: str) -> float:
    """Seconds from C{"15"}, C{"1.5"}, C{"500ms"}, C{"15s"}, C{"1m"}, C{"1m30s"} or C{"1h"}."""
    text = text.strip().lower()
    try:
        value = float(text)
    except ValueError:
        pos, value = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            number, unit = float(match.group(1)), match.group(2)
            value += number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
            pos = match.end()
        if pos != len(text) or not text:
            raise ConfigError(f"{text!r} is not a duration (examples: 15, 15s, 500ms, 1m)")
    if not math.isfinite(value):
        raise ConfigError(f"{text!r} is not a finite duration")
    if value < 0:
        raise ConfigError(f"{text!r}: a duration cannot be negative")
    return value


def parse_size(text: str) -> int:
    """Bytes from C{"1048576"}, C{"64KiB"}, C{"16MiB"}, C{"16M"} or C{"1GB"}."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ConfigError(f"{text!r} is not a size (examples: 65536, 64KiB, 16MiB)")
    unit = (match.group(2) or "").lower()
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_engine_url(text: str) -> str:
    """An engine base URL C{http[s]://host[:port]}, without a trailing slash."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{text!r} is not an engine URL like http://127.0.0.1:6878")
    try:
        parts.port
    except ValueError as e:
        raise ConfigError(f"{text!r}: {e}") from None
    if parts.path not in ("", "/") or parts.query:
        raise ConfigError(f"{text!r}: give only scheme://host:port for the engine")
    return f"{parts.scheme}://{parts.netloc}"


def parse_engine_urls(text: str) -> Tuple[str, ...]:
    """One or more engine URLs, comma-separated (a repeated C{--engine} arrives joined by commas)."""
    urls = tuple(parse_engine_url(part) for part in text.split(",") if part.strip())
    if not urls:
        raise ConfigError(f"{text!r}: give at least one engine URL like http://127.0.0.1:6878")
    if len(set(urls)) != len(urls):
        raise ConfigError(f"{text!r}: an engine is listed twice")
    return urls


def parse_orchestrator_url(text: str) -> str:
    """The orchestrator's base URL C{http[s]://host[:port][/path]}, without a trailing slash."""
    parts = urlsplit(text.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{text!r} is not an orchestrator URL like http://orchestrator:8000")
    try:
        parts.port
    except ValueError as e:
        raise ConfigError(f"{text!r}: {e}") from None
    if parts.query or parts.fragment:
        raise ConfigError(f"{text!r}: give only scheme://host:port[/path] for the orchestrator")
    return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"


def parse_redis_url(text: str) -> str:
    """C{redis://[[user]:password@]host[:port][/db]}, checked by the Redis coordinator's own parser."""
    from acetwist.coord.settings import parse_redis_url as parse

    try:
        parse(text)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return text.strip()


def parse_prefix(text: str) -> str:
    """A Redis key prefix, checked by the coordinator's own rule."""
    from acetwist.coord.settings import check_prefix

    try:
        check_prefix(text)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return text


def parse_listen(text: str) -> str:
    """
    A Twisted endpoint string (C{tcp:8080}, C{tcp:8080:interface=127.0.0.1},
    C{unix:/run/acetwist.sock}, C{systemd:...}), or acexy's C{:8080} /
    C{host:port} form, which is translated.
    """
    text = text.strip()
    kind = text.split(":", 1)[0]
    if kind in ("tcp", "tcp6", "unix", "ssl", "systemd"):
        return text
    match = re.fullmatch(r"(\[[0-9a-fA-F:]+\]|[\w.\-]*):(\d+)", text)
    if match:
        host, port = match.group(1).strip("[]"), int(match.group(2))
        if not 0 <= port <= 65535:
            raise ConfigError(f"{text!r}: port out of range")
        if host in ("", "0.0.0.0"):
            return f"tcp:{port}"
        return f"tcp:{port}:interface={host.replace(':', chr(92) + ':')}"
    raise ConfigError(f"{text!r} is not an endpoint (examples: tcp:8080, tcp:8080:interface=127.0.0.1, :8080)")


#: endpoint kinds whose Twisted parser takes C{backlog=} (a systemd socket is already listening)
_BACKLOG_KINDS = ("tcp", "tcp6", "unix", "ssl")


def with_backlog(endpoint: str, backlog: int) -> str:
    """C{endpoint} with C{:backlog=N} added, unless it already has one or its kind takes none."""
    kind = endpoint.split(":", 1)[0]
    if kind not in _BACKLOG_KINDS or re.search(r"(?<!\\):backlog=", endpoint):
        return endpoint
    return f"{endpoint}:backlog={backlog}"


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
    OptionSpec("client-max-lag", "16MiB", parse_size,
               "A player further behind than this skips to the newest keyframe (counted)."),
    OptionSpec("client-stall-timeout", "20", _positive(parse_duration),
               "A player that accepts no data for this long is disconnected."),
    OptionSpec("write-batch", "256KiB", parse_size, "Largest single write to a player's socket."),
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


@attr.s(frozen=True, auto_attribs=True, kw_only=True)
class Settings:
    """The proxy's validated settings (see L{OPTIONS} for meanings)."""

    listen: str
    #: the first engine URL (what a single-engine setup uses)
    engine: str
    #: every static engine URL, C{engine} first; empty when C{orchestrator} is set
    engines: Tuple[str, ...]
    orchestrator: Optional[str]
    orchestrator_key: Optional[str]
    orchestrator_interval: float
    #: None when not given: the orchestrator's max_streams_per_engine applies, else no limit
    engine_max_streams: Optional[int]
    engine_check_interval: float
    failover_timeout: float
    redis: Optional[str]
    redis_prefix: str
    worker_id: Optional[str]
    lease: float
    heartbeat: float
    grace: float
    failed_content_ttl: float
    token: Optional[str]
    admin_token: Optional[str]
    json_timeout: float
    connect_timeout: float
    first_byte_timeout: float
    idle_timeout: float
    stop_timeout: float
    reconnect_attempts: int
    session_attempts: int
    backoff: float
    recovery_first_byte_timeout: float
    ring_seconds: float
    ring_bytes: int
    block_size: int
    block_flush: float
    client_max_lag: int
    client_stall_timeout: float
    write_batch: int
    max_channels: int
    max_clients: int
    header_timeout: float
    max_connections: int
    max_connections_per_ip: int
    backlog: int

    @property
    def operator_token(self) -> Optional[str]:
        """The token /status and /metrics require: C{--admin-token}, else C{--token}, else none."""
        return self.admin_token or self.token

    @classmethod
    def defaults(cls, **overrides: object) -> "Settings":
        """Defaults with typed overrides (for tests and embedding)."""
        return resolve({}, {}).replace(**overrides)

    def replace(self, **changes: Any) -> "Settings":
        """
        A copy with C{changes}; C{engine} and C{engines} stay consistent (a
        new C{engine} alone becomes the only static engine; new C{engines}
        give C{engine} their first).
        """
        if "engine" in changes and "engines" not in changes:
            changes["engines"] = (changes["engine"],)
        elif changes.get("engines") and "engine" not in changes:
            changes["engine"] = changes["engines"][0]
        return attr.evolve(self, **changes)


def _acexy_engine(environ: Mapping[str, str]) -> Optional[str]:
    """acexy's engine location: ACEXY_SCHEME://ACEXY_HOST:ACEXY_PORT."""
    keys = ("ACEXY_SCHEME", "ACEXY_HOST", "ACEXY_PORT")
    if not any(environ.get(k) for k in keys):
        return None
    scheme = environ.get("ACEXY_SCHEME") or "http"
    host = environ.get("ACEXY_HOST") or "localhost"
    port = environ.get("ACEXY_PORT") or "6878"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 address
    return f"{scheme}://{host}:{port}"


def resolve(flags: Mapping[str, Optional[str]], environ: Mapping[str, str]) -> Settings:
    """
    Build L{Settings}: a flag wins over C{ACETWIST_*}, which wins over acexy's
    variables, which win over the default. Raises L{ConfigError} naming the
    option and where its bad value came from.
    """
    values: Dict[str, object] = {}
    given: Set[str] = set()
    for spec in OPTIONS:
        raw: Optional[str] = flags.get(spec.name)
        source = f"--{spec.name}"
        if raw is None and environ.get(env_name(spec.name)):
            raw, source = environ[env_name(spec.name)], env_name(spec.name)
        if raw is None:
            for alias in spec.aliases:
                if environ.get(alias):
                    raw, source = environ[alias], alias
                    break
        if raw is None and spec.name == "engine":
            raw, source = _acexy_engine(environ), "ACEXY_SCHEME/ACEXY_HOST/ACEXY_PORT"
        if raw is None:
            raw, source = spec.default, "default"
        else:
            given.add(spec.name if source != "ACEXY_SCHEME/ACEXY_HOST/ACEXY_PORT" else "acexy-engine")
        if raw is None:
            values[spec.name.replace("-", "_")] = None
            continue
        try:
            values[spec.name.replace("-", "_")] = spec.parse(raw)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
    engines = values.pop("engine")
    assert isinstance(engines, tuple)
    if values.get("orchestrator") is not None:
        if "engine" in given:
            raise ConfigError("give the engines with --engine or with --orchestrator, not both")
        engines = ()  # acexy's ACEXY_HOST/PORT/SCHEME are ignored: the orchestrator lists the engines
    values["engine"] = engines[0] if engines else _default_engine()
    values["engines"] = engines
    settings = Settings(**values)  # type: ignore[arg-type]
    _check_together(settings, frozenset(given))
    return settings


def _default_engine() -> str:
    default = next(spec.default for spec in OPTIONS if spec.name == "engine")
    assert default is not None
    return parse_engine_url(default)


def _check_together(settings: "Settings", given: FrozenSet[str] = frozenset()) -> None:
    """Limits between options: values that parse alone but would break the proxy later."""
    problems = []
    if settings.orchestrator is None:
        for name in ("orchestrator-key", "orchestrator-interval"):
            if name in given:
                problems.append(f"--{name} needs --orchestrator")
    if settings.lease < 1:
        problems.append("--lease must be at least 1 s (renewals happen every third of it)")
    if settings.heartbeat < 0.1 or settings.heartbeat > 10:
        problems.append("--heartbeat must be between 0.1 and 10 s (player records expire after 30 s)")
    if settings.block_flush < 0.001:
        problems.append("--block-flush must be at least 1ms")
    if settings.block_size < 188:
        problems.append("--block-size must hold at least one 188-byte packet")
    if settings.ring_bytes < 4 * settings.block_size:
        problems.append("--ring-bytes must hold at least four blocks (4 x --block-size)")
    if settings.client_max_lag < settings.block_size:
        problems.append("--client-max-lag must be at least one block (--block-size)")
    if settings.write_batch < 188:
        problems.append("--write-batch must hold at least one packet")
    if problems:
        raise ConfigError("; ".join(problems))
