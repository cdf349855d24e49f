# -*- test-case-name: tests.test_engine_pool_sources -*-
"""
Where the pool's engines come from: a static list of URLs
(L{StaticSource}) or an acestream-orchestrator (L{OrchestratorSource}),
read every C{interval}; when it cannot be read, the last good list stays.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from acetwist.engines.api import EngineRecord
from acetwist.engines.http import CallFailed, JsonHTTP, Reply

log = Logger()

#: the orchestrator's engine list: the current API, then the legacy one (tried when the first answers 404)
LIST_PATHS = ("/api/v1/engines", "/engines")
#: where the orchestrator's default capacity is
CONFIG_PATH = "/api/v1/proxy/config"
#: events go under the same root as the list that answered
EVENT_PATHS = {"/api/v1/engines": "/api/v1/events/", "/engines": "/events/"}

OnList = Callable[[List[EngineRecord]], None]


def engine_url(host: str, port: int, scheme: str = "http") -> str:
    """C{scheme://host:port}, with an IPv6 address in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def _int(value: Any) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def parse_engine(item: Any) -> Tuple[Optional[EngineRecord], Optional[str]]:
    """One list item as a record, or None and why it was skipped."""
    if not isinstance(item, dict):
        return None, f"an item that is not an object: {str(item)[:60]!r}"
    cid, host, port = item.get("container_id"), item.get("host"), _int(item.get("port"))
    name = str(item.get("container_name") or "")
    if not cid or not isinstance(cid, str) or not host or not isinstance(host, str) or port is None \
            or not 0 < port < 65536:
        what = cid or name or "?"
        return None, f"engine {what!s:.40} has no usable container_id, host or port"
    health = item.get("health_status")
    count = _int(item.get("stream_count"))
    if count is None:
        streams = item.get("streams")
        count = len(streams) if isinstance(streams, list) else 0
    return EngineRecord(
        id=cid,
        url=engine_url(host, port),
        name=name,
        forwarded=_bool(item.get("forwarded", False)),
        orchestrator_health=health if health in ("healthy", "unhealthy", "unknown") else "unknown",
        draining=_bool(item.get("draining", False)),
        stream_count=max(0, count),
    ), None


def parse_engine_list(document: Any) -> Tuple[List[EngineRecord], List[str]]:
    """
    The orchestrator's list: a bare JSON array or C{{"engines": [...], "total": n}}.
    Returns the usable records and why others were skipped; raises
    L{ValueError} when the document is neither shape.
    """
    items = document.get("engines") if isinstance(document, dict) else document
    if not isinstance(items, list):
        raise ValueError("the engine list is neither a JSON array nor {\"engines\": [...]}")
    records: List[EngineRecord] = []
    problems: List[str] = []
    seen: Set[str] = set()
    for item in items:
        record, problem = parse_engine(item)
        if record is not None and record.id in seen:
            problem = f"engine {record.id:.40} is listed twice"
            record = None
        if record is None:
            problems.append(problem or "unusable item")
            continue
        seen.add(record.id)
        records.append(record)
    return records, problems


class StaticSource:
    """The engines given with C{--engine}: each one's id is its URL; always healthy as far as a list can tell."""

    def __init__(self, urls: Sequence[str]) -> None:
        self.records = [EngineRecord(id=url, url=url) for url in urls]
        self.capacity: Optional[int] = None
        self.events_base: Optional[str] = None

    def start(self, on_list: OnList) -> None:
        on_list(list(self.records))

    def stop(self) -> None:
        pass

    def when_read(self) -> "Deferred[None]":
        """Fires once the list was first read (at once: it is given)."""
        return succeed(None)

    def status(self) -> Dict[str, Any]:
        return {"kind": "static", "engines": len(self.records)}


class OrchestratorSource:
    """
    The orchestrator's engine list, read every C{interval}: C{GET
    {url}/api/v1/engines} (C{GET {url}/engines} when that answers 404), and
    C{GET {url}/api/v1/proxy/config} for C{max_streams_per_engine}. When the
    list cannot be read, the last good one stays (logged once per outage, and
    in L{status}).

    @ivar capacity: the orchestrator's C{max_streams_per_engine}, or None until known.
    @ivar events_base: where events go (C{{url}/api/v1/events/} or, with the legacy list, C{{url}/events/}).
    """

    def __init__(self, url: str, http: JsonHTTP, clock: IReactorTime, interval: float,
                 timeout: float = 5.0) -> None:
        self.url = url.rstrip("/")
        self.http = http
        self.clock = clock
        self.interval = interval
        self.timeout = min(timeout, interval) if interval > 0 else timeout
        self.capacity: Optional[int] = None
        self.records: List[EngineRecord] = []
        self.path = LIST_PATHS[0]
        self.ok: Optional[bool] = None
        self.last_ok: Optional[float] = None
        self.last_error: Optional[str] = None
        self.reads = 0
        self.failures = 0
        self._problems: Set[str] = set()
        self._loop: Optional[LoopingCall] = None
        self._on_list: Optional[OnList] = None
        self._reading: Optional[Deferred[None]] = None
        self._stopped = False
        self._waiting: List[Deferred[None]] = []

    @property
    def events_base(self) -> str:
        return self.url + EVENT_PATHS[self.path]

    def when_read(self) -> "Deferred[None]":
        """Fires once the first read ended (with a list or not), at once after that."""
        if self.reads or self.failures or self._loop is None:
            return succeed(None)  # read already, or not reading (not started, or stopped)
        d: Deferred[None] = Deferred(lambda d: self._waiting.remove(d) if d in self._waiting else None)
        self._waiting.append(d)
        return d

    def _read_done(self) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def start(self, on_list: OnList) -> None:
        self._on_list = on_list
        self._loop = LoopingCall(self.refresh)
        self._loop.clock = self.clock
        self._loop.start(self.interval, now=True)

    def stop(self) -> None:
        self._stopped = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._reading is not None:
            self._reading.cancel()
        self._read_done()

    def refresh(self) -> "Deferred[None]":
        """Read the list and the config once (a read still going is not doubled)."""
        if self._reading is not None or self._stopped:
            return Deferred.fromCoroutine(self._noop())
        d = self._reading = Deferred.fromCoroutine(self._refresh())

        def done(result: Any) -> None:
            self._reading = None
            if isinstance(result, Failure) and not result.check(CancelledError):
                log.failure("orchestrator: reading the engine list", result)

        return d.addBoth(done)

    async def _noop(self) -> None:
        return None

    async def _refresh(self) -> None:
        try:
            try:
                await self._read_list()
            except CallFailed as e:
                if self._stopped:
                    return
                self._failed(e.why)
            if not self._stopped:
                await self._read_config()
        finally:
            self._read_done()

    async def _read_list(self) -> None:
        reply = await self._get(self.path)
        if reply.code == 404:
            other = LIST_PATHS[1] if self.path == LIST_PATHS[0] else LIST_PATHS[0]
            reply2 = await self._get(other)
            if reply2.code == 200:
                log.info("orchestrator: {path} answered 404; reading the engines from {other}",
                         path=self.path, other=other)
                self.path, reply = other, reply2
        if reply.code != 200:
            raise CallFailed(f"HTTP {reply.code} from {self.path}")
        try:
            records, problems = parse_engine_list(reply.document)
        except ValueError as e:
            raise CallFailed(str(e)) from None
        for problem in sorted(set(problems) - self._problems):
            log.warn("orchestrator: skipping {problem}", problem=problem)
        self._problems = set(problems)
        if self.ok is False:
            log.info("orchestrator: engine list read again ({n} engines)", n=len(records))
        self.reads += 1
        self.ok, self.last_ok, self.last_error = True, float(self.clock.seconds()), None
        self.records = records
        if self._on_list is not None:
            self._on_list(list(records))

    def _failed(self, why: str) -> None:
        self.failures += 1
        if self.ok is not False:
            log.warn("orchestrator: cannot read the engine list ({why}); keeping the last one ({n} engines)",
                     why=why, n=len(self.records))
        self.ok, self.last_error = False, why

    async def _read_config(self) -> None:
        try:
            reply = await self._get(CONFIG_PATH)
        except CallFailed:
            return
        document = reply.document
        value = _int(document.get("max_streams_per_engine")) if isinstance(document, dict) else None
        if reply.code == 200 and value is not None and value != self.capacity:
            log.info("orchestrator: max_streams_per_engine is {n}", n=value)
            self.capacity = value

    def _get(self, path: str) -> "Deferred[Reply]":
        return self.http.get(self.url + path, self.timeout)

    def status(self) -> Dict[str, Any]:
        return {
            "kind": "orchestrator",
            "url": self.url,
            "path": self.path,
            "ok": self.ok,
            "stale": self.ok is False,
            "last_ok": self.last_ok,
            "last_error": self.last_error,
            "engines": len(self.records),
            "skipped": sorted(self._problems),
            "max_streams_per_engine": self.capacity,
            "reads": self.reads,
            "failures": self.failures,
        }
