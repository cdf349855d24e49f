# -*- test-case-name: tests.test_coord_contract,tests.test_coord_redis -*-
"""L{RedisFollower}: one stream's mirror, read with blocking C{XREAD} on a connection of its own."""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from twisted.internet.defer import CancelledError, Deferred, TimeoutError, inlineCallbacks
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from acetwist.coord.base import FollowGate
from acetwist.coord.link import Link, RedisConnection, is_disconnection
from acetwist.deferreds import observe
from acetwist.coord.scripts import FOLLOW_START
from acetwist.coord.settings import RedisSettings
from acetwist.interfaces import Block, IFollower, SegmentMark

log = Logger()


def entry_before(entry_id: bytes) -> bytes:
    """The stream id just before C{entry_id} (XREAD reads after the id it is given)."""
    ms_text, _, seq_text = entry_id.partition(b"-")
    ms, seq = int(ms_text), int(seq_text or b"0")
    if seq > 0:
        return b"%d-%d" % (ms, seq - 1)
    if ms > 0:
        return b"%d-%d" % (ms - 1, 2**64 - 1)
    return b"0-0"


@implementer(IFollower)
class RedisFollower:
    """
    Reads one stream's mirror with blocking C{XREAD} on its own connection
    and hands the blocks the L{FollowGate} admits to C{on_block}. Reconnects
    by itself; after a reconnection it resumes after the last entry it read
    if that entry is still in the mirror, else at the newest keyframe. It
    first starts C{backlog} s back (see C{ICoordinator.follow}); never a
    reposition, which would repeat what was delivered.
    C{on_stop(follower, closed)} is called once, when it is stopped.
    """

    def __init__(self, settings: RedisSettings, reactor: IReactorTime, stream_key: str, mirror_key: str,
                 on_block: Callable[[Block, int], None], from_start: bool,
                 on_stop: Callable[["RedisFollower", Deferred[None]], None], backlog: float = 0.0) -> None:
        self.settings = settings
        self.reactor = reactor
        self.stream_key = stream_key
        self.mirror_key = mirror_key
        self.on_block = on_block
        self.on_stop = on_stop
        self.from_start = from_start
        self.backlog = backlog
        self.gate = FollowGate(need_keyframe=not from_start)
        self.last_id: Optional[bytes] = None
        self.stopped = False
        self.counters: Dict[str, int] = {"errors": 0, "repositions": 0, "malformed": 0, "reads": 0}
        self._link = Link(settings, reactor, 1, f"follower of {stream_key}", quiet=True)
        self._link.start()
        self._stop_d: Optional[Deferred[None]] = None
        self._done: Deferred[None] = self._run()
        self._done.addErrback(self._crashed)

    def _crashed(self, failure: Failure) -> None:
        if not failure.check(CancelledError):
            log.failure("follower of {key} stopped unexpectedly", failure, key=self.stream_key)

    @inlineCallbacks
    def _run(self) -> Any:
        positioned = False
        if self.from_start:
            self.last_id, positioned = b"0-0", True
        while not self.stopped:
            try:
                yield self._link.when_up()
                conn = self._link.connection(self.stream_key)
                if conn is None:
                    continue
                if not positioned:
                    yield self._position(conn)
                    positioned = True
                assert self.last_id is not None
                reply = yield self._link.send(
                    conn, "XREAD", "COUNT", self.settings.follow_count,
                    "BLOCK", int(self.settings.follow_block * 1000),
                    "STREAMS", self.mirror_key, self.last_id,
                    timeout=self.settings.follow_block + self.settings.command_timeout,
                )
                self.counters["reads"] += 1
                if reply and not self.stopped:
                    self._deliver(reply)
            except Exception as e:
                if self.stopped:
                    break
                self.counters["errors"] += 1
                positioned = False
                if not (isinstance(e, (CancelledError, TimeoutError)) or is_disconnection(Failure(e))):
                    log.warn("follower of {key}: {error!r}", key=self.stream_key, error=e)
                if self._link.up:
                    # A live connection and still an error: do not spin on it.
                    pause = min(1.0, self.settings.follow_block)
                    yield deferLater(self.reactor, pause, lambda: None)

    @inlineCallbacks
    def _position(self, conn: RedisConnection) -> Any:
        reply = yield self._link.send(conn, *FOLLOW_START(
            mirror_key=self.mirror_key, last_id=self.last_id or b"", page_size=16,
            scan_limit=max(self.settings.mirror_maxlen * 2, 64),
            backlog=repr(self.backlog if self.last_id is None else 0.0),
        ))
        how, entry_id = reply[0], reply[1]
        if how == b"resume":
            return
        self.counters["repositions"] += 1
        self.gate.need_keyframe = True
        self.last_id = entry_before(entry_id) if how == b"keyframe" else entry_id

    def _deliver(self, reply: Any) -> None:
        for _key, entries in reply:
            for entry_id, flat in entries:
                if self.stopped:
                    return
                self.last_id = entry_id
                fields = dict(zip(flat[::2], flat[1::2]))
                try:
                    epoch = int(fields[b"epoch"])
                    block = Block(
                        seq=int(fields[b"seq"]),
                        data=fields[b"data"],
                        keyframe=fields[b"keyframe"] == b"1",
                        psi=fields.get(b"psi") or b"",
                        segment=int(fields[b"segment"]),
                        created=float(fields.get(b"created") or 0.0),
                        mark=SegmentMark.decode(fields.get(b"hls") or b""),
                    )
                except (KeyError, ValueError, TypeError):
                    self.counters["malformed"] += 1
                    continue
                if self.gate.admit(block, epoch):
                    try:
                        self.on_block(block, epoch)
                    except Exception:
                        log.failure("follower of {key} failed to take a block", key=self.stream_key)

    def stats(self) -> Dict[str, int]:
        return {**self.counters, **self.gate.counters(), "connects": self._link.connects}

    def stop(self) -> Deferred[None]:
        """
        Stop at once: nothing is delivered after this returns. The returned
        Deferred fires when the follower's connection is closed.
        """
        if self._stop_d is None:
            self.stopped = True
            self._done.cancel()
            self._stop_d = self._link.close()
            self.on_stop(self, self._stop_d)
        return observe(self._stop_d)
