# -*- test-case-name: tests.test_coord_redis,tests.test_coord_contract -*-
"""
L{RedisPlayers}: one worker's player records in Redis, and the cluster's
player counts. A record is written when its player joins, then at most once
per C{progress_interval} (re-creating it if Redis lost it), and deleted when
it leaves. A count is refused (L{CountUnknown}) when Redis's records may be
incomplete; L{count_doubt} says when.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import attr
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

from acetwist.coord import scripts
from acetwist.coord.base import CountUnknown, record_dict
from acetwist.coord.commands import Commands
from acetwist.coord.keys import Keys
from acetwist.coord.link import Link
from acetwist.coord.settings import RedisSettings
from acetwist.interfaces import ClientRecord


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def count_doubt(settings: RedisSettings, age_ms: int, since_reconnect: Optional[float]) -> Optional[str]:
    """
    Why a player count cannot be trusted, or None: C{age_ms} is how long
    Redis has held the cluster's records (-1: the marker was missing),
    C{since_reconnect} how long ago this worker's link came back (None:
    never lost).
    """
    if age_ms < 0:
        why = "Redis held no player records of the cluster (restarted, flushed or unreached) until now"
    elif age_ms < _ms(settings.client_ttl):
        why = f"Redis has held the cluster's player records for only {age_ms / 1000:.1f} s"
    elif since_reconnect is not None and since_reconnect < settings.settle_after_reconnect:
        return (f"this worker reconnected to Redis {since_reconnect:.1f} s ago; counts are trusted "
                f"{settings.settle_after_reconnect:g} s after a reconnection")
    else:
        return None
    return f"{why}; counts are trusted once it has for client_ttl ({settings.client_ttl:g} s)"


class RedisPlayers:
    """
    This worker's players in Redis (see the module docstring).

    @ivar records: this worker's players by client id (the latest record of each).
    """

    def __init__(self, commands: Commands, keys: Keys, settings: RedisSettings, reactor: IReactorTime,
                 link: Link) -> None:
        self._commands = commands
        self.keys = keys
        self.settings = settings
        self.reactor = reactor
        self._link = link
        self.records: Dict[str, ClientRecord] = {}
        self._written: Dict[str, float] = {}

    def keys_of_all(self) -> List[str]:
        """Every key of this worker's players (their records and their streams' sets)."""
        player_keys: List[str] = []
        for record in self.records.values():
            player_keys += [self.keys.client(record.client_id), self.keys.clients(record.stream_key)]
        return player_keys

    def clear(self) -> None:
        self.records.clear()
        self._written.clear()

    def _write(self, what: str, record: ClientRecord) -> None:
        fields: List[Any] = []
        for name, value in record_dict(record).items():
            fields += [name, repr(float(value)) if isinstance(value, float) else value]
        d = self._commands.fire(what, record.client_id, scripts.CLIENT_WRITE(
            client_key=self.keys.client(record.client_id), clients_key=self.keys.clients(record.stream_key),
            streams_key=self.keys.streams, client_id=record.client_id, ttl_ms=_ms(self.settings.client_ttl),
            stream=record.stream_key, fields=fields,
        ))
        if d is not None:
            self._written[record.client_id] = float(self.reactor.seconds())

    def joined(self, record: ClientRecord) -> None:
        self.records[record.client_id] = attr.evolve(record)
        self._write("client_joined", record)

    def progress(self, record: ClientRecord) -> None:
        """
        Write the record (creating it again if Redis lost it), at most once
        per C{progress_interval}: more calls are absorbed. Whether its bytes
        changed does not matter.
        """
        self.records[record.client_id] = attr.evolve(record)
        last = self._written.get(record.client_id)
        if last is not None and float(self.reactor.seconds()) - last < self.settings.progress_interval:
            self._commands.count("client_progress_absorbed")
            return
        self._write("client_progress", record)

    def left(self, record: ClientRecord) -> None:
        self.records.pop(record.client_id, None)
        self._written.pop(record.client_id, None)
        self._commands.fire("client_left", record.client_id, scripts.CLIENT_LEFT(
            client_key=self.keys.client(record.client_id), clients_key=self.keys.clients(record.stream_key),
            client_id=record.client_id,
        ))

    def count(self, stream_key: str) -> Deferred[int]:
        """
        Players on C{stream_key} across the cluster, or L{CountUnknown}: when
        Redis cannot be asked; when its records may be incomplete because its
        data set is younger than C{client_ttl} (the marker C{P:cluster:since}
        was missing or is recent: Redis restarted, was flushed, or nobody
        reached it for C{data_set_ttl}); or within C{settle_after_reconnect}
        after this worker's link came back.
        """
        d = self._commands.request("client_count", stream_key, scripts.CLIENT_COUNT(
            clients_key=self.keys.clients(stream_key), since_key=self.keys.since,
            since_ttl_ms=_ms(self.settings.data_set_ttl),
        ))
        return d.addCallbacks(lambda reply: self._counted(stream_key, reply),
                              lambda failure: self._uncounted(stream_key, failure))

    def _counted(self, stream_key: str, reply: List[Any]) -> int:
        count, age_ms = int(reply[0]), int(reply[1])
        reconnected = self._link.reconnected_at
        since = float(self.reactor.seconds()) - reconnected if reconnected is not None else None
        why = count_doubt(self.settings, age_ms, since)
        if why is not None:
            self._commands.count("client_count_unknown")
            raise CountUnknown(f"players of {stream_key} ({count} recorded): {why}")
        self._commands.count("client_count_known")
        return count

    def _uncounted(self, stream_key: str, failure: Failure) -> int:
        raise CountUnknown(f"cannot count players of {stream_key}: {failure.getErrorMessage()}")
