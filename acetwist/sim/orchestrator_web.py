# -*- test-case-name: tests.test_sim_orchestrator -*-
"""
The orchestrator look-alike over HTTP: the API acetwist reads (the engine
lists, the proxy config, the stream events), its control API under
C{/_sim/orchestrator} on the same port, and L{OrchestratorServer}, which
assembles them with the listener that a C{refuse} outage closes.

    GET  /api/v1/engines                  {"engines": [...], "total": n} (or bare, or 404: see settings)
    GET  /engines                         [...] (or wrapped, or 404)
    GET  /api/v1/proxy/config             {"max_streams_per_engine": n, ...}
    POST /api/v1/events/stream_started    recorded; answers the stream record
    POST /api/v1/events/stream_ended      recorded; answers {"updated": bool, "stream": ...}
    GET  /health                          {"status": "ok"} (no key needed)

With a key configured, every API path but C{/health} needs C{X-API-Key: KEY}
(or C{Authorization: Bearer KEY}), else 401. During an outage every API path
answers 500, hangs until the outage ends, or finds the port closed; the
control API answers throughout (except while the port is closed).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional, Set, Tuple

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import resource, server

from acetwist.sim.control import MAX_BODY, BadRequest, Document, JsonControl, Route
from acetwist.sim.listening import ListenSwitch, Pause, Resume
from acetwist.sim.orchestrator import EVENT_KINDS, Orchestrator, OrchestratorError
from acetwist.sim.web import SimSite, abort_connection, reply_json

_LISTS = {"/api/v1/engines": ("v1_engines", "v1_engines_gets"), "/engines": ("legacy_engines", "legacy_engines_gets")}
_EVENTS = {f"{prefix}/events/{kind}": kind for prefix in ("/api/v1", "") for kind in EVENT_KINDS}
_API_PATHS = {*_LISTS, *_EVENTS, "/api/v1/proxy/config", "/health"}


class OrchestratorResource(resource.Resource):
    """The orchestrator's API; C{control} serves C{/_sim}."""

    isLeaf = True
    log = Logger()

    def __init__(self, orchestrator: Orchestrator, control: resource.Resource) -> None:
        super().__init__()
        self.orchestrator = orchestrator
        self.control = control
        #: API requests held by a C{hang} outage
        self.held: Set[server.Request] = set()
        orchestrator.add_outage_observer(self._outage_changed)

    def render(self, request: server.Request) -> bytes | int:
        path = request.path.decode("utf-8", "replace")
        if path == "/_sim" or path.startswith("/_sim/"):
            return self.control.render(request)
        self._serve(request)
        return server.NOT_DONE_YET

    def _serve(self, request: server.Request) -> None:
        orchestrator = self.orchestrator
        if orchestrator.outage is not None:
            orchestrator.counters["outage_answers"] += 1
            if orchestrator.outage == "500":
                reply_json(request, {"detail": "Internal Server Error"}, 500)
            elif orchestrator.outage == "hang":
                self.held.add(request)
                request.notifyFinish().addBoth(lambda _: self.held.discard(request))
            else:  # refuse: the port is closing; this connection goes with it
                abort_connection(request)
            return
        path = request.path.decode("utf-8", "replace").rstrip("/") or "/"
        method = request.method.decode("ascii", "replace")
        if path not in _API_PATHS:
            reply_json(request, {"detail": "Not Found"}, 404)
            return
        wanted = "POST" if path in _EVENTS else "GET"
        if method != wanted:
            request.setHeader(b"allow", wanted.encode("ascii"))
            reply_json(request, {"detail": "Method Not Allowed"}, 405)
            return
        if path == "/health":
            reply_json(request, {"status": "ok"})
            return
        if not orchestrator.authorized(request.getHeader("x-api-key"), request.getHeader("authorization")):
            orchestrator.counters["unauthorized"] += 1
            reply_json(request, {"detail": "missing or invalid API key"}, 401)
            return
        if path in _LISTS:
            setting, counter = _LISTS[path]
            orchestrator.counters[counter] += 1
            shape = getattr(orchestrator, setting)
            if shape == "404":
                reply_json(request, {"detail": "Not Found"}, 404)
            else:
                reply_json(request, orchestrator.engines_document(shape))
        elif path == "/api/v1/proxy/config":
            orchestrator.counters["proxy_config_gets"] += 1
            reply_json(request, orchestrator.proxy_config())
        else:
            self._event(request, _EVENTS[path])

    def _event(self, request: server.Request, kind: str) -> None:
        content = request.content.read(MAX_BODY + 1) if request.content is not None else b""
        try:
            body = json.loads(content) if len(content) <= MAX_BODY else None
        except (ValueError, UnicodeDecodeError):
            body = None
        try:
            reply = self.orchestrator.receive(kind, body)
        except OrchestratorError as e:
            reply_json(request, {"detail": str(e)}, 422)
        else:
            reply_json(request, reply)

    def _outage_changed(self, mode: Optional[str]) -> None:
        if mode == "hang":
            return
        held, self.held = self.held, set()
        for request in held:
            if not (request.finished or request._disconnected):
                self._serve(request)


class OrchestratorControl(JsonControl):
    """
    The look-alike's control API, on its own port:

        GET    /_sim/orchestrator               settings, engines, counters
        GET    /_sim/orchestrator/engines       every record, hidden ones too
        POST   /_sim/orchestrator/engines       change records, or add one (container_id, host, port, ...)
        DELETE /_sim/orchestrator/engines       ?container_id=...: remove a record
        PUT    /_sim/orchestrator/raw_records   JSON list of objects listed verbatim after the records
        GET    /_sim/orchestrator/settings      POST changes v1_engines, legacy_engines, max_streams_per_engine
        POST   /_sim/orchestrator/outage        ?mode=500|hang|refuse[&ms=N]; DELETE ends it
        GET    /_sim/orchestrator/events        ?kind=stream_started|stream_ended; DELETE forgets them
        GET    /_sim/orchestrator/streams       the streams counted from the events
        GET    /_sim/orchestrator/counters      DELETE resets them
    """

    bad_input = (BadRequest, OrchestratorError)

    def __init__(self, orchestrator: Orchestrator, site_getter: Optional[Callable[[], SimSite]] = None) -> None:
        super().__init__(site_getter)
        self.orchestrator = orchestrator

    def index(self) -> str:
        return "/_sim/orchestrator"

    def routes(self) -> Dict[Tuple[str, str], Route]:
        base = "/_sim/orchestrator"
        return {
            ("GET", "/_sim"): self._index,
            ("GET", base): self._index,
            ("GET", f"{base}/engines"): self._engines,
            ("POST", f"{base}/engines"): self._set_engines,
            ("DELETE", f"{base}/engines"): self._remove_engine,
            ("GET", f"{base}/raw_records"): self._raw_records,
            ("PUT", f"{base}/raw_records"): self._set_raw_records,
            ("DELETE", f"{base}/raw_records"): self._clear_raw_records,
            ("GET", f"{base}/settings"): self._settings,
            ("POST", f"{base}/settings"): self._configure,
            ("GET", f"{base}/outage"): self._outage,
            ("POST", f"{base}/outage"): self._set_outage,
            ("DELETE", f"{base}/outage"): self._clear_outage,
            ("GET", f"{base}/events"): self._events,
            ("DELETE", f"{base}/events"): self._clear_events,
            ("GET", f"{base}/streams"): self._streams,
            ("GET", f"{base}/counters"): self._counters,
            ("DELETE", f"{base}/counters"): self._reset_counters,
        }

    def _index(self, request: server.Request) -> Document:
        document = self.orchestrator.describe()
        document["endpoints"] = sorted(f"{m} {p}" for m, p in self.routes() if p != "/_sim")
        return document

    def _engines(self, request: server.Request) -> Document:
        return {"engines": [self.orchestrator.engine_json(r) for r in self.orchestrator.engines]}

    def _set_engines(self, request: server.Request) -> Document:
        orchestrator = self.orchestrator
        items = self._items(request, "an engine change ({\"container_id\": ..., \"draining\": true}, or "
                                     "?container_id=...&forwarded=true)")
        known = {r.container_id for r in orchestrator.engines}
        plans: List[Tuple[str, Dict[str, Any]]] = []
        for item in items:  # check everything before changing anything
            container_id = item.get("container_id")
            if not isinstance(container_id, str) or not container_id:
                raise BadRequest("each engine change needs a \"container_id\"; see GET /_sim/orchestrator/engines")
            fields = {k: v for k, v in item.items() if k != "container_id"}
            if container_id not in known and not ("host" in fields and "port" in fields):
                orchestrator.engine(container_id)  # raises: no such engine, with the known ones
            orchestrator.check_fields(fields)
            plans.append((container_id, fields))
        for container_id, fields in plans:
            if container_id in {r.container_id for r in orchestrator.engines}:
                orchestrator.set_engine(container_id, **fields)
            else:
                orchestrator.add_engine(container_id, fields.pop("host"), fields.pop("port"), **fields)
        return self._engines(request)

    def _remove_engine(self, request: server.Request) -> Document:
        query = self._query(request)
        if set(query) != {"container_id"}:
            raise BadRequest("DELETE /_sim/orchestrator/engines takes ?container_id=... and nothing else")
        self.orchestrator.remove_engine(query["container_id"])
        return self._engines(request)

    def _raw_records(self, request: server.Request) -> Document:
        return {"raw_records": self.orchestrator.raw_records}

    def _set_raw_records(self, request: server.Request) -> Document:
        body = self._body(request)
        if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
            raise BadRequest("give the raw records as a JSON list of objects")
        self.orchestrator.raw_records = list(body)
        return self._raw_records(request)

    def _clear_raw_records(self, request: server.Request) -> Document:
        self.orchestrator.raw_records = []
        return self._raw_records(request)

    def _settings(self, request: server.Request) -> Document:
        return self.orchestrator.settings()

    def _configure(self, request: server.Request) -> Document:
        options = self._options(request)
        if not options:
            raise BadRequest("give settings: v1_engines, legacy_engines (wrapped, bare or 404), "
                             "max_streams_per_engine")
        self.orchestrator.configure(**options)
        return self.orchestrator.settings()

    def _outage(self, request: server.Request) -> Document:
        return {"outage": self.orchestrator.outage}

    def _set_outage(self, request: server.Request) -> Document:
        options = self._options(request)
        unknown = set(options) - {"mode", "ms"}
        if unknown or "mode" not in options:
            raise BadRequest("an outage takes mode (500, hang or refuse) and optionally ms")
        self.orchestrator.set_outage(options["mode"], options.get("ms"))
        return self._outage(request)

    def _clear_outage(self, request: server.Request) -> Document:
        self.orchestrator.clear_outage()
        return self._outage(request)

    def _events(self, request: server.Request) -> Document:
        query = self._query(request)
        unknown = set(query) - {"kind"}
        kind = query.get("kind") or None
        if unknown or kind not in (None, *EVENT_KINDS):
            raise BadRequest(f"GET /_sim/orchestrator/events takes only ?kind={'|'.join(EVENT_KINDS)}")
        return {"events": [e.as_json() for e in self.orchestrator.events if kind is None or e.kind == kind]}

    def _clear_events(self, request: server.Request) -> Document:
        return {"cleared": self.orchestrator.clear_events()}

    def _streams(self, request: server.Request) -> Document:
        return {"streams": [s.as_json() for s in self.orchestrator.streams]}

    def _counters(self, request: server.Request) -> Document:
        return dict(self.orchestrator.counters)

    def _reset_counters(self, request: server.Request) -> Document:
        self.orchestrator.reset_counters()
        return dict(self.orchestrator.counters)


class OrchestratorServer:
    """
    The look-alike assembled: L{orchestrator} (state) and L{site}. Give it a
    listener with L{set_listener} so that a C{refuse} outage can close and
    reopen the port.
    """

    log = Logger(namespace="acetwist.sim.orchestrator")

    def __init__(self, orchestrator: Orchestrator, reactor: IReactorTime) -> None:
        self.orchestrator = orchestrator
        control = OrchestratorControl(orchestrator, lambda: self.site)
        self.resource = OrchestratorResource(orchestrator, control)
        self.site: SimSite = SimSite(self.resource, reactor)
        self._stopped = False
        self.switch = ListenSwitch(reactor, lambda: not self._stopped and orchestrator.outage != "refuse", self.log)
        orchestrator.add_outage_observer(self._outage_changed)

    def set_listener(self, pause: Pause, resume: Resume) -> None:
        self.switch.set_listener(pause, resume)

    def _outage_changed(self, mode: Optional[str]) -> None:
        if mode == "refuse":
            self.site.abort_connections(keep_control=True)
        self.switch.reconcile()

    def shutdown(self) -> Deferred[None]:
        """Cancel the timers and cut every connection; fires when all connections are gone."""
        self._stopped = True
        self.switch.stop()
        self.orchestrator.shutdown()
        self.site.abort_connections(keep_control=False)
        return self.site.drained()
