# -*- test-case-name: tests.test_sim_orchestrator -*-
"""
The state of the orchestrator look-alike (acestream-orchestrator's engine
list, proxy config and stream events): its engine records, the switches
that make it misbehave, the events it received and the streams it counts
from them. The clock is injected; nothing here speaks HTTP (that is
L{acetwist.sim.orchestrator_web}).

Like the real orchestrator, it knows a stream only from the events: a
C{stream_started} with a C{container_id} adds one to that container's
C{stream_count} (every time: it is not idempotent); a C{stream_ended} with a
C{container_id} ends that container's stream named by C{stream_id}, else its
latest stream with the same C{content_id}, else its latest stream.
"""

from __future__ import annotations

import hmac
from typing import Any, Callable, Dict, List, Mapping, Optional, Union

import attr
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

HEALTH = ("healthy", "unhealthy", "unknown")
#: how each engine-list path answers: the wrapped shape, the bare array, or 404
LIST_MODES = ("wrapped", "bare", "404")
#: an outage: every API request answers 500, hangs until the outage ends, or the port is closed
OUTAGES = ("500", "hang", "refuse")
EVENT_KINDS = ("stream_started", "stream_ended")
MAX_OUTAGE_MS = 24 * 3600 * 1000
MAX_EVENTS = 100_000
_TRUE = ("1", "yes", "true", "on")
_FALSE = ("0", "no", "false", "off")

#: counter names, in the order they are reported
COUNTERS = (
    "v1_engines_gets",      # GET /api/v1/engines, whatever the answer (404 included)
    "legacy_engines_gets",  # GET /engines
    "proxy_config_gets",    # GET /api/v1/proxy/config
    "stream_started",       # stream_started events recorded
    "stream_ended",         # stream_ended events recorded
    "events_rejected",      # event bodies that were not a JSON object (422)
    "unauthorized",         # API requests refused for a missing or wrong key (401)
    "outage_answers",       # API requests answered 500 or held by an outage
)


class OrchestratorError(ValueError):
    """A control input the orchestrator look-alike does not accept."""


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise OrchestratorError(f"{name} must be true or false, not {value!r}")


def _int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise OrchestratorError(f"{name} must be a whole number between {low} and {high}, not {value!r}")
    return value


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value.strip().lower() not in choices:
        raise OrchestratorError(f"{name} must be one of {', '.join(choices)}, not {value!r}")
    return value.strip().lower()


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= 200:
        raise OrchestratorError(f"{name} must be 1 to 200 characters")
    return value.strip()


def _nullable_count(name: str, value: Any) -> Optional[int]:
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "none", "events")):
        return None
    return _int(name, value, 0, 1_000_000)


#: fields of an engine record that can be set, and how each is checked
_FIELDS: Dict[str, Callable[[str, Any], Any]] = {
    "container_name": _text,
    "host": _text,
    "port": lambda name, value: _int(name, value, 1, 65535),
    "forwarded": _bool,
    "health_status": lambda name, value: _choice(name, value, HEALTH),
    "draining": _bool,
    "listed": _bool,
    "stream_count": _nullable_count,
}


@attr.s(auto_attribs=True, eq=False)
class OrchestratedEngine:
    """
    One engine record. C{listed} False hides it from the engine lists;
    C{stream_count} None means "count the streams from the events".
    """

    container_id: str
    host: str
    port: int
    container_name: str = ""
    forwarded: bool = False
    health_status: str = "healthy"
    draining: bool = False
    listed: bool = True
    stream_count: Optional[int] = None


@attr.s(auto_attribs=True, eq=False)
class ReceivedEvent:
    """One event as received: its kind, when, and the JSON body as sent."""

    seq: int
    kind: str
    time: float
    body: Dict[str, Any]

    def as_json(self) -> Dict[str, Any]:
        return {"seq": self.seq, "kind": self.kind, "time": self.time, "body": self.body}


@attr.s(auto_attribs=True, eq=False)
class OrchestratedStream:
    """A stream the orchestrator believes in, from a C{stream_started} event."""

    id: str
    container_id: Optional[str]
    content_id: Optional[str]
    key_type: Optional[str]
    key: Optional[str]
    playback_session_id: Optional[str]
    started_at: float
    ended_at: Optional[float] = None
    end_reason: Optional[str] = None

    @property
    def status(self) -> str:
        return "started" if self.ended_at is None else "ended"

    def as_json(self) -> Dict[str, Any]:
        return {"id": self.id, "container_id": self.container_id, "content_id": self.content_id,
                "key_type": self.key_type, "key": self.key, "playback_session_id": self.playback_session_id,
                "status": self.status, "started_at": self.started_at, "ended_at": self.ended_at,
                "end_reason": self.end_reason}


def _str_or_none(value: Any) -> Optional[str]:
    return value if isinstance(value, str) and value else None


def _section(body: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = body.get(name)
    return value if isinstance(value, Mapping) else {}


class Orchestrator:
    """
    The orchestrator look-alike's state.

    @ivar url: C{http://host:port} once it listens (set by whoever listens).
    @ivar engines: the engine records, in list order.
    @ivar raw_records: JSON objects appended verbatim to the engine lists (malformed records, for tests).
    @ivar events: every event received, in order.
    @ivar streams: every stream started, in order (ended ones stay, with C{ended_at}).
    @ivar v1_engines: how C{GET /api/v1/engines} answers (L{LIST_MODES}), C{wrapped} by default.
    @ivar legacy_engines: how C{GET /engines} answers, C{bare} by default.
    @ivar outage: None, or one of L{OUTAGES}.
    @ivar api_key: the key API requests must carry (C{X-API-Key} or C{Authorization: Bearer}); None: open.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, *, max_streams_per_engine: int = 2,
                 api_key: Optional[str] = None) -> None:
        self.clock = clock
        self.url = ""
        self.engines: List[OrchestratedEngine] = []
        self.raw_records: List[Dict[str, Any]] = []
        self.events: List[ReceivedEvent] = []
        self.streams: List[OrchestratedStream] = []
        self.v1_engines = "wrapped"
        self.legacy_engines = "bare"
        self.max_streams_per_engine = _int("max_streams_per_engine", max_streams_per_engine, 0, 100_000)
        self.api_key = api_key
        self.outage: Optional[str] = None
        self.counters: Dict[str, int] = {}
        self.reset_counters()
        self._seq = 0
        self._outage_call: Optional[IDelayedCall] = None
        self._outage_observers: List[Callable[[Optional[str]], None]] = []

    # -- engine records

    def engine(self, container_id: str) -> OrchestratedEngine:
        """The record with this C{container_id}; OrchestratorError if there is none."""
        for record in self.engines:
            if record.container_id == container_id:
                return record
        known = ", ".join(r.container_id for r in self.engines) or "none"
        raise OrchestratorError(f"no engine {container_id!r} (known: {known})")

    def add_engine(self, container_id: str, host: str, port: int, **fields: Any) -> OrchestratedEngine:
        """Add a record (at the end of the list); C{fields} as for L{set_engine}."""
        container_id = _text("container_id", container_id)
        if any(r.container_id == container_id for r in self.engines):
            raise OrchestratorError(f"engine {container_id!r} is already listed")
        checked = self.check_fields({"host": host, "port": port, **fields})
        record = OrchestratedEngine(container_id, checked.pop("host"), checked.pop("port"))
        if "container_name" not in checked:
            record.container_name = container_id
        for key, value in checked.items():
            setattr(record, key, value)
        self.engines.append(record)
        return record

    def remove_engine(self, container_id: str) -> None:
        """Drop a record (its streams stay counted, under its container_id)."""
        self.engines.remove(self.engine(container_id))

    def set_engine(self, container_id: str, **fields: Any) -> OrchestratedEngine:
        """
        Change a record: C{forwarded}, C{health_status} (healthy, unhealthy,
        unknown), C{draining}, C{listed} (False hides it), C{stream_count} (a
        fixed number, or None to count the events), C{host}, C{port},
        C{container_name}. Everything is checked before anything changes.
        """
        record = self.engine(container_id)
        for key, value in self.check_fields(fields).items():
            setattr(record, key, value)
        return record

    def check_fields(self, fields: Mapping[str, Any]) -> Dict[str, Any]:
        unknown = sorted(set(fields) - set(_FIELDS))
        if unknown:
            raise OrchestratorError(f"unknown engine field {', '.join(unknown)}; known: {', '.join(_FIELDS)}")
        return {key: _FIELDS[key](key, value) for key, value in fields.items()}

    def stream_count(self, container_id: str) -> int:
        """What the record says: its fixed C{stream_count}, else the streams started and not ended on it."""
        for record in self.engines:
            if record.container_id == container_id and record.stream_count is not None:
                return record.stream_count
        return sum(1 for s in self.streams if s.container_id == container_id and s.ended_at is None)

    def record_json(self, record: OrchestratedEngine) -> Dict[str, Any]:
        """The record as the orchestrator lists it: the fields clients use, and some they must ignore."""
        live = [s.id for s in self.streams if s.container_id == record.container_id and s.ended_at is None]
        return {
            "container_id": record.container_id,
            "container_name": record.container_name,
            "host": record.host,
            "port": record.port,
            "api_port": 62062,
            "labels": {"acestream.http_port": str(record.port), "host.http_port": str(record.port),
                       "acestream.forwarded": "true" if record.forwarded else "false",
                       "acestream.engine_variant": "acetwist-sim"},
            "forwarded": record.forwarded,
            "health_status": record.health_status,
            "draining": record.draining,
            "drain_reason": "sim" if record.draining else None,
            "stream_count": self.stream_count(record.container_id),
            "streams": live,
            "first_seen": "2026-01-01T00:00:00Z",
            "last_seen": "2026-01-01T00:00:00Z",
            "last_health_check": "2026-01-01T00:00:00Z",
            "engine_variant": "acetwist-sim",
            "platform": "linux",
            "version": "3.2.3",
            "forwarded_port": 51413 if record.forwarded else None,
            "vpn_container": None,
            "total_peers": 0,
            "total_speed_down": 0,
            "total_speed_up": 0,
            "cpu_percent": 0.0,
            "memory_usage": 0,
        }

    def listing(self) -> List[Dict[str, Any]]:
        """The engine list: every listed record, then the raw records."""
        return [self.record_json(r) for r in self.engines if r.listed] + [dict(r) for r in self.raw_records]

    def engines_document(self, shape: str) -> Union[List[Dict[str, Any]], Dict[str, Any]]:
        """The list in C{shape}: C{wrapped} (C{{"engines": [...], "total": n}}) or C{bare}."""
        records = self.listing()
        return {"engines": records, "total": len(records)} if shape == "wrapped" else records

    def proxy_config(self) -> Dict[str, Any]:
        return {"max_streams_per_engine": self.max_streams_per_engine, "stream_mode": "TS",
                "control_mode": "http", "proxy_prebuffer_seconds": 3}

    # -- switches

    def configure(self, **settings: Any) -> None:
        """
        Change C{v1_engines} and C{legacy_engines} (wrapped, bare or 404) and
        C{max_streams_per_engine} (0 or more); everything is checked first.
        """
        checked: Dict[str, Any] = {}
        for key, value in settings.items():
            if key in ("v1_engines", "legacy_engines"):
                checked[key] = _choice(key, value, LIST_MODES)
            elif key == "max_streams_per_engine":
                checked[key] = _int(key, value, 0, 100_000)
            else:
                raise OrchestratorError(f"unknown setting {key!r}; known: v1_engines, legacy_engines, "
                                        "max_streams_per_engine")
        for key, value in checked.items():
            setattr(self, key, value)

    def settings(self) -> Dict[str, Any]:
        return {"v1_engines": self.v1_engines, "legacy_engines": self.legacy_engines,
                "max_streams_per_engine": self.max_streams_per_engine, "outage": self.outage,
                "api_key_required": self.api_key is not None}

    def set_outage(self, mode: Optional[str], ms: Optional[int] = None) -> None:
        """
        Start an outage (C{500}, C{hang} or C{refuse}), ending by itself after
        C{ms} when given; None ends the outage. Held requests are answered
        when it ends.
        """
        checked = None if mode is None else _choice("mode", str(mode), OUTAGES)
        duration = None if ms is None else _int("ms", ms, 1, MAX_OUTAGE_MS)
        if checked is None and duration is not None:
            raise OrchestratorError("ms needs an outage mode")
        self._cancel_outage_call()
        if duration is not None:
            self._outage_call = self.clock.callLater(duration / 1000, self._outage_over)
        if checked != self.outage:
            self.outage = checked
            self.log.info("orchestrator outage: {mode}", mode=checked or "over")
            for observer in list(self._outage_observers):
                observer(checked)

    def clear_outage(self) -> None:
        self.set_outage(None)

    def _outage_over(self) -> None:
        self._outage_call = None
        self.set_outage(None)

    def _cancel_outage_call(self) -> None:
        if self._outage_call is not None and self._outage_call.active():
            self._outage_call.cancel()
        self._outage_call = None

    def add_outage_observer(self, observer: Callable[[Optional[str]], None]) -> None:
        """Call C{observer(mode)} when the outage starts, changes or ends (mode None)."""
        self._outage_observers.append(observer)

    def authorized(self, api_key: Optional[str], authorization: Optional[str]) -> bool:
        """Whether a request with these C{X-API-Key} and C{Authorization} headers may use the API."""
        if self.api_key is None:
            return True
        expected = self.api_key.encode("utf-8")
        offered = [api_key or ""]
        if authorization and authorization.lower().startswith("bearer "):
            offered.append(authorization[7:].strip())
        return any(hmac.compare_digest(value.encode("utf-8"), expected) for value in offered if value)

    # -- events

    def receive(self, kind: str, body: Any) -> Dict[str, Any]:
        """
        Record event C{kind} with its JSON C{body} and update the streams;
        the reply the real orchestrator would give. A body that is not a
        JSON object raises OrchestratorError (and is not recorded).
        """
        if kind not in EVENT_KINDS:
            raise OrchestratorError(f"unknown event {kind!r}")
        if not isinstance(body, dict):
            self.counters["events_rejected"] += 1
            raise OrchestratorError("the event body must be a JSON object")
        if len(self.events) >= MAX_EVENTS:
            del self.events[: MAX_EVENTS // 10]
        self._seq += 1
        now = self.clock.seconds()
        self.events.append(ReceivedEvent(self._seq, kind, now, body))
        self.counters[kind] += 1
        self.log.info("event {kind}: {body}", kind=kind, body=body)
        if kind == "stream_started":
            return self._started(body, now).as_json()
        ended = self._ended(body, now)
        return {"updated": ended is not None, "stream": None if ended is None else ended.as_json()}

    def _started(self, body: Mapping[str, Any], now: float) -> OrchestratedStream:
        stream, session, labels = _section(body, "stream"), _section(body, "session"), _section(body, "labels")
        key = _str_or_none(stream.get("key")) or _str_or_none(body.get("content_id"))
        session_id = _str_or_none(session.get("playback_session_id"))
        stream_id = _str_or_none(labels.get("stream_id")) or f"{key}|{session_id or self._seq}"
        record = OrchestratedStream(stream_id, _str_or_none(body.get("container_id")),
                                    _str_or_none(body.get("content_id")) or key,
                                    _str_or_none(stream.get("key_type")), key, session_id, now)
        self.streams.append(record)
        return record

    def _ended(self, body: Mapping[str, Any], now: float) -> Optional[OrchestratedStream]:
        container_id = _str_or_none(body.get("container_id"))
        stream_id = _str_or_none(body.get("stream_id"))
        content_id = _str_or_none(body.get("content_id"))
        live = [s for s in self.streams if s.ended_at is None]
        if stream_id is not None:
            candidates = [s for s in live if s.id == stream_id]
        elif container_id is None:
            candidates = []  # the orchestrator counts load only when container_id is given
        else:
            candidates = [s for s in live if s.container_id == container_id]
            same = [s for s in candidates if content_id is not None and content_id in (s.content_id, s.key)]
            candidates = same or candidates
        if not candidates:
            return None
        ended = candidates[-1]
        ended.ended_at = now
        ended.end_reason = _str_or_none(body.get("reason"))
        return ended

    def events_of(self, kind: Optional[str] = None) -> List[Dict[str, Any]]:
        """The bodies of the events received (of C{kind} only when given), in order."""
        return [e.body for e in self.events if kind is None or e.kind == kind]

    def clear_events(self) -> int:
        """Forget the event log (the streams stay counted). Returns how many were forgotten."""
        count = len(self.events)
        self.events.clear()
        return count

    def reset_counters(self) -> None:
        self.counters = {name: 0 for name in COUNTERS}

    # -- lifetime

    def shutdown(self) -> None:
        """Cancel the outage timer."""
        self._cancel_outage_call()

    def describe(self) -> Dict[str, Any]:
        return {
            "url": self.url,
            "settings": self.settings(),
            "engines": [self.engine_json(r) for r in self.engines],
            "raw_records": len(self.raw_records),
            "events": len(self.events),
            "streams_started": sum(1 for s in self.streams if s.ended_at is None),
            "counters": dict(self.counters),
        }

    def engine_json(self, record: OrchestratedEngine) -> Dict[str, Any]:
        """The record as the control API shows it (hidden ones too, with how stream_count is made)."""
        return {"container_id": record.container_id, "container_name": record.container_name, "host": record.host,
                "port": record.port, "forwarded": record.forwarded, "health_status": record.health_status,
                "draining": record.draining, "listed": record.listed,
                "stream_count": self.stream_count(record.container_id),
                "stream_count_fixed": record.stream_count is not None}
