# -*- test-case-name: tests.test_sim_control -*-
"""
The control API, on the engine's own port under C{/_sim}:

    GET    /_sim                 config, contents, sessions, faults, counters
    GET    /_sim/contents
    GET    /_sim/sessions
    GET    /_sim/counters        DELETE resets them
    GET    /_sim/faults          the faults in force and the catalogue of kinds
    POST   /_sim/faults          set faults: a JSON object or list, or query parameters
    DELETE /_sim/faults          clear all, or ?name=...&content=... to clear some
    POST   /_sim/restart         forget every session; ?down_ms=N[&down_mode=refuse|reset|503]

Answers are JSON. Bad input is a 400 with C{{"error": "..."}}; the simulator
keeps running whatever it is sent.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Type

from twisted.logger import Logger
from twisted.web import resource, server

from acetwist.sim import faults as faultlib
from acetwist.sim.engine import Engine
from acetwist.sim.web import SimSite, reply_json

MAX_BODY = 64 * 1024

#: a JSON object answered to a control request
Document = Dict[str, Any]


class BadRequest(Exception):
    """Answered with a 400 and the message."""


class Status(Exception):
    """Answered with this HTTP status and the message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Route = Callable[[server.Request], Document]


class JsonControl(resource.Resource):
    """
    A control API: routes by (method, path) to handlers that return a JSON
    document; the exceptions in C{bad_input} are 400s with their message.
    Requests it serves are marked on the site as control requests, so that
    faults that cut connections spare them.
    """

    isLeaf = True
    log = Logger()
    bad_input: Tuple[Type[Exception], ...] = (BadRequest,)

    def __init__(self, site_getter: Optional[Callable[[], SimSite]] = None) -> None:
        super().__init__()
        self._site_getter = site_getter

    def routes(self) -> Dict[Tuple[str, str], Route]:
        raise NotImplementedError

    def index(self) -> str:
        return "/_sim"

    def render(self, request: server.Request) -> int:
        site = self._site_getter() if self._site_getter else None
        if site is not None:
            channel = request.channel
            site.control_channels.add(channel)
            request.notifyFinish().addBoth(lambda _: site.control_channels.discard(channel))
        path = request.path.decode("utf-8", "replace").rstrip("/")
        method = request.method.decode("ascii", "replace")
        routes = self.routes()
        route = routes.get((method, path))
        try:
            if route is None:
                if path in {p for (_, p) in routes}:
                    raise Status(405, f"{method} is not allowed on {path}")
                raise Status(404, f"no control endpoint {path}; see GET {self.index()}")
            document = route(request)
        except Status as e:
            reply_json(request, {"error": e.message}, e.status)
        except self.bad_input as e:
            reply_json(request, {"error": str(e)}, 400)
        except Exception:
            self.log.failure("control request {path} failed", path=path)
            reply_json(request, {"error": "internal error (see the simulator's log)"}, 500)
        else:
            reply_json(request, document)
        return server.NOT_DONE_YET

    # -- input

    def _body(self, request: server.Request) -> object:
        content = request.content.read(MAX_BODY + 1) if request.content is not None else b""
        if len(content) > MAX_BODY:
            raise BadRequest(f"body larger than {MAX_BODY} bytes")
        if not content.strip():
            return None
        try:
            return json.loads(content)
        except (ValueError, UnicodeDecodeError) as e:
            raise BadRequest(f"body is not JSON: {e}") from None

    def _query(self, request: server.Request) -> Dict[str, str]:
        result: Dict[str, str] = {}
        for key, values in (request.args or {}).items():
            if len(values) != 1:
                raise BadRequest(f"parameter {key.decode('utf-8', 'replace')!r} given {len(values)} times")
            try:
                result[key.decode("utf-8")] = values[0].decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest("parameters must be UTF-8") from None
        return result

    def _items(self, request: server.Request, what: str) -> List[Mapping[str, Any]]:
        """A JSON object or list of objects from the body, or one object from the query parameters."""
        body = self._body(request)
        if body is None:
            query = self._query(request)
            if not query:
                raise BadRequest(f"give {what} as a JSON body or as query parameters")
            items: List[Any] = [query]
        elif isinstance(body, list):
            items = body
        else:
            items = [body]
        if not items or not all(isinstance(item, Mapping) for item in items):
            raise BadRequest(f"give {what} as a JSON object or a non-empty list of objects")
        return items

    def _options(self, request: server.Request) -> Dict[str, Any]:
        """Query parameters, overridden by the fields of a JSON object body."""
        options: Dict[str, Any] = dict(self._query(request))
        body = self._body(request)
        if body is not None:
            if not isinstance(body, Mapping):
                raise BadRequest("the body must be a JSON object")
            options.update(body)
        return options


class ControlResource(JsonControl):
    """The engine's control API."""

    bad_input = (BadRequest, faultlib.FaultError)

    def __init__(self, engine: Engine, site_getter: Optional[Callable[[], SimSite]] = None) -> None:
        super().__init__(site_getter)
        self.engine = engine

    def routes(self) -> Dict[Tuple[str, str], Route]:
        return {
            ("GET", "/_sim"): self._index,
            ("GET", "/_sim/contents"): self._contents,
            ("GET", "/_sim/sessions"): self._sessions,
            ("GET", "/_sim/counters"): self._counters,
            ("DELETE", "/_sim/counters"): self._reset_counters,
            ("GET", "/_sim/faults"): self._faults,
            ("POST", "/_sim/faults"): self._set_faults,
            ("PUT", "/_sim/faults"): self._set_faults,
            ("DELETE", "/_sim/faults"): self._clear_faults,
            ("POST", "/_sim/restart"): self._restart,
        }

    # -- endpoints

    def _index(self, request: server.Request) -> Document:
        document = self.engine.describe()
        if self.engine.name:
            document["name"] = self.engine.name
        document["counters"] = self.engine.counters.snapshot()
        document["endpoints"] = [f"{m} {p}" for m, p in _PATHS]
        return document

    def _contents(self, request: server.Request) -> Document:
        return {"contents": [c.as_json() for c in self.engine.catalog]}

    def _sessions(self, request: server.Request) -> Document:
        return {"sessions": self.engine.describe()["sessions"]}

    def _counters(self, request: server.Request) -> Document:
        return self.engine.counters.snapshot()

    def _reset_counters(self, request: server.Request) -> Document:
        self.engine.counters.reset()
        return self.engine.counters.snapshot()

    def _faults(self, request: server.Request) -> Document:
        return {"faults": [f.as_json() for f in self.engine.faults],
                "kinds": [kind.describe() for kind in faultlib.FAULTS.values()]}

    def _set_faults(self, request: server.Request) -> Document:
        items = self._items(request, "a fault ({\"name\": ..., \"content\": ..., params...}, or "
                                     "?name=cut&after_bytes=300000)")
        checked = []
        for item in items:  # validate everything before setting anything
            name = item.get("name")
            if not isinstance(name, str) or not name:
                raise BadRequest("each fault needs a \"name\"; see GET /_sim/faults for the kinds")
            content = item.get("content")
            if content is not None and not isinstance(content, str):
                raise BadRequest("\"content\" must be a name, content id or infohash (or null for engine-wide)")
            params = {k: v for k, v in item.items() if k not in ("name", "content")}
            target = self.engine.resolve(content or None)
            valid = faultlib.validate(name, params)
            faultlib.check_scope(name, valid, target)
            checked.append((name, target, valid))
        return {"faults": [self.engine.set_fault(name, content=target, **valid).as_json()
                           for name, target, valid in checked]}

    def _clear_faults(self, request: server.Request) -> Document:
        query = self._query(request)
        unknown = set(query) - {"name", "content"}
        if unknown:
            raise BadRequest(f"DELETE /_sim/faults takes only name and content, not {', '.join(sorted(unknown))}")
        content: Optional[str] = query.get("content", "*")
        if content in ("", "global", "none", "null"):
            content = None
        return {"cleared": self.engine.clear_faults(query.get("name") or None, content)}

    def _restart(self, request: server.Request) -> Document:
        options = self._options(request)
        unknown = set(options) - {"down_ms", "down_mode"}
        if unknown:
            raise BadRequest(f"restart takes only down_ms and down_mode, not {', '.join(sorted(unknown))}")
        down = faultlib.validate("down", {"mode": options.get("down_mode", "refuse"), "ms": options.get("down_ms", 0)})
        forgotten = len(self.engine.sessions)
        self.engine.restart(down_ms=down["ms"], down_mode=down["mode"])
        return {"restarted": True, "sessions_forgotten": forgotten, "down_ms": down["ms"],
                "down_mode": down["mode"] if down["ms"] else None}


_PATHS = [
    ("GET", "/_sim"), ("GET", "/_sim/contents"), ("GET", "/_sim/sessions"), ("GET", "/_sim/counters"),
    ("DELETE", "/_sim/counters"), ("GET", "/_sim/faults"), ("POST", "/_sim/faults"), ("DELETE", "/_sim/faults"),
    ("POST", "/_sim/restart"),
]
