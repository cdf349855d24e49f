# -*- test-case-name: tests.test_web -*-
"""Prometheus metrics, collected from the live registry when scraped (no per-block bookkeeping)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Iterator, Tuple

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from acetwist.redact import redact_credentials

if TYPE_CHECKING:
    from acetwist.engines.api import IEnginePool
    from acetwist.web import ProxyApp

#: per-engine gauges: (metric name, help, the status field it shows)
_ENGINE_GAUGES = (
    ("acetwist_engine_healthy", "1 if the engine is healthy (probes, and the orchestrator when used)", "healthy"),
    ("acetwist_engine_load", "Streams counted on the engine (the largest count known, plus reservations)", "load"),
    ("acetwist_engine_capacity", "Streams the engine may take (0: no limit)", "capacity"),
    ("acetwist_engine_sessions", "This worker's running sessions on the engine", "sessions"),
    ("acetwist_engine_reservations", "This worker's reservations on the engine not yet committed", "reservations"),
    ("acetwist_engine_forwarded", "1 if the engine is forwarded (its P2P port is reachable)", "forwarded"),
    ("acetwist_engine_draining", "1 if the orchestrator drains the engine", "draining"),
    ("acetwist_engine_listed", "1 if the engine is in the current list (0: it left; no new streams)", "listed"),
)


def engine_metrics(pool: "IEnginePool") -> Iterator[Metric]:
    """Per-engine gauges (labelled by engine id, credentials removed) and whether the engine list is stale."""
    status = pool.status()
    for name, text, field in _ENGINE_GAUGES:
        gauge = GaugeMetricFamily(name, text, labels=["engine"])
        for engine in status:
            gauge.add_metric([redact_credentials(str(engine["id"]))], float(engine[field]))
        yield gauge
    source: Dict[str, Any] = pool.source_status()
    yield GaugeMetricFamily("acetwist_engine_list_stale",
                            "1 while the orchestrator cannot be read (the last list is used)",
                            value=1.0 if source.get("stale") else 0.0)


class _AppCollector:
    def __init__(self, app: ProxyApp) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        app = self.app
        channels = app.registry.channels()
        state = GaugeMetricFamily("acetwist_channels", "Channels by state", labels=["state"])
        counts: Dict[str, int] = {}
        for channel in channels:
            counts[channel.state] = counts.get(channel.state, 0) + 1
        for name, count in sorted(counts.items()):
            state.add_metric([name], count)
        yield state
        yield GaugeMetricFamily("acetwist_clients", "Connected players", value=sum(len(c.sinks) for c in channels))
        yield GaugeMetricFamily("acetwist_hls_viewers", "HLS viewers (one per address and user agent)",
                                value=app.hls.viewers())
        yield CounterMetricFamily("acetwist_hls_playlists", "HLS playlists served", value=app.hls.playlists)
        yield CounterMetricFamily("acetwist_hls_segments", "HLS segments served", value=app.hls.segments)
        bytes_in = CounterMetricFamily("acetwist_channel_bytes_in", "Bytes read from the engine", labels=["key"])
        bytes_out = CounterMetricFamily("acetwist_channel_bytes_out", "Bytes sent to players", labels=["key"])
        skips = CounterMetricFamily("acetwist_client_skips", "Keyframe skips of slow players", labels=["key"])
        recoveries = CounterMetricFamily("acetwist_channel_recoveries", "Upstream recoveries", labels=["key"])
        for channel in channels:
            bytes_in.add_metric([channel.key], channel.bytes_in)
            bytes_out.add_metric([channel.key], channel.bytes_out_total())
            skips.add_metric([channel.key], channel.skips_total())
            recoveries.add_metric([channel.key], channel.recoveries)
        yield from (bytes_in, bytes_out, skips, recoveries)
        yield CounterMetricFamily("acetwist_requests", "Player requests", value=app.requests)
        errors = CounterMetricFamily("acetwist_errors", "Error responses by status", labels=["status"])
        for status, count in sorted(app.errors.items()):
            errors.add_metric([str(status)], count)
        yield errors
        yield from engine_metrics(app.pool)
        yield CounterMetricFamily("acetwist_engine_json_calls", "Engine getstream calls", value=app.pool.json_calls)
        yield CounterMetricFamily("acetwist_engine_stop_calls", "Engine stop calls", value=app.pool.stop_calls)
        stats = getattr(app.coordinator, "stats", None)
        if stats is not None:
            coord = GaugeMetricFamily("acetwist_coordinator", "Coordinator counters and gauges", labels=["name"])
            for name, value in sorted(stats().items()):
                if isinstance(value, (int, float)):
                    coord.add_metric([name], value)
            yield coord


def render_metrics(app: ProxyApp) -> Tuple[bytes, str]:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_AppCollector(app))
    return generate_latest(registry), CONTENT_TYPE_LATEST
