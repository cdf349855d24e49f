# -*- test-case-name: tests.test_config,tests.test_engine_pool_config -*-
"""
L{Settings}, the proxy's validated settings, and L{resolve}: each option of
L{OPTIONS} from its flag, then C{ACETWIST_<NAME>}, then acexy's variables,
then its default; then the limits between options.
"""

from __future__ import annotations

import math
from typing import Any, Dict, FrozenSet, Mapping, Optional, Set, Tuple

import attr

from acetwist.config.options import OPTIONS, env_name
from acetwist.config.values import ConfigError, parse_engine_url


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
    join_backlog: float
    client_max_lag: int
    client_stall_timeout: float
    write_batch: int
    hls_segment: float
    hls_window: int
    #: None when not given: see L{hls_idle_timeout}
    hls_idle: Optional[float]
    write_delay: float
    direct_send: bool
    max_channels: int
    max_clients: int
    header_timeout: float
    max_connections: int
    max_connections_per_ip: int
    backlog: int

    @property
    def hls_idle_timeout(self) -> float:
        """Seconds without a request after which an HLS viewer has left."""
        if self.hls_idle is not None:
            return self.hls_idle
        return 3 * math.ceil(self.hls_segment) + 5.0

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
    if "join-backlog" not in given:
        # the default adapts to a short ring rather than refusing a configuration that worked before it
        values["join_backlog"] = min(_float(values["join_backlog"]), _float(values["ring_seconds"]) / 2)
    settings = Settings(**values)  # type: ignore[arg-type]
    _check_together(settings, frozenset(given))
    return settings


def _float(value: object) -> float:
    assert isinstance(value, float)
    return value


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
    if settings.join_backlog >= settings.ring_seconds:
        problems.append(
            f"--join-backlog ({settings.join_backlog:g} s) must be less than --ring-seconds"
            f" ({settings.ring_seconds:g} s): the ring holds the backlog and the keyframe before it"
            " (raise --ring-seconds, or lower --join-backlog; 0 turns it off)")
    if settings.client_max_lag < settings.block_size:
        problems.append("--client-max-lag must be at least one block (--block-size)")
    if not 0.5 <= settings.hls_segment <= 30:
        problems.append("--hls-segment must be between 0.5 and 30 s")
    if settings.hls_window > 100:
        problems.append("--hls-window must be at most 100 segments")
    if settings.write_batch < 188:
        problems.append("--write-batch must hold at least one packet")
    if problems:
        raise ConfigError("; ".join(problems))
