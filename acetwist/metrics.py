# -*- test-case-name: tests.test_web -*-
"""Prometheus metrics, collected from the live registry when scraped (no per-block bookkeeping)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Iterator, Tuple

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

if TYPE_CHECKING:
    from acetwist.web import ProxyApp


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
        yield CounterMetricFamily("acetwist_engine_json_calls", "Engine getstream calls", value=app.engine.json_calls)
        yield CounterMetricFamily("acetwist_engine_stop_calls", "Engine stop calls", value=app.engine.stop_calls)
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
