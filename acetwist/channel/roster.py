"""
A channel's players: their sinks and who they are, their records in the
cluster, the delivery heartbeat, totals, and moving players to another
channel.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, Dict, Iterator, List, Optional

import attr
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from acetwist.errors import EngineError
from acetwist.interfaces import ClientRecord, ICoordinator, ISink


@attr.s(auto_attribs=True)
class ClientInfo:
    """Who a sink serves."""

    client_id: str
    ip: str
    user_agent: str
    connected_at: float


def new_client_id() -> str:
    return uuid.uuid4().hex


class Roster:
    """
    The players of one stream key. C{on_empty} is called when the last one
    leaves, C{on_occupied} when one joins.
    """

    log = Logger()

    def __init__(self, key: str, coordinator: ICoordinator, clock: IReactorTime,
                 on_occupied: Callable[[], None], on_empty: Callable[[], None]) -> None:
        self.key = key
        self.coordinator = coordinator
        self.clock = clock
        self.on_occupied = on_occupied
        self.on_empty = on_empty
        self.sinks: Dict[ISink, ClientInfo] = {}
        self.departed_bytes_out = 0
        self.departed_skips = 0
        self._reported_bytes: Dict[ISink, int] = {}

    def __len__(self) -> int:
        return len(self.sinks)

    def __iter__(self) -> Iterator[ISink]:
        return iter(list(self.sinks))

    def add(self, sink: ISink, info: ClientInfo) -> None:
        """Attach a player's sink; it starts at the newest keyframe (or waits for one)."""
        self.sinks[sink] = info
        self.on_occupied()
        # recorded before start(): a sink that closes inside start() then leaves no ghost record
        self.coordinator.client_joined(self.record(sink, info))
        sink.start()

    def remove(self, sink: ISink, reason: str = "") -> None:
        info = self.sinks.pop(sink, None)
        if info is None:
            return
        self._account(sink)
        self.coordinator.client_left(self.record(sink, info))
        self.log.info("player {ip} left {key}: {reason}", ip=info.ip, key=self.key, reason=reason)
        if not self.sinks:
            self.on_empty()

    def move_to(self, other: "Roster", ring: Any, on_close: Callable[[Any, str], None]) -> None:
        """Hand every player to C{other}: their records move to its stream key, their sinks to its ring."""
        for sink, info in list(self.sinks.items()):
            del self.sinks[sink]
            self._account(sink)
            self.coordinator.client_left(self.record(sink, info))
            sink.rebind(ring, on_close)
            other.add(sink, info)

    def end(self, error: Optional[EngineError]) -> None:
        """The channel ended: players with data are finished cleanly (or failed with C{error}); waiting ones get it."""
        for sink in list(self.sinks):
            if error is not None:
                sink.fail(error)
            elif sink.started:
                sink.finish()
            else:
                sink.fail(EngineError(503, "channel stopped", retry_after=1))
        self.sinks.clear()

    def heartbeat(self, waiting_for_upstream: bool = False) -> None:
        """
        Refresh the cluster's records of players that got data since the last
        beat; while the upstream is away (C{waiting_for_upstream}) every
        connected player's, since none can get data then.
        """
        for sink, info in list(self.sinks.items()):
            sent = sink.bytes_sent
            if waiting_for_upstream or sent != self._reported_bytes.get(sink):
                self._reported_bytes[sink] = sent
                self.coordinator.client_progress(self.record(sink, info))

    def record(self, sink: ISink, info: ClientInfo) -> ClientRecord:
        return ClientRecord(
            client_id=info.client_id,
            stream_key=self.key,
            worker=self.coordinator.worker_id,
            ip=info.ip,
            user_agent=info.user_agent,
            connected_at=info.connected_at,
            bytes_sent=getattr(sink, "bytes_sent", 0),
        )

    def bytes_out(self) -> int:
        return self.departed_bytes_out + sum(sink.bytes_sent for sink in self.sinks)

    def skips(self) -> int:
        return self.departed_skips + sum(sink.skips for sink in self.sinks)

    def status(self) -> List[Dict[str, Any]]:
        now = self.clock.seconds()
        return [
            {
                "id": info.client_id,
                "kind": getattr(sink, "kind", "ts"),
                "ip": info.ip,
                "user_agent": info.user_agent,
                "connected_at": info.connected_at,
                "connected_for": round(now - info.connected_at, 3),
                "bytes_sent": sink.bytes_sent,
                "queue_bytes": sink.lag_bytes,
                "skips": sink.skips,
                "paused": sink.paused,
                "started": sink.started,
                **({"last_request": sink.last_request} if hasattr(sink, "last_request") else {}),
            }
            for sink, info in self.sinks.items()
        ]

    def _account(self, sink: ISink) -> None:
        self.departed_bytes_out += sink.bytes_sent
        self.departed_skips += sink.skips
        self._reported_bytes.pop(sink, None)
