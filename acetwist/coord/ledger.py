# -*- test-case-name: tests.test_engine_ledger_redis -*-
"""
L{RedisLedger}: engine load counted in Redis, shared by every worker
(L{acetwist.engines.api.ILoadLedger}). It sends its commands through the
Redis coordinator's connections (L{RedisCoordinator.engine_ledger}).

Keys (under the coordinator's prefix C{P}):

- C{P:engine:<engine id>:slots}: a ZSET of slots (one per reservation,
  named by the pool), scored by expiry in Redis's clock (ms); its TTL is
  at least its longest slot's.
- C{P:engines}: a ZSET of engine ids with slots, scored by expiry, so
  L{RedisLedger.loads} finds them without KEYS or SCAN.

A slot is taken only under capacity, atomically (L{scripts.ENGINE_RESERVE});
it expires after the reservation's C{ttl} unless committed; a committed slot
expires C{committed_ttl} after its last C{commit} (the pool commits its
running sessions again on a timer), so a crashed worker's slots free
themselves.
"""

from __future__ import annotations

from typing import Any, Dict, List

from twisted.internet.defer import Deferred
from zope.interface import implementer

from acetwist.coord import scripts
from acetwist.coord.commands import Commands
from acetwist.coord.keys import Keys
from acetwist.engines.api import ILoadLedger


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@implementer(ILoadLedger)
class RedisLedger:
    """
    L{ILoadLedger} in Redis. C{reserve} and C{loads} fail with
    L{acetwist.coord.base.CoordinatorUnavailable} when Redis does not answer
    within the coordinator's deadline; C{commit} and C{release} never fail
    (a slot that could not be written is written again by the next commit,
    one that could not be deleted expires).
    """

    def __init__(self, commands: Commands, keys: Keys, committed_ttl: float = 30.0) -> None:
        self.commands = commands
        self.keys = keys
        self.committed_ttl = committed_ttl

    def _index_ttl_ms(self, ttl: float) -> int:
        return _ms(max(ttl, self.committed_ttl))

    def reserve(self, engine_id: str, stream_key: str, capacity: int, ttl: float) -> Deferred[bool]:
        d = self.commands.request("engine_reserve", engine_id, scripts.ENGINE_RESERVE(
            slots_key=self.keys.engine_slots(engine_id), engines_key=self.keys.engines, engine=engine_id,
            slot=stream_key, capacity=capacity, ttl_ms=_ms(ttl), index_ttl_ms=self._index_ttl_ms(ttl),
        ))
        return d.addCallback(lambda reply: int(reply[0]) == 1)

    def commit(self, engine_id: str, stream_key: str) -> Deferred[None]:
        d = self.commands.request("engine_commit", engine_id, scripts.ENGINE_COMMIT(
            slots_key=self.keys.engine_slots(engine_id), engines_key=self.keys.engines, engine=engine_id,
            slot=stream_key, ttl_ms=_ms(self.committed_ttl), index_ttl_ms=self._index_ttl_ms(self.committed_ttl),
        ))
        return d.addCallbacks(lambda _: None, lambda f: None)

    def release(self, engine_id: str, stream_key: str) -> Deferred[None]:
        d = self.commands.request("engine_release", engine_id,
                                  ["ZREM", self.keys.engine_slots(engine_id), stream_key])
        return d.addCallbacks(lambda _: None, lambda f: None)

    def loads(self) -> Deferred[Dict[str, int]]:
        d = self.commands.request("engine_loads", "", scripts.ENGINE_LOADS(
            engines_key=self.keys.engines, prefix=self.keys.prefix,
        ))

        def parsed(reply: List[Any]) -> Dict[str, int]:
            return {_text(reply[i]): int(reply[i + 1]) for i in range(0, len(reply) - 1, 2)}

        return d.addCallback(parsed)
