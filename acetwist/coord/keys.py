"""The Redis key layout (C{docs/redis.md} lists each key's type, contents and TTL)."""

from __future__ import annotations

import attr


@attr.s(frozen=True, auto_attribs=True)
class Keys:
    """Every key acetwist writes starts with C{<prefix>:}."""

    prefix: str

    def _key(self, *parts: str) -> str:
        return ":".join((self.prefix,) + parts)

    def stream(self, stream_key: str, what: str) -> str:
        """C{P:stream:S:<what>}: C{owner}, C{epoch}, C{mirror}, C{meta} or C{clients}."""
        return self._key("stream", stream_key, what)

    def owner(self, stream_key: str) -> str:
        return self.stream(stream_key, "owner")

    def epoch(self, stream_key: str) -> str:
        return self.stream(stream_key, "epoch")

    def mirror(self, stream_key: str) -> str:
        return self.stream(stream_key, "mirror")

    def meta(self, stream_key: str) -> str:
        return self.stream(stream_key, "meta")

    def clients(self, stream_key: str) -> str:
        return self.stream(stream_key, "clients")

    def alias(self, stream_key: str) -> str:
        """C{P:alias:S}: the other key of the same stream (the CLAIM script builds the target's owner key itself)."""
        return self._key("alias", stream_key)

    def client(self, client_id: str) -> str:
        return self._key("client", client_id)

    def worker(self, worker_id: str) -> str:
        return self._key("worker", worker_id)

    @property
    def workers(self) -> str:
        return self._key("workers")

    @property
    def streams(self) -> str:
        return self._key("streams")

    def engine_slots(self, engine_id: str) -> str:
        """C{P:engine:E:slots}: a ZSET of an engine's reserved and committed slots, scored by expiry (ms)."""
        return self._key("engine", engine_id, "slots")

    @property
    def engines(self) -> str:
        """C{P:engines}: a ZSET of engine ids that have slots, scored by expiry (ms)."""
        return self._key("engines")

    @property
    def since(self) -> str:
        """C{P:cluster:since}: when (Redis time, ms) the current data set began."""
        return self._key("cluster", "since")
