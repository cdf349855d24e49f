# -*- test-case-name: tests.test_sim_engine -*-
"""
The simulated engine's state: contents, sessions (one per content), injected
faults and counters. The clock is injected; nothing here speaks HTTP.

Session rules (engine-api-and-peers.md, A.8):

 - one live session per content: a new start call supersedes the old session;
 - the session exists from the moment the start call arrives;
 - C{stop} ends it once; stat and commands then answer "unknown playback
   session id";
 - a session with no request on it for C{idle_timeout} seconds expires
   (a stat poll counts as activity unless C{stat_keeps_alive} is off).
"""

from __future__ import annotations

import random
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Optional, Set, Union

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from acetwist.sim import faults as faultlib
from acetwist.sim.config import SimConfig
from acetwist.sim.contents import Catalog, Content
from acetwist.sim.faults import Fault, FaultError
from acetwist.sim.session import Hold, Session
from acetwist.sim.tsgen import GopTemplate, gop_template

ContentRef = Union[Content, str, None]
_TOMBSTONES = 10_000

#: Counter names, in the order they are reported. Per-content counters are
#: dicts keyed by content id; the rest are integers.
COUNTERS = (
    "json_calls",               # {content_id: n} start calls with format=json, on arrival
    "redirect_calls",           # {content_id: n} start calls without format=json, on arrival
    "unknown_content_calls",    # start calls that name no known content (or none at all)
    "start_errors",             # start calls answered with an error or garbage (any cause)
    "sessions_opened",
    "sessions_superseded",      # ended because a new start call for the same content arrived
    "sessions_stopped",         # ended by command_url?method=stop
    "sessions_expired",         # ended by idle expiry
    "sessions_forgotten",       # ended by a simulated engine restart
    "stop_calls",               # every command_url?method=stop, on arrival (even if it then hangs)
    "stops_unknown",            # stop calls for an unknown, stopped or superseded session
    "stat_calls",
    "stats_unknown",
    "command_calls",            # every command_url call, stop included
    "playback_gets",            # GET of a progressive playback_url (/ace/r/...)
    "encrypted_refusals",       # playback GETs of an encrypted content's TS URL, answered 500
    "content_gets",             # GET of the /content/... URL the playback_url redirects to
    "concurrent_reader_rejections",  # a second reader got the corrupt double status line
    "hls_playlist_gets",
    "hls_segment_gets",
    "bytes_sent",               # progressive TS body bytes
    "hls_bytes_sent",           # HLS segment bytes
    "faults_triggered",         # {fault name: n}
    "restarts",
)
_PER_KEY = ("json_calls", "redirect_calls", "faults_triggered")


class Counters:
    """Plain counters; C{snapshot()} also reports the gauges C{sessions_live} and C{live_readers}."""

    def __init__(self, gauges: Callable[[], Dict[str, int]]) -> None:
        self._gauges = gauges
        self.reset()

    def reset(self) -> None:
        self.values: Dict[str, Any] = {name: ({} if name in _PER_KEY else 0) for name in COUNTERS}

    def add(self, name: str, amount: int = 1) -> None:
        self.values[name] += amount

    def add_keyed(self, name: str, key: str, amount: int = 1) -> None:
        table = self.values[name]
        table[key] = table.get(key, 0) + amount

    def __getitem__(self, name: str) -> Any:
        return self.snapshot()[name]

    def snapshot(self) -> Dict[str, Any]:
        result = {name: (dict(value) if isinstance(value, dict) else value) for name, value in self.values.items()}
        result.update(self._gauges())
        return result


class Engine:
    """
    @ivar sessions: the live session of each content, by infohash.
    @ivar holds: every request in progress that the engine may have to cut.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, config: Optional[SimConfig] = None,
                 rng: Optional[random.Random] = None, name: str = "") -> None:
        self.clock = clock
        #: the engine's name in logs and in the orchestrator's list (several engines in one process)
        self.name = name
        if name:
            self.log = Logger(namespace=f"acetwist.sim.engine.{name}")
        self.config = config or SimConfig()
        self.catalog = Catalog(self.config.contents)
        #: infohashes of the contents served only as HLS (C{is_encrypted: 1})
        self.encrypted: Set[str] = {c.infohash for c in self.config.encrypted_contents()}
        self.template: GopTemplate = gop_template(self.config.bitrate, self.config.gop)
        self.rng = rng or random.SystemRandom()
        self.sessions: Dict[str, Session] = {}
        self.holds: Set[Hold] = set()
        self.faults: List[Fault] = []
        self.counters = Counters(self._gauges)
        self._tombstones: "OrderedDict[str, str]" = OrderedDict()
        self._fault_ids = 0
        self._fault_calls: Dict[int, IDelayedCall] = {}
        self._down_observers: List[Callable[[Fault, bool], None]] = []
        for name, content, params in self.config.faults:
            self.set_fault(name, content=content, **params)

    def _gauges(self) -> Dict[str, int]:
        readers = sum(1 for s in self.sessions.values() if s.stream_reader is not None)
        return {"sessions_live": len(self.sessions), "live_readers": readers}

    # -- sessions

    def _hex(self, digits: int) -> str:
        return "%0*x" % (digits, self.rng.getrandbits(digits * 4))

    def start_session(self, content: Content, *, kind: str = "ts", pid: Optional[str] = None,
                      client_session_id: int = -1, events: bool = False) -> Session:
        """Open a session for C{content}, superseding the one it had."""
        old = self.sessions.get(content.infohash)
        if old is not None:
            self.counters.add("sessions_superseded")
            self._end(old, "superseded")
        session = Session(self, content, kind=kind, token=self._hex(32), playback_session_id=self._hex(40),
                          content_key="0.%012d" % self.rng.randrange(10**11, 10**12), pid=pid,
                          client_session_id=client_session_id, events=events)
        self.sessions[content.infohash] = session
        self.counters.add("sessions_opened")
        self.log.info("session opened: {content} token={token} pid={pid} kind={kind}",
                      content=content.name, token=session.token, pid=pid, kind=kind)
        return session

    def is_encrypted(self, content: Content) -> bool:
        """C{content} is served only as HLS: its TS playback URL refuses, its replies say C{is_encrypted: 1}."""
        return content.infohash in self.encrypted

    def set_encrypted(self, content: ContentRef, encrypted: bool = True) -> None:
        """Make C{content} (a Content, name, content id or infohash) encrypted or not, from now on."""
        target = self.resolve(content)
        if target is None:
            raise FaultError("set_encrypted needs a content")
        if encrypted:
            self.encrypted.add(target.infohash)
        else:
            self.encrypted.discard(target.infohash)

    def find_session(self, infohash: str, token: str) -> Optional[Session]:
        session = self.sessions.get(infohash)
        return session if session is not None and session.token == token else None

    def find_session_by_key(self, infohash: str, content_key: str) -> Optional[Session]:
        session = self.sessions.get(infohash)
        return session if session is not None and session.content_key == content_key else None

    def ended_reason(self, token_or_key: str) -> Optional[str]:
        """Why a recently known session ended (superseded, stopped, expired), or None if never known."""
        return self._tombstones.get(token_or_key)

    def stop(self, session: Session) -> None:
        self.counters.add("sessions_stopped")
        self._end(session, "stopped")

    def expire(self, session: Session) -> None:
        self.counters.add("sessions_expired")
        self._end(session, "expired")

    def _end(self, session: Session, reason: str) -> None:
        if self.sessions.get(session.content.infohash) is session:
            del self.sessions[session.content.infohash]
        if reason != "forgotten":
            for key in (session.token, session.content_key):
                self._tombstones[key] = reason
            while len(self._tombstones) > _TOMBSTONES:
                self._tombstones.popitem(last=False)
        self.log.info("session {reason}: {content} token={token}", reason=reason,
                      content=session.content.name, token=session.token)
        session.end(reason)

    def restart(self, down_ms: int = 0, down_mode: str = "refuse") -> None:
        """Forget every session as a restarted engine would; optionally be down for C{down_ms}."""
        if down_ms:
            faultlib.validate("down", {"mode": down_mode, "ms": down_ms})
        self.counters.add("restarts")
        sessions = list(self.sessions.values())
        self.counters.add("sessions_forgotten", len(sessions))
        for session in sessions:
            self._end(session, "forgotten")
        self._tombstones.clear()
        self.log.info("engine restart: {count} sessions forgotten", count=len(sessions))
        if down_ms:
            self.set_fault("down", mode=down_mode, ms=down_ms)

    # -- faults

    def resolve(self, content: ContentRef) -> Optional[Content]:
        """A Content from a Content, a name, a content id or an infohash; None stays None."""
        if content is None or isinstance(content, Content):
            return content
        found = self.catalog.find(str(content))
        if found is None:
            names = ", ".join(c.name for c in self.catalog)
            raise FaultError(f"no content {content!r} (give a name, content id or infohash; known: {names})")
        return found

    def set_fault(self, name: str, content: ContentRef = None, **params: Any) -> Fault:
        """
        Inject fault C{name} for C{content} (or engine-wide with None),
        replacing the same fault in the same scope. Raises FaultError.
        """
        target = self.resolve(content)
        checked = faultlib.validate(name, params)
        faultlib.check_scope(name, checked, target)
        for old in [f for f in self.faults if f.name == name and f.content == target]:
            self._remove_fault(old)
        self._fault_ids += 1
        fault = Fault(self._fault_ids, name, target, checked, self.clock.seconds())
        self.faults.append(fault)
        self.log.info("fault set: {fault}", fault=fault.as_json())
        if name == "down" and "ms" in checked:
            self._fault_calls[fault.id] = self.clock.callLater(checked["ms"] / 1000, self._expire_fault, fault)
        if name == "restart":
            self._fault_calls[fault.id] = self.clock.callLater(checked["every_ms"] / 1000, self._periodic_restart, fault)
        self._faults_changed(fault, added=True)
        return fault

    def clear_faults(self, name: Optional[str] = None, content: ContentRef = "*") -> int:
        """Remove faults matching C{name} (all when None) and C{content} (any scope with "*"). Returns the count."""
        target = None if content == "*" else self.resolve(content)
        if name is not None and name not in faultlib.FAULTS:
            raise FaultError(f"unknown fault {name!r}; known: {', '.join(sorted(faultlib.FAULTS))}")
        matching = [f for f in self.faults
                    if (name is None or f.name == name) and (content == "*" or f.content == target)]
        for fault in matching:
            self._remove_fault(fault)
        return len(matching)

    def fault(self, name: str, content: Optional[Content]) -> Optional[Fault]:
        """The fault C{name} that applies to C{content}: its own first, else the engine-wide one."""
        fallback = None
        for fault in self.faults:
            if fault.name == name:
                if fault.content is not None and fault.content == content:
                    return fault
                if fault.content is None:
                    fallback = fault
        return fallback

    def trigger(self, fault: Fault) -> None:
        """Count one use of C{fault}; remove it when its C{times} are used up."""
        fault.triggered += 1
        self.counters.add_keyed("faults_triggered", fault.name)
        if fault.remaining == 0:
            self._remove_fault(fault)

    def _periodic_restart(self, fault: Fault) -> None:
        self._fault_calls.pop(fault.id, None)
        params = fault.params
        self.trigger(fault)
        if fault.content is None:
            self.restart(down_ms=params["down_ms"], down_mode=params["down_mode"])
        else:
            session = self.sessions.get(fault.content.infohash)
            if session is not None:
                self.counters.add("sessions_forgotten")
                self._end(session, "forgotten")
        if fault in self.faults:
            self._fault_calls[fault.id] = self.clock.callLater(params["every_ms"] / 1000, self._periodic_restart, fault)

    def _expire_fault(self, fault: Fault) -> None:
        self._fault_calls.pop(fault.id, None)
        self._remove_fault(fault)

    def _remove_fault(self, fault: Fault) -> None:
        if fault not in self.faults:
            return
        self.faults.remove(fault)
        call = self._fault_calls.pop(fault.id, None)
        if call is not None and call.active():
            call.cancel()
        self.log.info("fault cleared: {fault}", fault=fault.as_json())
        self._faults_changed(fault, added=False)

    def _faults_changed(self, fault: Fault, added: bool) -> None:
        now = self.clock.seconds()
        for session in list(self.sessions.values()):
            session.refresh(now)
        if fault.name == "down":
            if added:
                for hold in [h for h in self.holds if fault.content is None or h.content == fault.content]:
                    hold.abort()
            for observer in list(self._down_observers):
                observer(fault, added)

    def add_down_observer(self, observer: Callable[[Fault, bool], None]) -> None:
        """Call C{observer(fault, active)} when a C{down} fault is set or cleared."""
        self._down_observers.append(observer)

    # -- fault queries used by the web layer

    def down_mode(self, content: Optional[Content]) -> Optional[str]:
        fault = self.fault("down", content)
        return None if fault is None else fault.params["mode"]

    def stalled(self, content: Optional[Content]) -> bool:
        return self.fault("stall", content) is not None

    # -- lifetime

    def shutdown(self) -> None:
        """Cancel every timer and cut every request (the simulator is stopping)."""
        for call in self._fault_calls.values():
            if call.active():
                call.cancel()
        self._fault_calls.clear()
        for session in list(self.sessions.values()):
            session.end("shutdown")
        self.sessions.clear()
        for hold in list(self.holds):
            hold.abort()
        self.holds.clear()

    def describe(self) -> Dict[str, Any]:
        now = self.clock.seconds()
        return {
            "config": self.config.describe(),
            "contents": [c.as_json() for c in self.catalog],
            "sessions": [s.as_json(now) for s in self.sessions.values()],
            "faults": [f.as_json() for f in self.faults],
        }
