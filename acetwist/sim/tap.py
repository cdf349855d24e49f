# -*- test-case-name: tests.test_sim_tap -*-
"""
C{twistd acestream-engine-sim}: options and service maker.

Every option can also come from C{ACETWIST_SIM_<NAME>} (dashes as
underscores); a flag beats the variable, which beats the default. Faults
repeat: C{--fault cut:after_bytes=300000@channel-1 --fault down:mode=503}, or
C{ACETWIST_SIM_FAULT="gap:ms=2000;slow_json:ms=500"}.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional

from twisted.application import service
from twisted.python import usage

from acetwist.config import ConfigError
from acetwist.sim.config import OPTIONS, FaultSpec, SimConfig, parse_fault_specs
from acetwist.sim.faults import FAULTS, FaultError

if TYPE_CHECKING:
    from acetwist.reactor import IReactor

LONGDESC = """An AceStream engine look-alike for tests, benchmarks and demos: the
engine's HTTP API (/webui/api/service, /server/api, /ace/getstream,
/ace/manifest.m3u8, stat and command URLs), its session rules, valid MPEG-TS
paced at the configured bitrate, failure injection, and a control API under
/_sim on the same port. --engines N runs N independent engines on consecutive
ports from --listen's; --orchestrator-listen adds an acestream-orchestrator
look-alike that lists them (/api/v1/engines, /engines, /api/v1/proxy/config)
and records the stream events it receives, with its own control API under
/_sim/orchestrator. Faults (--fault NAME[:k=v,...][@CONTENT]): """ + ", ".join(sorted(FAULTS)) + """.
See docs/simulator.md."""


class Options(usage.Options):
    synopsis = ("[--listen tcp:6878] [--engines N] [--orchestrator-listen tcp:8000] [--bitrate 4M] [--prebuffer 2] "
                "[--burst 2] [--fault SPEC]...")
    longdesc = LONGDESC
    optParameters = [
        [o.name, None, None, f"{o.help} [env {o.env}, default {o.default}]"] for o in OPTIONS
    ]

    def __init__(self, environ: Optional[Mapping[str, str]] = None) -> None:
        super().__init__()
        self._environ = os.environ if environ is None else environ
        self["faults"] = []

    def opt_fault(self, spec: str) -> None:
        """Inject a fault at start on every engine, NAME[:key=value,...][@CONTENT]; repeatable [env ACETWIST_SIM_FAULT, ';'-separated]."""
        try:
            self["faults"].extend(parse_fault_specs(spec))
        except FaultError as e:
            raise usage.UsageError(f"--fault: {e}") from None

    def postOptions(self) -> None:
        values: Dict[str, Any] = {}
        for option in OPTIONS:
            raw = self[option.name]
            source = f"--{option.name}"
            if raw is None and option.env in self._environ:
                raw, source = self._environ[option.env], option.env
            if raw is None:
                continue
            try:
                values[option.key] = option.parse(raw)
            except (ConfigError, ValueError) as e:
                raise usage.UsageError(f"{source}: {e}") from None
        faults: List[FaultSpec] = list(self["faults"])
        if not faults and "ACETWIST_SIM_FAULT" in self._environ:
            try:
                faults = parse_fault_specs(self._environ["ACETWIST_SIM_FAULT"])
            except FaultError as e:
                raise usage.UsageError(f"ACETWIST_SIM_FAULT: {e}") from None
        if "contents" in values:
            values["contents"] = tuple(values["contents"])
        try:
            config = SimConfig(faults=tuple(faults), **values)
            config.check()
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        self["config"] = config


def makeService(options: Options, reactor: Optional[IReactor] = None) -> service.MultiService:
    """The simulator service for twistd (or for a test, with a reactor of its choice)."""
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    from acetwist.sim.service import SimulatorService

    return SimulatorService(options["config"], reactor)
