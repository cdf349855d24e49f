# -*- test-case-name: tests.test_config,tests.test_proxy_lifecycle -*-
"""twistd glue for C{acestream-proxy}: options and the service tree. The only twistd-aware module."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional

from twisted.application.service import MultiService
from twisted.logger import Logger
from twisted.python import usage

from acetwist.config import OPTIONS, ConfigError, OptionSpec, Settings, env_name, resolve, with_backlog
from acetwist.tls import forgo_tls, tls_reason

if TYPE_CHECKING:
    from acetwist.reactor import IReactor

log = Logger()


def _help(spec: OptionSpec) -> str:
    default = f", default {spec.default}" if spec.default is not None else ""
    aliases = "".join(f", {a}" for a in spec.aliases)
    return f"{spec.help} [env {env_name(spec.name)}{aliases}{default}]"


class Options(usage.Options):
    synopsis = "[--listen tcp:8080] [--engine http://127.0.0.1:6878] [--redis redis://127.0.0.1:6379/0] [options]"
    longdesc = (
        "Serve AceStream channels to many players at once: one engine session per channel, "
        "read once and pushed to every player. Players ask for /ace/getstream?id=<content id> "
        "exactly as they would ask the engine or acexy. Every option can also be set as "
        "ACETWIST_<OPTION> in the environment (flags win); acexy's ACEXY_LISTEN_ADDR, ACEXY_HOST, "
        "ACEXY_PORT, ACEXY_SCHEME, ACEXY_EMPTY_TIMEOUT and ACEXY_NO_RESPONSE_TIMEOUT are honoured."
    )
    optParameters = [[spec.name, None, None, _help(spec)] for spec in OPTIONS if not spec.repeatable]

    def __init__(self, environ: Optional[Mapping[str, str]] = None) -> None:
        super().__init__()
        self.environ = os.environ if environ is None else environ
        self.settings: Optional[Settings] = None
        self.repeated: Dict[str, List[str]] = {spec.name: [] for spec in OPTIONS if spec.repeatable}

    def opt_engine(self, value: str) -> None:
        self.repeated["engine"].append(value)

    opt_engine.__doc__ = _help(next(spec for spec in OPTIONS if spec.name == "engine"))

    def postOptions(self) -> None:
        flags = {spec.name: (",".join(self.repeated[spec.name]) or None) if spec.repeatable else self[spec.name]
                 for spec in OPTIONS}
        try:
            self.settings = resolve(flags, self.environ)
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None


assert all(hasattr(Options, "opt_" + spec.name.replace("-", "_")) for spec in OPTIONS if spec.repeatable), \
    "a repeatable option needs its opt_ method"


def makeService(options: Options, reactor: Optional[IReactor] = None) -> MultiService:
    settings = options.settings
    assert settings is not None
    # Before the reactor and the endpoints are imported: they load pyOpenSSL when they can (acetwist.tls).
    tls = tls_reason(settings.listen, (*settings.engines, settings.orchestrator))
    if tls is not None:
        log.info("TLS support loaded for {reason}", reason=tls)
    elif forgo_tls():
        log.info("TLS support not loaded: no https URL or ssl: listener is configured")
    if reactor is None:
        from twisted.internet import reactor as default_reactor

        reactor = default_reactor
    from twisted.application import strports

    from acetwist.service import ProxyService

    root = MultiService()
    proxy = ProxyService(settings, reactor)
    proxy.setServiceParent(root)
    site = proxy.app.site(reactor)
    # strports.service fails start-up (twistd exits non-zero) when the port is busy.
    listen = with_backlog(settings.listen, settings.backlog)
    strports.service(listen, site, reactor=reactor).setServiceParent(root)
    return root
