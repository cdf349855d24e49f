# -*- test-case-name: tests.test_web -*-
"""
The player-facing HTTP API (acexy compatible) and the operator endpoints.

- C{GET|HEAD /ace/getstream?id=|content_id=|infohash=} -> C{200 video/mp2t}
- C{GET|HEAD /ace/manifest.m3u8?...} (and C{/hls/manifest.m3u8}) -> the live HLS
  playlist; C{/ace/hls/<token>/<sequence>.ts} -> its segments
- C{GET|HEAD /ace/status}, C{/status}, C{/metrics}, C{/healthz}; other methods get 405

Errors before a player's first byte are an HTTP status with a JSON body;
after the first byte the connection is aborted, never written into.

C{--token} guards every route but C{/healthz}; the operator token
(C{--admin-token}, else C{--token}) guards C{/status} and C{/metrics}. Engine
session URLs carry the session's token (whoever has C{command_url} can stop
the session): they are shown in full only to a request that carries the
operator token, and redacted otherwise (see L{acetwist.redact}).
"""

from __future__ import annotations

import hmac
import json
import re
from typing import Any, Callable, Dict, List, Optional, Tuple

from klein import Klein
from twisted.internet.defer import CancelledError
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request
from werkzeug.exceptions import NotFound

from acetwist import __version__
from acetwist.config import Settings
from acetwist.engines.api import IEnginePool
from acetwist.hls.frontend import HlsFrontend
from acetwist.hls.playlist import CONTENT_TYPE as PLAYLIST_TYPE
from acetwist.hls.segmenter import Segment
from acetwist.http import ConnectionStats, ProxySite, make_site
from acetwist.metrics import render_metrics
from acetwist.redact import redact_credentials, redact_session_url
from acetwist.registry import Registry
from acetwist.upstream import EngineError, Selector

HEX40 = re.compile(r"[0-9a-fA-F]{40}")

#: Engine parameters that change the output; the player who opens a channel
#: has them passed to the engine. They are not part of the stream key (the
#: engine keeps one session per content): a later player with other values
#: joins the running channel. Anything else a player adds is ignored.
PASS_THROUGH = (
    "transcode_audio",
    "transcode_mp3",
    "transcode_ac3",
    "preferred_audio_language",
    "_idx",
    "file_indexes",
    "stream_id",
)


class BadRequest(Exception):
    pass


def parse_selector(args: Dict[bytes, List[bytes]]) -> Selector:
    """The stream a player asked for, or L{BadRequest} with the reason."""

    def one(name: str) -> Optional[str]:
        values = {v.decode("utf-8", "replace").strip() for v in args.get(name.encode(), [])}
        values.discard("")
        if len(values) > 1:
            raise BadRequest(f"{name} is given more than once with different values")
        return values.pop() if values else None

    content_id, alias, infohash = one("id"), one("content_id"), one("infohash")
    if content_id and alias and content_id.lower() != alias.lower():
        raise BadRequest("id and content_id disagree")
    content_id = content_id or alias
    if content_id and infohash:
        raise BadRequest("give only one of id or infohash")
    if not content_id and not infohash:
        raise BadRequest("one of id or infohash is required")
    kind, value = ("id", content_id) if content_id else ("infohash", infohash)
    assert value is not None
    if not HEX40.fullmatch(value):
        raise BadRequest(f"{kind} must be 40 hexadecimal characters")
    extra: List[Tuple[str, str]] = []
    for name in PASS_THROUGH:
        given = one(name)
        if given is not None:
            extra.append((name, given))
    return Selector(kind, value.lower(), tuple(sorted(extra)))


def json_body(request: IRequest, status: int, payload: Dict[str, Any], retry_after: Optional[int] = None) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    if retry_after is not None:
        request.setHeader(b"Retry-After", str(retry_after).encode())
    return json.dumps(payload).encode() + b"\n"


def error_body(request: IRequest, status: int, message: str, retry_after: Optional[int] = None) -> bytes:
    payload: Dict[str, Any] = {"error": message, "status": status}
    if retry_after is not None:
        payload["retry_after"] = retry_after
    return json_body(request, status, payload, retry_after)


#: methods every route but the stream route answers (the stream route checks its own)
READ_METHODS = (b"GET", b"HEAD")

#: the session URLs in a channel's status (each carries the session's token)
SESSION_URLS = ("playback_url", "stat_url", "command_url")


class RequestGuard(Resource):
    """
    In front of the Klein resource: what no route should see. A request
    with a body is refused (413; the HTTP channel refuses it earlier when the
    proxy's own site serves it); a URL or Host that is not UTF-8 is a 400
    (Klein would log a traceback); empty path segments are dropped, so
    C{/ace//getstream?id=...} is served like C{/ace/getstream?id=...} (Werkzeug
    would redirect to the path without its query).
    """

    isLeaf = True

    def __init__(self, inner: IResource, on_error: Callable[[IRequest, int, str], bytes]) -> None:
        super().__init__()
        self.inner = inner
        self.on_error = on_error

    def render(self, request: IRequest) -> Any:
        length = request.getHeader(b"content-length")
        chunked = b"chunked" in (request.getHeader(b"transfer-encoding") or b"").lower()
        if chunked or (length is not None and length.strip() not in (b"", b"0")):
            return self._refuse(request, 413, "this proxy takes no request body")
        try:
            b"/".join(request.postpath).decode("utf-8")
            b"/".join(request.prepath).decode("utf-8")
            request.getRequestHostname().decode("utf-8")
        except UnicodeDecodeError:
            return self._refuse(request, 400, "the URL or Host header is not valid UTF-8")
        if len(request.postpath) > 1 and b"" in request.postpath[:-1]:
            request.postpath = [s for s in request.postpath[:-1] if s] + request.postpath[-1:]
        return self.inner.render(request)

    def _refuse(self, request: IRequest, status: int, message: str) -> bytes:
        body = self.on_error(request, status, message)
        if request.method == b"HEAD":
            # Twisted would drop the body with a warning that reprs the request (and fails on a non-ASCII URI).
            request.setHeader(b"Content-Length", str(len(body)).encode())
            return b""
        return body


class ProxyApp:
    """The Klein application; one per proxy service."""

    app = Klein()
    log = Logger()

    def __init__(self, registry: Registry, settings: Settings, clock: Any, coordinator: Any, pool: IEnginePool) -> None:
        self.registry = registry
        self.settings = settings
        self.clock = clock
        self.coordinator = coordinator
        self.pool = pool
        self.started_at = clock.seconds()
        self.requests = 0
        self.errors: Dict[int, int] = {}
        #: the HTTP server side's counters (filled by the L{ProxySite} of L{site})
        self.connections = ConnectionStats()
        self.hls = HlsFrontend(registry, settings, clock, coordinator, clustered=settings.redis is not None)

    def resource(self) -> IResource:
        return RequestGuard(self.app.resource(), self._error)

    def site(self, reactor: Any) -> ProxySite:
        """The site to listen with: this app behind the connection limits of the settings."""
        return make_site(self.resource(), self.settings, self.connections, reactor)

    # ---------------------------------------------------------- helpers

    @staticmethod
    def _credential(request: IRequest) -> bytes:
        """The token a request carries: C{Authorization: Bearer ...}, else C{?token=}."""
        header = request.getHeader(b"authorization") or b""
        if header.lower().startswith(b"bearer "):
            return header[7:].strip()
        return (request.args.get(b"token") or [b""])[0]

    def _is_operator(self, request: IRequest) -> bool:
        """The request carries the operator token (C{--admin-token}, else C{--token})."""
        token = self.settings.operator_token
        if not token:
            return False
        return hmac.compare_digest(self._credential(request), token.encode())

    def _authorised(self, request: IRequest) -> bool:
        """The request may use the player routes: no C{--token}, or it carries it (or the operator token)."""
        token = self.settings.token
        if not token:
            return True
        return hmac.compare_digest(self._credential(request), token.encode()) or self._is_operator(request)

    def _operator_refusal(self, request: IRequest) -> Optional[bytes]:
        """A 401 unless the request may read an operator route (C{/status}, C{/metrics})."""
        if self.settings.operator_token and not self._is_operator(request):
            return self._error(request, 401, "a valid operator token is required")
        return None

    def _method_refusal(self, request: IRequest) -> Optional[bytes]:
        """A 405 for a method other than GET and HEAD."""
        if request.method in READ_METHODS:
            return None
        request.setHeader(b"Allow", b"GET, HEAD")
        return self._error(request, 405, "only GET and HEAD are allowed")

    def _error(self, request: IRequest, status: int, message: str, retry_after: Optional[int] = None) -> bytes:
        self.errors[status] = self.errors.get(status, 0) + 1
        return error_body(request, status, message, retry_after)

    # ---------------------------------------------------------- player API

    def _player_refusal(self, request: IRequest) -> Optional[bytes]:
        """Count a player request; a 405 or a 401 when it may not go on."""
        self.requests += 1
        refusal = self._method_refusal(request)
        if refusal is None and not self._authorised(request):
            refusal = self._error(request, 401, "a valid token is required")
        return refusal

    @app.route("/ace/getstream", branch=False, strict_slashes=False)
    def getstream(self, request: Request) -> Any:
        refusal = self._player_refusal(request)
        if refusal is not None:
            return refusal
        try:
            selector = parse_selector(request.args)
        except BadRequest as e:
            return self._error(request, 400, str(e))
        request.setHeader(b"Content-Type", b"video/mp2t")
        request.setHeader(b"Cache-Control", b"no-cache, no-store")
        request.setHeader(b"Accept-Ranges", b"none")
        if request.method == b"HEAD":
            # Probes get the headers and never start an engine session.
            return b""
        try:
            sink = self.registry.join(selector, request)
        except EngineError as e:
            return self._error(request, e.status, e.message, e.retry_after)
        return sink.done.addErrback(self._failed, request)

    def _failed(self, failure: Failure, request: Request) -> Any:
        """A player route's failure: its JSON error, or an aborted connection once a body has begun."""
        if failure.check(CancelledError):
            return None  # the player went away
        if request.startedWriting:
            # Never append an error page to a TS body.
            transport = getattr(request, "transport", None) or getattr(request.channel, "transport", None)
            if transport is not None:
                transport.abortConnection()
            return None
        error = failure.value
        if isinstance(error, EngineError):
            return self._error(request, error.status, error.message, error.retry_after)
        self.log.failure("unexpected failure serving a player", failure)
        return self._error(request, 500, "internal error")

    # ---------------------------------------------------------- HLS

    @app.route("/ace/manifest.m3u8", branch=False, strict_slashes=False)
    @app.route("/hls/manifest.m3u8", branch=False, strict_slashes=False)
    def manifest(self, request: Request) -> Any:
        """The channel's live HLS playlist (the engine's own path); HEAD answers the headers alone."""
        refusal = self._player_refusal(request)
        if refusal is not None:
            return refusal
        try:
            selector = parse_selector(request.args)
        except BadRequest as e:
            return self._error(request, 400, str(e))
        if request.method == b"HEAD":
            self._playlist_headers(request)
            return b""
        try:
            body = self.hls.playlist(request, selector, self._credential(request))
        except EngineError as e:
            return self._error(request, e.status, e.message, e.retry_after)

        def answer(body: bytes) -> bytes:
            self._playlist_headers(request)
            return body

        return body.addCallbacks(answer, self._failed, errbackArgs=(request,))

    @staticmethod
    def _playlist_headers(request: IRequest) -> None:
        request.setHeader(b"Content-Type", PLAYLIST_TYPE)
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"Access-Control-Allow-Origin", b"*")  # web players (hls.js) on other origins

    @app.route("/ace/hls/<token>/<int:sequence>.ts", strict_slashes=False)
    def hls_segment(self, request: Request, token: str, sequence: int) -> Any:
        """One HLS segment (C{video/mp2t}), the same bytes on every worker."""
        refusal = self._player_refusal(request)
        if refusal is not None:
            return refusal
        found = self.hls.segment(request, token, sequence)

        def send(segment: Segment) -> bytes:
            request.setHeader(b"Content-Type", b"video/mp2t")
            request.setHeader(b"Cache-Control", b"max-age=60")
            request.setHeader(b"Access-Control-Allow-Origin", b"*")
            request.setHeader(b"Content-Length", str(segment.size).encode())
            if request.method != b"HEAD":
                for part in segment.parts:
                    request.write(part)
            return b""

        return found.addCallbacks(send, self._failed, errbackArgs=(request,))

    @app.route("/ace/status", strict_slashes=False)
    def ace_status(self, request: IRequest) -> bytes:
        refusal = self._method_refusal(request)
        if refusal is not None:
            return refusal
        if not self._authorised(request):
            return self._error(request, 401, "a valid token is required")
        if not (request.args.get(b"id") or request.args.get(b"content_id") or request.args.get(b"infohash")):
            return json_body(request, 200, {"streams": len(self.registry.channels())})
        try:
            selector = parse_selector(request.args)
        except BadRequest as e:
            return self._error(request, 400, str(e))
        channel = self.registry.get(selector.key)
        if channel is None:
            return self._error(request, 404, "stream not found")
        session = channel.session
        stat_url = session.stat_url if session else None
        return json_body(
            request,
            200,
            {
                "clients": len(channel.sinks),
                "stream_id": {selector.kind: selector.value},
                "stat_url": stat_url if self._is_operator(request) else redact_session_url(stat_url),
                "state": channel.state,
            },
        )

    # ---------------------------------------------------------- operators

    @app.route("/status", strict_slashes=False)
    def status(self, request: IRequest) -> Any:
        """This worker's channels and players, and the cluster view (every worker's players, owners, epochs)."""
        refusal = self._method_refusal(request) or self._operator_refusal(request)
        if refusal is not None:
            return refusal
        secrets = self._is_operator(request)
        document = self.status_document(secrets=secrets)

        def with_cluster(view: Dict[str, Any]) -> bytes:
            if not secrets:
                for stream in view.get("streams", {}).values():
                    metadata = stream.get("metadata") or {}
                    if isinstance(metadata.get("engine"), str):
                        metadata["engine"] = redact_credentials(metadata["engine"])
            document["cluster"] = view
            return json_body(request, 200, document)

        def without_cluster(failure: Failure) -> bytes:
            document["cluster"] = {"available": False, "error": failure.getErrorMessage()}
            return json_body(request, 200, document)

        return self.coordinator.cluster_view().addCallbacks(with_cluster, without_cluster)

    def status_document(self, secrets: bool = False) -> Dict[str, Any]:
        """
        The C{/status} document. Unless C{secrets}, the engine session URLs
        have their token replaced (C{.../ace/cmd/<infohash>/REDACTED}) and
        C{"redacted": true} says so.
        """
        channels = [channel.status() for channel in self.registry.channels()]
        if not secrets:
            for channel in channels:
                for name in SESSION_URLS:
                    channel[name] = redact_session_url(channel.get(name))
                if isinstance(channel["engine"], str):
                    channel["engine"] = redact_credentials(channel["engine"])
        now = self.clock.seconds()
        return {
            "version": __version__,
            "redacted": not secrets,
            "worker": self.coordinator.worker_id,
            "engine": self._engine_summary(secrets),
            "uptime": round(now - self.started_at, 3),
            "channels": channels,
            "totals": {
                "channels": len(channels),
                "clients": sum(len(c["clients"]) for c in channels),
                "bytes_in": sum(c["bytes_in"] for c in channels),
                "bytes_out": sum(c["bytes_out"] for c in channels),
                "requests": self.requests,
                "errors": {str(k): v for k, v in sorted(self.errors.items())},
                "engine_json_calls": self.pool.json_calls,
                "engine_stop_calls": self.pool.stop_calls,
            },
            "engines": self._engines(secrets),
            "engine_source": self.pool.source_status(),
            "coordinator": dict(getattr(self.coordinator, "stats", dict)(), backend=getattr(self.coordinator, "backend", "")),
            "http": self.connections.status(),
        }

    def _engine_summary(self, secrets: bool) -> Optional[str]:
        """The engine for a single static engine (acexy's shape); None with several or an orchestrator."""
        engines = self.settings.engines
        if self.settings.orchestrator or len(engines) != 1:
            return None
        return engines[0] if secrets else redact_credentials(engines[0])

    def _engines(self, secrets: bool) -> List[Dict[str, Any]]:
        engines = self.pool.status()
        if not secrets:
            for engine in engines:
                for name in ("id", "url"):
                    if isinstance(engine.get(name), str):
                        engine[name] = redact_credentials(engine[name])
        return engines

    @app.route("/healthz", strict_slashes=False)
    def healthz(self, request: IRequest) -> bytes:
        refusal = self._method_refusal(request)
        if refusal is not None:
            return refusal
        return json_body(request, 200, {"status": "ok", "channels": len(self.registry.channels())})

    @app.route("/metrics", strict_slashes=False)
    def metrics(self, request: IRequest) -> bytes:
        refusal = self._method_refusal(request) or self._operator_refusal(request)
        if refusal is not None:
            return refusal
        body, content_type = render_metrics(self)
        request.setHeader(b"Content-Type", content_type.encode())
        return body

    @app.handle_errors(NotFound)
    def not_found(self, request: IRequest, failure: Failure) -> bytes:
        return self._error(request, 404, "no such route")
