# -*- test-case-name: tests.test_sim_web -*-
"""
The engine's HTTP API on twisted.web: one leaf resource that routes by path,
and a Site that keeps track of its connections so that C{down} faults and
shutdown can cut them.

Every engine request runs as a coroutine that the request's disconnection
cancels; nothing waits without a timer on the injected clock, and nothing
blocks. The control API (C{/_sim/...}) lives in L{acetwist.sim.control}.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Coroutine, Dict, Optional, Protocol, Set, Tuple, cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IAddress, IDelayedCall, IPushProducer, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import http, resource, server

from acetwist.sim.contents import Content
from acetwist.sim.engine import Engine
from acetwist.sim.session import Session, segment_seconds
from acetwist.sim.stream import StreamSender

VERSION = {"code": 3020300, "platform": "linux", "version": "3.2.3", "websocket_port": 43879}
UNKNOWN_SESSION = "unknown playback session id"
FAILED_CONTENT = "failed to load content"
#: What the TS playback URL of an encrypted content answers (HTTP 500; the text is a guess).
ENCRYPTED_TS = "encrypted content cannot be played as HTTP/TS, use HLS"
CORRUPT_REPLY = b"HTTP/1.1 200 OK\r\nHTTP/1.1 200 OK\r\n"
GARBAGE = b"<html><body><h1>502 Bad Gateway</h1>engine: upstream error</body></html>\n"
HLS_WINDOW = 5
EVENT_HOLD = 5.0
_CALLBACK = re.compile(r"[A-Za-z_$][\w$.]{0,63}")
_HOST = re.compile(r"[\w.\-]+(:\d{1,5})?|\[[0-9a-fA-F:.]+\](:\d{1,5})?")
_HEX40 = r"([0-9a-f]{40})"

TS_TYPE = b"video/mp2t"
JSON_TYPE = b"application/json"
TEXT_TYPE = b"text/plain; charset=utf-8"
M3U8_TYPE = b"application/vnd.apple.mpegurl"


class _Abortable(Protocol):
    def abortConnection(self) -> None: ...


def abort_connection(request: server.Request) -> None:
    """
    Reset the request's connection now. twisted types C{request.transport} as
    C{ITransport}; every transport a request runs on (TCP, TLS, the tests'
    C{StringTransport}) also has C{abortConnection}.
    """
    transport = request.transport
    if transport is not None:
        cast(_Abortable, transport).abortConnection()


class RequestSink:
    """L{acetwist.sim.stream.Sink} over a twisted.web request."""

    def __init__(self, request: server.Request) -> None:
        self.request = request

    def register_producer(self, producer: IPushProducer) -> None:
        self.request.registerProducer(producer, True)

    def write(self, data: bytes) -> None:
        self.request.write(data)

    def finish(self, close: bool) -> None:
        request = self.request
        if request.finished or request._disconnected:
            return
        request.unregisterProducer()
        request.finish()
        if close and request.transport is not None:
            request.transport.loseConnection()

    def abort(self) -> None:
        if not self.request._disconnected:
            abort_connection(self.request)


class RequestHold:
    """An engine request in progress (see L{acetwist.sim.session.Hold})."""

    def __init__(self, request: server.Request) -> None:
        self.request = request
        self.content: Optional[Content] = None
        self.session: Optional[Session] = None
        self.sender: Optional[StreamSender] = None

    def abort(self) -> None:
        if self.sender is not None:
            self.sender.connection_lost()
        if not self.request._disconnected:
            abort_connection(self.request)

    def session_ended(self, reason: str) -> None:
        if self.sender is not None:
            self.sender.session_ended(reason)
        elif reason in ("superseded", "forgotten", "shutdown"):
            self.abort()
        # stopped or expired while waiting: the wait notices and answers


def _reply(request: server.Request, status: int, body: bytes, content_type: bytes) -> None:
    if request.finished or request._disconnected:
        return
    request.setResponseCode(status)
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"content-length", b"%d" % len(body))
    request.write(body)
    request.finish()


def reply_json(request: server.Request, document: object, status: int = 200) -> None:
    _reply(request, status, json.dumps(document).encode("utf-8"), JSON_TYPE)


def reply_text(request: server.Request, status: int, text: str) -> None:
    _reply(request, status, text.encode("utf-8") + b"\n", TEXT_TYPE)


def _redirect(request: server.Request, location: str) -> None:
    if request.finished or request._disconnected:
        return
    request.setResponseCode(302)
    request.setHeader(b"location", location.encode("utf-8"))
    request.setHeader(b"content-length", b"0")
    request.finish()


def _args(request: server.Request) -> Dict[str, str]:
    """The query's first value of each argument, decoded leniently."""
    result: Dict[str, str] = {}
    for key, values in (request.args or {}).items():
        if values:
            result[key.decode("utf-8", "replace")] = values[0].decode("utf-8", "replace")
    return result


def base_url(request: server.Request) -> str:
    """C{http://<Host header>} (C{https} over TLS), or the local address when the header is missing or odd."""
    host = (request.getHeader("host") or "").strip()
    if not _HOST.fullmatch(host):
        address = request.getHost()
        host = f"{getattr(address, 'host', '127.0.0.1')}:{getattr(address, 'port', 6878)}"
    return f"{'https' if request.isSecure() else 'http'}://{host}"


class EngineResource(resource.Resource):
    """The engine's API. C{control} serves C{/_sim}."""

    isLeaf = True
    log = Logger()

    def __init__(self, engine: Engine, control: resource.Resource) -> None:
        super().__init__()
        self.engine = engine
        self.clock = engine.clock
        self.control = control
        self.counters = engine.counters
        self.segment = segment_seconds(engine.config.gop)
        self.segment_packets = round(self.segment / engine.template.gop) * engine.template.packets
        hex40 = _HEX40
        self.routes: Tuple[Tuple[re.Pattern[str], Callable[..., Coroutine[Any, Any, None]], bool], ...] = (
            (re.compile(r"/webui/api/service/?"), self._webui, False),
            (re.compile(r"/server/api/?"), self._server_api, False),
            (re.compile(r"/ace/getstream/?"), self._start_ts, False),
            (re.compile(r"/(?:ace|hls)/manifest\.m3u8"), self._start_hls, False),
            (re.compile(rf"/ace/r/{hex40}/([0-9a-f]+)"), self._playback, True),
            (re.compile(rf"/content/{hex40}/([0-9.]+)"), self._content, True),
            (re.compile(rf"/ace/m/{hex40}/([0-9a-f]+)\.m3u8"), self._playlist, False),
            (re.compile(rf"/ace/c/{hex40}/(\d{{1,9}})\.ts"), self._segment, True),
            (re.compile(rf"/ace/stat/{hex40}/([0-9a-f]+)"), self._stat, False),
            (re.compile(rf"/ace/cmd/{hex40}/([0-9a-f]+)"), self._command, False),
            (re.compile(rf"/ace/event/{hex40}/([0-9a-f]+)"), self._event, False),
        )

    # -- dispatch

    def render(self, request: server.Request) -> bytes | int:
        path = request.path.decode("utf-8", "replace")
        if path == "/_sim" or path.startswith("/_sim/"):
            return self.control.render(request)
        mode = self.engine.down_mode(None)
        if mode == "503":
            reply_text(request, 503, "engine unavailable")
            return server.NOT_DONE_YET
        if mode is not None:
            abort_connection(request)
            return server.NOT_DONE_YET
        for pattern, handler, media in self.routes:
            match = pattern.fullmatch(path)
            if match:
                break
        else:
            reply_text(request, 404, "not found")
            return server.NOT_DONE_YET
        if request.method == b"HEAD":
            request.setHeader(b"content-type", TS_TYPE if media else JSON_TYPE)
            return b""
        if request.method != b"GET":
            request.setHeader(b"allow", b"GET, HEAD")
            reply_text(request, 405, "method not allowed")
            return server.NOT_DONE_YET
        hold = RequestHold(request)
        self.engine.holds.add(hold)
        finished = request.notifyFinish()
        running = Deferred.fromCoroutine(handler(request, hold, *match.groups()))
        running.addErrback(self._crashed, request)
        finished.addBoth(self._finished, hold, running)
        return server.NOT_DONE_YET

    def _finished(self, result: object, hold: RequestHold, running: Deferred[None]) -> None:
        self.engine.holds.discard(hold)
        session = hold.session
        if session is not None:
            if session.stream_reader is hold:
                session.stream_reader = None
            session.remove_hold(hold)
        if hold.sender is not None:
            hold.sender.connection_lost()
        if not running.called:
            running.cancel()

    def _crashed(self, failure: Failure, request: server.Request) -> None:
        if failure.check(CancelledError):
            return
        self.log.failure("request {path} failed", failure, path=request.path)
        if request.finished or request._disconnected:
            return
        if request.startedWriting:
            abort_connection(request)
        else:
            reply_text(request, 500, "internal error")

    # -- waiting

    def _wait(self, ready: Callable[[], bool], hint: Optional[Callable[[], Optional[float]]] = None) -> Deferred[None]:
        """Fire when C{ready()} is true, polling on the clock; cancelling stops the polling."""
        call: Dict[str, Optional[IDelayedCall]] = {"next": None}

        def cancel(_: Deferred[None]) -> None:
            pending = call["next"]
            if pending is not None and pending.active():
                pending.cancel()

        waiting: Deferred[None] = Deferred(cancel)
        tick = self.engine.config.tick

        def check() -> None:
            call["next"] = None
            if ready():
                waiting.callback(None)
                return
            delay = tick
            if hint is not None:
                soon = hint()
                if soon is not None and 0 < soon < delay:
                    delay = soon
            call["next"] = self.clock.callLater(delay, check)

        check()
        return waiting

    def _sleep(self, seconds: float) -> Deferred[None]:
        call: Dict[str, IDelayedCall] = {}
        sleeping: Deferred[None] = Deferred(lambda _: call["c"].cancel() if call["c"].active() else None)
        call["c"] = self.clock.callLater(seconds, sleeping.callback, None)
        return sleeping

    async def _gate(self, request: server.Request, content: Optional[Content]) -> bool:
        """Apply C{down} and C{stall} for C{content}: False when the request was answered or cut."""
        while True:
            mode = self.engine.down_mode(content)
            if mode == "503":
                reply_text(request, 503, "engine unavailable")
                return False
            if mode is not None:
                abort_connection(request)
                return False
            if not self.engine.stalled(content):
                return True
            await self._wait(lambda: not self.engine.stalled(content) or self.engine.down_mode(content) is not None)

    def _ready_hint(self, session: Session, not_before: float = 0.0) -> Callable[[], Optional[float]]:
        return lambda: max(session.ready_at, not_before) - self.clock.seconds()

    # -- health

    async def _webui(self, request: server.Request, hold: RequestHold) -> None:
        args = _args(request)
        if args.get("method") == "get_version":
            document: Dict[str, Any] = {"result": VERSION, "error": None}
        else:
            document = {"result": None, "error": "unknown method"}
        if args.get("format") == "jsonp":
            callback = args.get("callback", "")
            if not _CALLBACK.fullmatch(callback):
                callback = "callback"
            body = f"{callback}({json.dumps(document)});".encode("utf-8")
            _reply(request, 200, body, b"application/javascript")
        else:
            reply_json(request, document)

    async def _server_api(self, request: server.Request, hold: RequestHold) -> None:
        if not await self._gate(request, None):
            return
        method = _args(request).get("method")
        if method == "get_status":
            reply_json(request, {"result": {"playlist_loaded": True, "version": VERSION}})
        elif method == "get_network_connection_status":
            reply_json(request, {"result": {"connected": True}})
        else:
            reply_json(request, {"error": {"message": "unknown method", "code": 0}})

    # -- starting a session

    def _select(self, args: Dict[str, str]) -> Tuple[Optional[Content], Optional[str]]:
        """The content the start call names (content_id/id > infohash > url > magnet), or an error."""
        catalog = self.engine.catalog
        for key, find in (("content_id", catalog.by_content_id), ("id", catalog.by_content_id),
                          ("infohash", catalog.by_infohash), ("url", catalog.by_url), ("magnet", catalog.by_magnet)):
            value = args.get(key, "").strip()
            if value:
                found = find(value)
                return found, None if found else FAILED_CONTENT
        return None, "missing content id"

    async def _start_ts(self, request: server.Request, hold: RequestHold) -> None:
        await self._start(request, hold, "ts")

    async def _start_hls(self, request: server.Request, hold: RequestHold) -> None:
        await self._start(request, hold, "hls")

    async def _start(self, request: server.Request, hold: RequestHold, kind: str) -> None:
        args = _args(request)
        as_json = args.get("format") == "json"
        content, error = self._select(args)
        if content is not None:
            hold.content = content
            self.counters.add_keyed("json_calls" if as_json else "redirect_calls", content.content_id)
        else:
            self.counters.add("unknown_content_calls")
        if not await self._gate(request, content):
            return
        engine = self.engine
        if content is not None:
            failed = engine.fault("failed_content", content)
            garbage = engine.fault("garbage_json", content)
            refused = engine.fault("json_refused", content) if as_json and kind == "ts" else None
            if failed is not None:
                engine.trigger(failed)
                error = failed.params["message"]
            elif refused is not None:
                engine.trigger(refused)
                error = refused.params["message"]
            elif garbage is not None:
                engine.trigger(garbage)
                self.counters.add("start_errors")
                _reply(request, 200, GARBAGE, b"text/html")
                return
        if content is None or error is not None:
            self.counters.add("start_errors")
            if as_json:
                reply_json(request, {"response": None, "error": error})
            else:
                reply_text(request, 400 if error == "missing content id" else 500, error or FAILED_CONTENT)
            return
        try:
            client_session_id = int(args.get("client_session_id", "-1"))
        except ValueError:
            client_session_id = -1
        events = args.get("use_api_events", "0").lower() in ("1", "true", "yes")
        session = engine.start_session(content, kind=kind, pid=args.get("pid") or args.get("sid"),
                                       client_session_id=client_session_id, events=events)
        slow = engine.fault("slow_json", content)
        if slow is not None:
            engine.trigger(slow)
            await self._sleep(slow.params["ms"] / 1000)
        base = base_url(request)
        path = f"{content.infohash}/{session.token}"
        playback = f"{base}/ace/r/{path}" if kind == "ts" else f"{base}/ace/m/{path}.m3u8"
        if not as_json:
            _redirect(request, playback)
            return
        response: Dict[str, Any] = {}
        if events:
            response["event_url"] = f"{base}/ace/event/{path}"
        response.update({
            "playback_url": playback,
            "stat_url": f"{base}/ace/stat/{path}",
            "command_url": f"{base}/ace/cmd/{path}",
            "infohash": content.infohash,
            "playback_session_id": session.playback_session_id,
            "is_live": 1,
            "is_encrypted": int(engine.is_encrypted(content)),
            "client_session_id": client_session_id,
        })
        reply_json(request, {"response": response, "error": None})

    # -- progressive playback

    def _gone(self, request: server.Request, key: str) -> None:
        """Answer a request for a session that is not live."""
        reason = self.engine.ended_reason(key)
        if reason == "superseded":
            reply_text(request, 403, UNKNOWN_SESSION)
        elif reason is not None:
            reply_text(request, 500, UNKNOWN_SESSION)
        else:
            reply_text(request, 404, "download not found")

    def _ended_while_waiting(self, request: server.Request, session: Session) -> None:
        if session.ended in ("stopped", "expired"):
            reply_text(request, 500, UNKNOWN_SESSION)
        elif not request._disconnected:
            abort_connection(request)

    async def _gated_session(self, request: server.Request, hold: RequestHold, infohash: str, token: str,
                             find: Optional[Callable[[str, str], Optional[Session]]] = None,
                             gone: Optional[Callable[[], None]] = None) -> Optional[Session]:
        """
        Pass the engine's gates (stall, down, ...) and find the session a URL
        names (C{find}, default by token); None when the request was answered
        already (C{gone} answers an unknown session, default as a playback URL).
        """
        hold.content = self.engine.catalog.by_infohash(infohash)
        if not await self._gate(request, hold.content):
            return None
        session = (find or self.engine.find_session)(infohash, token)
        if session is None:
            if gone is not None:
                gone()
            else:
                self._gone(request, token)
        return session

    def _unknown_session(self, request: server.Request, *counters: str) -> Callable[[], None]:
        def answer() -> None:
            for name in counters:
                self.counters.add(name)
            reply_json(request, {"response": None, "error": UNKNOWN_SESSION})

        return answer

    async def _playback(self, request: server.Request, hold: RequestHold, infohash: str, token: str) -> None:
        """C{/ace/r/<ih>/<token>}: no headers until the session is ready, then a 302 to the bytes."""
        arrived = self.clock.seconds()
        self.counters.add("playback_gets")
        engine = self.engine
        session = await self._gated_session(request, hold, infohash, token, engine.find_session)
        if session is None:
            return
        error = engine.fault("http_error", session.content)
        if error is not None:
            engine.trigger(error)
            reply_text(request, error.params["status"], "playback error")
            return
        if engine.is_encrypted(session.content):
            self.counters.add("encrypted_refusals")
            reply_text(request, 500, ENCRYPTED_TS)
            return
        hold.session = session
        session.add_hold(hold)
        not_before = arrived
        slow = engine.fault("slow_first_byte", session.content)
        if slow is not None:
            engine.trigger(slow)
            not_before = arrived + slow.params["ms"] / 1000
        await self._wait(lambda: bool(session.ended) or (session.is_ready(self.clock.seconds())
                                                         and self.clock.seconds() >= not_before - 1e-9),
                         self._ready_hint(session, not_before))
        if not await self._gate(request, session.content):
            return
        if session.ended:
            self._ended_while_waiting(request, session)
            return
        location = f"{base_url(request)}/content/{infohash}/{session.content_key}"
        extra = engine.fault("redirect", session.content)
        if extra is not None:
            engine.trigger(extra)
            location += f"?hop={extra.params['hops']}"
        _redirect(request, location)

    async def _content(self, request: server.Request, hold: RequestHold, infohash: str, key: str) -> None:
        """C{/content/<ih>/<key>}: the TS body, for one reader at a time."""
        self.counters.add("content_gets")
        engine = self.engine
        hop = _args(request).get("hop", "")
        if hop.isdigit() and int(hop) > 0:
            location = f"{base_url(request)}/content/{infohash}/{key}"
            _redirect(request, location + (f"?hop={int(hop) - 1}" if int(hop) > 1 else ""))
            return
        session = await self._gated_session(request, hold, infohash, key, engine.find_session_by_key)
        if session is None:
            return
        if engine.is_encrypted(session.content):
            self.counters.add("encrypted_refusals")
            reply_text(request, 500, ENCRYPTED_TS)
            return
        if session.stream_reader is not None:
            self.counters.add("concurrent_reader_rejections")
            self.log.info("second reader on {content}: corrupt reply", content=session.content.name)
            transport = request.transport
            if transport is not None:
                transport.write(CORRUPT_REPLY)
                transport.loseConnection()
            return
        hold.session = session
        session.stream_reader = hold
        session.add_hold(hold)
        await self._wait(lambda: bool(session.ended) or session.is_ready(self.clock.seconds()),
                         self._ready_hint(session))
        if session.ended:
            self._ended_while_waiting(request, session)
            return
        request.setHeader(b"content-type", TS_TYPE)
        request.setHeader(b"cache-control", b"no-cache")
        hold.sender = StreamSender(engine, session, RequestSink(request))
        hold.sender.start()

    # -- HLS

    def _segments_available(self, session: Session) -> int:
        return int(session.media_seconds(self.clock.seconds()) / self.segment + 1e-9)

    async def _playlist(self, request: server.Request, hold: RequestHold, infohash: str, token: str) -> None:
        self.counters.add("hls_playlist_gets")
        engine = self.engine
        session = await self._gated_session(request, hold, infohash, token, engine.find_session)
        if session is None:
            return
        hold.session = session
        session.add_hold(hold)
        await self._wait(lambda: bool(session.ended) or (session.is_ready(self.clock.seconds())
                                                         and self._segments_available(session) >= 1),
                         self._ready_hint(session))
        if session.ended:
            self._ended_while_waiting(request, session)
            return
        session.touch()
        available = self._segments_available(session)
        first = max(0, available - HLS_WINDOW)
        base = base_url(request)
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{int(-(-self.segment // 1))}",
                 f"#EXT-X-MEDIA-SEQUENCE:{first}"]
        for n in range(first, available):
            lines += [f"#EXTINF:{self.segment:.3f},", f"{base}/ace/c/{infohash}/{n}.ts"]
        _reply(request, 200, ("\n".join(lines) + "\n").encode("ascii"), M3U8_TYPE)

    async def _segment(self, request: server.Request, hold: RequestHold, infohash: str, number: str) -> None:
        self.counters.add("hls_segment_gets")
        engine = self.engine
        hold.content = engine.catalog.by_infohash(infohash)
        if not await self._gate(request, hold.content):
            return
        session = engine.sessions.get(infohash)
        n = int(number)
        if session is None or not session.is_ready(self.clock.seconds()) or n >= self._segments_available(session):
            reply_text(request, 404, "download not found")
            return
        hold.session = session
        session.add_hold(hold)
        session.touch()
        request.setHeader(b"content-type", TS_TYPE)
        request.setHeader(b"content-length", b"%d" % (self.segment_packets * 188))
        first = n * self.segment_packets
        hold.sender = StreamSender(engine, session, RequestSink(request), progressive=False,
                                   first=first, end=first + self.segment_packets)
        hold.sender.start()

    # -- stat, command, event

    async def _stat(self, request: server.Request, hold: RequestHold, infohash: str, token: str) -> None:
        self.counters.add("stat_calls")
        engine = self.engine
        session = await self._gated_session(request, hold, infohash, token,
                                            gone=self._unknown_session(request, "stats_unknown"))
        if session is None:
            return
        skip = _args(request).get("skip_player_activity", "0").lower() in ("1", "true", "yes")
        if engine.config.stat_keeps_alive and not skip:
            session.touch()
        reply_json(request, {"response": session.stat(self.clock.seconds()), "error": None})

    async def _command(self, request: server.Request, hold: RequestHold, infohash: str, token: str) -> None:
        args = _args(request)
        method = args.get("method", "")
        self.counters.add("command_calls")
        if method == "stop":
            self.counters.add("stop_calls")
        engine = self.engine
        unknown = ("stops_unknown",) if method == "stop" else ()
        session = await self._gated_session(request, hold, infohash, token,
                                            gone=self._unknown_session(request, *unknown))
        if session is None:
            return
        ok = {"response": "ok", "error": None}
        if method == "stop":
            engine.stop(session)
            reply_json(request, ok)
        elif method == "liveseek":
            live = session.livepos(self.clock.seconds())
            try:
                position = int(args.get("pos", ""))
            except ValueError:
                reply_json(request, {"response": None, "error": "missing or invalid pos"})
                return
            if not int(live["live_first"]) <= position <= int(live["live_last"]):
                reply_json(request, {"response": None, "error": "position out of range"})
                return
            session.seek_position = position
            reply_json(request, ok)
        elif method == "set_stream":
            index = args.get("stream_index", "")
            if not index.isdigit():
                reply_json(request, {"response": None, "error": "missing or invalid stream_index"})
                return
            session.selected_stream_index = int(index)
            reply_json(request, ok)
        elif method == "set_player_activity_timeout":
            try:
                timeout = float(args.get("timeout", ""))
            except ValueError:
                timeout = -1.0
            if not 0 < timeout <= 86400:
                reply_json(request, {"response": None, "error": "missing or invalid timeout"})
                return
            session.set_idle_timeout(timeout)
            reply_json(request, ok)
        else:
            reply_json(request, {"response": None, "error": "unknown method"})

    async def _event(self, request: server.Request, hold: RequestHold, infohash: str, token: str) -> None:
        """Long-poll: a livepos event every few seconds, "unknown playback session id" once the session ends."""
        engine = self.engine
        hold.content = engine.catalog.by_infohash(infohash)
        if not await self._gate(request, hold.content):
            return
        session = engine.find_session(infohash, token)
        if session is None or not session.events:
            reply_json(request, {"response": None, "error": UNKNOWN_SESSION})
            return
        hold.session = session
        session.add_hold(hold)
        until = self.clock.seconds() + EVENT_HOLD
        await self._wait(lambda: bool(session.ended) or self.clock.seconds() >= until - 1e-9,
                         lambda: until - self.clock.seconds())
        if session.ended:
            reply_json(request, {"response": None, "error": UNKNOWN_SESSION})
        else:
            reply_json(request, {"response": {"event": "livepos", "params": session.livepos(self.clock.seconds())},
                                 "error": None})


class SimSite(server.Site):
    """A Site without access logs that can cut its connections."""

    displayTracebacks = False

    def __init__(self, root: resource.Resource, reactor: IReactorTime) -> None:
        super().__init__(root, reactor=reactor)
        # the type twisted's HTTPFactory.buildProtocol declares
        self.connections: Set[http._GenericHTTPChannelProtocol] = set()
        #: the HTTP channels serving C{/_sim} requests
        self.control_channels: Set[object] = set()
        self._drained: list[Deferred[None]] = []

    def log(self, request: http.Request) -> None:
        pass

    def buildProtocol(self, addr: Optional[IAddress]) -> Optional[http._GenericHTTPChannelProtocol]:
        protocol = super().buildProtocol(addr)
        if protocol is None:
            return None
        original = protocol.connectionLost

        def connectionLost(reason: Failure) -> None:
            self.connections.discard(protocol)
            self.control_channels.discard(getattr(protocol, "_channel", protocol))
            try:
                original(reason)
            finally:
                if not self.connections:
                    waiters, self._drained = self._drained, []
                    for waiter in waiters:
                        waiter.callback(None)

        protocol.connectionLost = connectionLost
        self.connections.add(protocol)
        return protocol

    def abort_connections(self, keep_control: bool) -> None:
        """Reset every connection, except those serving C{/_sim} when C{keep_control}."""
        for protocol in list(self.connections):
            channel = getattr(protocol, "_channel", protocol)
            if keep_control and channel in self.control_channels:
                continue
            transport = getattr(channel, "transport", None)
            if transport is not None:
                transport.abortConnection()

    def drained(self) -> Deferred[None]:
        """Fires when no connection is left."""
        waiter: Deferred[None] = Deferred()
        if not self.connections:
            waiter.callback(None)
        else:
            self._drained.append(waiter)
        return waiter
