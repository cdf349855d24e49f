# -*- test-case-name: tests.test_coord_contract,tests.test_coord_redis -*-
"""
L{RedisCoordinator}: many acetwist processes (one host or many) sharing one
Redis act as one proxy. The key layout, the TTLs and the ownership rules are
described in C{docs/redis.md}.

How Redis trouble is kept away from the streaming path:

- every command has a deadline (C{command_timeout}); a connection whose
  command missed it is dropped and re-established (so a hung Redis cannot
  make us buffer writes without bound);
- fire-and-forget writes (mirror publishes, heartbeats, player records,
  metadata) are skipped and counted while no connection is up or while
  C{max_in_flight} of them are unanswered; they resume by themselves;
- request-style calls wait for a connection at most until their deadline.

txredisapi binds the global reactor when it is imported, so this module must
not be imported before twistd has installed its reactor (L{acetwist.service}
imports it lazily). We use txredisapi's connection machinery (C{RedisFactory}
with its reconnecting pool slots) and protocol, not its connection handler:
AUTH and SELECT are sent by us on every (re)connection (txredisapi's own
C{dbid}/C{password} handling stops reconnecting for good after one failure,
issue #146), and commands go to a connection chosen by stream key so that
one stream's commands stay in order.

Requires Redis >= 5.0 (streams; scripts replicated by effects) and a
standalone server or a Sentinel-managed primary's address; Redis Cluster is
not supported (scripts touch keys of several streams).
"""

from __future__ import annotations

import os
import socket
import zlib
from typing import Any, Callable, Dict, List, Optional, Sequence, Set

import attr
import txredisapi
from twisted.internet import defer
from twisted.internet.abstract import isIPAddress, isIPv6Address
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks, succeed
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from acetwist.coord.base import (
    CoordinatorUnavailable,
    FollowGate,
    empty_view,
    field_text,
    lease_value,
    parse_lease,
    record_dict,
)
from acetwist.coord.settings import RedisSettings
from acetwist.interfaces import Block, ClientRecord, ICoordinator, IFollower, Lease

__all__ = ["RedisCoordinator", "RedisFollower", "RedisSettings", "CoordinatorUnavailable"]

log = Logger()

# ---------------------------------------------------------------- scripts
#
# Every script takes its times from Redis (TIME), so workers with skewed
# clocks agree on expiry. Index ZSETs are scored by expiry (ms) and only ever
# moved forward; their own TTL is only ever extended.

_LIB = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function index(key, member, expires, ttl)
  local s = redis.call('ZSCORE', key, member)
  if (not s) or tonumber(s) < expires then redis.call('ZADD', key, expires, member) end
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
"""

# KEYS owner, epoch, streams-index; ARGV worker, lease_ms, epoch_ttl_ms, stream_key, index_ttl_ms
# The epoch is INCR'ed, floored at Redis's clock in ms, so it stays strictly
# higher than any earlier one even after the counter was lost (a Redis
# restart without persistence, or the counter's TTL).
CLAIM = _LIB + """
local cur = redis.call('GET', KEYS[1])
if cur then return {0, cur} end
local now = now_ms()
local e = redis.call('INCR', KEYS[2])
if e < now then
  e = now
  redis.call('SET', KEYS[2], string.format('%d', e))
end
local val = ARGV[1] .. ':' .. string.format('%d', e)
if not redis.call('SET', KEYS[1], val, 'NX', 'PX', ARGV[2]) then return {0, redis.call('GET', KEYS[1])} end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
index(KEYS[3], ARGV[4], now + tonumber(ARGV[5]), tonumber(ARGV[5]))
return {1, val}
"""

# KEYS owner, epoch, meta, streams-index
# ARGV lease, lease_ms, epoch_ttl_ms, stream_key, index_ttl_ms, stream_ttl_ms
RENEW = _LIB + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[6])
index(KEYS[4], ARGV[4], now_ms() + tonumber(ARGV[5]), tonumber(ARGV[5]))
return 1
"""

# KEYS owner; ARGV lease
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS owner, mirror; ARGV lease, maxlen, ttl_ms, data, keyframe, psi, epoch, seq, segment, created
# Fenced: only the current lease holder's blocks get into the mirror.
PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
  'data', ARGV[4], 'keyframe', ARGV[5], 'psi', ARGV[6], 'epoch', ARGV[7],
  'seq', ARGV[8], 'segment', ARGV[9], 'created', ARGV[10])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""

# KEYS owner, mirror, meta, streams-index; ARGV worker, stream_key
STREAM_GONE = """
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^(.*):%d+$') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[2])
return 1
"""

# KEYS meta, streams-index; ARGV stream_key, stream_ttl_ms, field, value, ...
UPDATE_STREAM = _LIB + """
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
if #fields > 0 then redis.call('HSET', KEYS[1], unpack(fields)) end
local ttl = tonumber(ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
index(KEYS[2], ARGV[1], now_ms() + ttl, ttl)
return 1
"""

# KEYS client, stream-clients, streams-index; ARGV client_id, ttl_ms, stream_key, field, value, ...
CLIENT_WRITE = _LIB + """
local now = now_ms()
local ttl = tonumber(ARGV[2])
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
index(KEYS[2], ARGV[1], now + ttl, ttl)
index(KEYS[3], ARGV[3], now + ttl, ttl)
return 1
"""

# KEYS client, stream-clients; ARGV client_id
CLIENT_LEFT = """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS stream-clients
CLIENT_COUNT = _LIB + """
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
return redis.call('ZCARD', KEYS[1])
"""

# KEYS worker, workers-index; ARGV worker, ttl_ms, host, pid, started_at, clients
HEARTBEAT = _LIB + """
local now = now_ms()
local ttl = tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'host', ARGV[3], 'pid', ARGV[4], 'started_at', ARGV[5],
  'clients', ARGV[6], 'heartbeat_at', string.format('%.3f', now / 1000))
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. now)
index(KEYS[2], ARGV[1], now + ttl, ttl)
return 1
"""

# KEYS worker, workers-index, then (client, stream-clients) pairs; ARGV worker, then client ids
FORGET_WORKER = """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
for i = 2, #ARGV do
  redis.call('DEL', KEYS[2 * i - 1])
  redis.call('ZREM', KEYS[2 * i], ARGV[i])
end
return 1
"""

# ARGV prefix. Reads keys it is not given (standalone Redis only).
CLUSTER_VIEW = _LIB + """
local p = ARGV[1]
local now = now_ms()
local workers = {}
local wi = p .. ':workers'
redis.call('ZREMRANGEBYSCORE', wi, '-inf', '(' .. now)
for _, w in ipairs(redis.call('ZRANGEBYSCORE', wi, now, '+inf')) do
  local h = redis.call('HGETALL', p .. ':worker:' .. w)
  if #h > 0 then workers[#workers + 1] = {w, h} end
end
local streams = {}
local si = p .. ':streams'
redis.call('ZREMRANGEBYSCORE', si, '-inf', '(' .. now)
for _, s in ipairs(redis.call('ZRANGEBYSCORE', si, now, '+inf')) do
  local base = p .. ':stream:' .. s
  local ck = base .. ':clients'
  redis.call('ZREMRANGEBYSCORE', ck, '-inf', '(' .. now)
  local players = {}
  for _, c in ipairs(redis.call('ZRANGEBYSCORE', ck, now, '+inf')) do
    local h = redis.call('HGETALL', p .. ':client:' .. c)
    if #h > 0 then players[#players + 1] = {c, h} end
  end
  local owner = redis.call('GET', base .. ':owner') or ''
  streams[#streams + 1] = {s, owner, redis.call('HGETALL', base .. ':meta'), players}
end
return {workers, streams}
"""

# KEYS mirror; ARGV last id or '', page size, most entries to scan back.
# 'resume' when our last entry is still there; otherwise the newest keyframe
# entry, else the newest entry, else 'empty'.
FOLLOW_START = """
if ARGV[1] ~= '' and #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[1]) > 0 then return {'resume', ARGV[1]} end
local page = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local top = '+'
local newest = false
local scanned = 0
while scanned < limit do
  local entries = redis.call('XREVRANGE', KEYS[1], top, '-', 'COUNT', page)
  local fresh = 0
  for _, e in ipairs(entries) do
    if e[1] ~= top then
      fresh = fresh + 1
      scanned = scanned + 1
      if not newest then newest = e[1] end
      local f = e[2]
      for j = 1, #f, 2 do
        if f[j] == 'keyframe' then
          if f[j + 1] == '1' then return {'keyframe', e[1]} end
          break
        end
      end
    end
  end
  if fresh == 0 or #entries < page then break end
  top = entries[#entries][1]
end
if newest then return {'newest', newest} end
return {'empty', '0-0'}
"""


def _eval(script: str, keys: Sequence[Any], args: Sequence[Any]) -> List[Any]:
    return ["EVAL", script, len(keys), *keys, *args]


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _pairs(flat: Optional[List[Any]]) -> Dict[str, str]:
    flat = flat or []
    return {_text(k): _text(v) for k, v in zip(flat[::2], flat[1::2])}


def _before(entry_id: bytes) -> bytes:
    """The stream id just before C{entry_id} (XREAD reads after the id it is given)."""
    ms_text, _, seq_text = entry_id.partition(b"-")
    ms, seq = int(ms_text), int(seq_text or b"0")
    if seq > 0:
        return b"%d-%d" % (ms, seq - 1)
    if ms > 0:
        return b"%d-%d" % (ms - 1, 2**64 - 1)
    return b"0-0"


def _is_timeout(failure: Failure) -> bool:
    return failure.check(defer.TimeoutError, txredisapi.TimeoutError) is not None


# ---------------------------------------------------------------- connections


class _Factory(txredisapi.RedisFactory):
    """txredisapi's reconnecting pool, with our own connection preparation and bookkeeping."""

    def __init__(self, link: "_Link", poolsize: int) -> None:
        super().__init__(
            link.settings.url, None, poolsize, isLazy=True, charset=None, password=None,
            replyTimeout=None, convertNumbers=False,
        )
        self.link = link
        self.maxDelay = link.settings.reconnect_max_delay
        self.initialDelay = min(0.5, self.maxDelay)

    def addConnection(self, conn: Any) -> None:
        # Called once the protocol is connected; we send AUTH/SELECT ourselves
        # and add the connection to the pool only when it is usable. Unlike
        # the base class we keep no connection queue (we never use it).
        if self.disconnectCalled:
            conn.transport.loseConnection()
            return
        if not conn.connected:
            return
        self.link._prepare(conn).addCallbacks(lambda _: self._usable(conn), lambda f: self._unusable(conn, f))

    def _usable(self, conn: Any) -> None:
        if self.disconnectCalled:
            conn.transport.loseConnection()
            return
        if not conn.connected:
            return
        conn.whenDisconnected().addCallback(self.delConnection)
        self.pool.append(conn)
        self.size = len(self.pool)
        self.link._connection_up(conn)

    def _unusable(self, conn: Any, failure: Failure) -> None:
        self.link._prepare_failed(failure)
        if conn.transport is not None:
            conn.transport.abortConnection()

    def delConnection(self, conn: Any) -> None:
        super().delConnection(conn)
        self.link._connection_down()


class _Link:
    """A pool of connections to Redis that knows whether any is usable."""

    def __init__(self, settings: RedisSettings, reactor: Any, poolsize: int, name: str,
                 on_up: Optional[Callable[[], None]] = None, quiet: bool = False) -> None:
        self.settings = settings
        self.quiet = quiet
        self.reactor = reactor
        self.name = name
        self.on_up = on_up
        self.factory = _Factory(self, poolsize)
        self.closed = False
        self.was_up = False
        self.connects = 0
        self._waiters: List[Deferred[None]] = []
        self._close_d: Optional[Deferred[Any]] = None
        self._complaint: Optional[str] = None

    def _endpoint(self) -> Any:
        host, port = self.settings.host, self.settings.port
        timeout = self.settings.connect_timeout
        if isIPAddress(host):
            return TCP4ClientEndpoint(self.reactor, host, port, timeout=timeout)
        if isIPv6Address(host):
            return TCP6ClientEndpoint(self.reactor, host, port, timeout=timeout)
        return HostnameEndpoint(self.reactor, host, port, timeout=timeout)

    def start(self) -> None:
        self.factory.startConnecting(self._endpoint())

    @property
    def up(self) -> bool:
        return not self.closed and any(conn.connected for conn in self.factory.pool)

    def connection(self, route: str = "") -> Any:
        live = [conn for conn in self.factory.pool if conn.connected]
        if self.closed or not live:
            return None
        return live[zlib.crc32(route.encode("utf-8", "replace")) % len(live)]

    def when_up(self) -> Deferred[None]:
        """Fires when a connection is usable (at once if one is); cancellable."""
        if self.up:
            return succeed(None)
        if self.closed:
            return defer.fail(CoordinatorUnavailable("closed"))

        def forget(d: Deferred[None]) -> None:
            if d in self._waiters:
                self._waiters.remove(d)

        d: Deferred[None] = Deferred(forget)
        self._waiters.append(d)
        return d

    def send(self, conn: Any, *args: Any, timeout: Optional[float] = None) -> Deferred[Any]:
        """One command on C{conn}, failing after C{timeout}; a connection that misses it is dropped."""
        d = defer.maybeDeferred(conn.execute_command, *args)
        d.addTimeout(self.settings.command_timeout if timeout is None else timeout, self.reactor)

        def dropped(failure: Failure) -> Failure:
            if _is_timeout(failure) and conn.transport is not None and conn.connected:
                log.warn("Redis {name}: no answer within the deadline; reconnecting", name=self.name)
                conn.transport.abortConnection()
            return failure

        return d.addErrback(dropped)

    def _prepare(self, conn: Any) -> Deferred[Any]:
        steps: List[List[Any]] = []
        if self.settings.password is not None:
            steps.append(["AUTH"] + ([self.settings.username] if self.settings.username else [])
                         + [self.settings.password])
        if self.settings.db:
            steps.append(["SELECT", self.settings.db])

        @inlineCallbacks
        def run() -> Any:
            for step in steps:
                yield self.send(conn, *step)

        return run()

    def _prepare_failed(self, failure: Failure) -> None:
        message = failure.getErrorMessage()
        if message != self._complaint:
            self._complaint = message
            log.error("Redis {name}: AUTH/SELECT failed ({why}); retrying", name=self.name, why=message)

    def _connection_up(self, conn: Any) -> None:
        self.connects += 1
        self._complaint = None
        if not self.was_up:
            self.was_up = True
            (log.debug if self.quiet else log.info)(
                "Redis {name}: connected to {host}:{port}", name=self.name,
                host=self.settings.host, port=self.settings.port)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)
        if self.on_up is not None:
            self.on_up()

    def _connection_down(self) -> None:
        if self.was_up and not self.up and not self.closed:
            self.was_up = False
            quiet = log.debug if self.quiet else log.warn
            quiet("Redis {name}: connection lost; reconnecting", name=self.name)

    def close(self) -> Deferred[None]:
        """
        Stop reconnecting, close every connection; fires when they are
        closed. Connections that have not closed after C{command_timeout}
        (a hung Redis not reading what we still have to write) are aborted.
        """
        if self._close_d is None:
            self.closed = True
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.errback(CoordinatorUnavailable("closed"))
            self._close_d = self.factory.disconnect()
            self._close_d.addErrback(lambda f: None)
            abort = self.reactor.callLater(self.settings.command_timeout, self._abort_all)

            def closed(result: Any) -> Any:
                if abort.active():
                    abort.cancel()
                return result

            self._close_d.addBoth(closed)
        return _observe(self._close_d)

    def _abort_all(self) -> None:
        conns = {slot.protocol for slot in self.factory.slots if slot.protocol is not None}
        conns.update(self.factory.pool)
        for conn in conns:
            if conn.transport is not None:
                conn.transport.abortConnection()


def _observe(d: Deferred[Any]) -> Deferred[None]:
    """A new Deferred that fires (with None) when C{d} has fired, leaving C{d}'s result alone."""
    out: Deferred[None] = Deferred()

    def fire(result: Any) -> Any:
        out.callback(None)
        return result

    d.addBoth(fire)
    return out


# ---------------------------------------------------------------- follower


@implementer(IFollower)
class RedisFollower:
    """
    Reads one stream's mirror with blocking C{XREAD} on its own connection
    and hands the blocks the L{FollowGate} admits to C{on_block}. Reconnects
    by itself; after a reconnection it resumes after the last entry it read
    if that entry is still in the mirror, else at the newest keyframe.
    """

    def __init__(self, coordinator: "RedisCoordinator", stream_key: str,
                 on_block: Callable[[Block, int], None], from_start: bool) -> None:
        self.coordinator = coordinator
        self.settings = coordinator.settings
        self.stream_key = stream_key
        self.mirror_key = coordinator._stream_key(stream_key, "mirror")
        self.on_block = on_block
        self.from_start = from_start
        self.gate = FollowGate(need_keyframe=not from_start)
        self.last_id: Optional[bytes] = None
        self.stopped = False
        self.counters: Dict[str, int] = {"errors": 0, "repositions": 0, "malformed": 0, "reads": 0}
        self._link = _Link(self.settings, coordinator.reactor, 1, f"follower of {stream_key}", quiet=True)
        self._link.start()
        self._stop_d: Optional[Deferred[Any]] = None
        self._done = self._run()
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
                if not isinstance(e, (txredisapi.ConnectionError, CancelledError, defer.TimeoutError)):
                    log.warn("follower of {key}: {error!r}", key=self.stream_key, error=e)
                if self._link.up:
                    # A live connection and still an error: do not spin on it.
                    pause = min(1.0, self.settings.follow_block)
                    yield deferLater(self.coordinator.reactor, pause, lambda: None)

    @inlineCallbacks
    def _position(self, conn: Any) -> Any:
        reply = yield self._link.send(conn, *_eval(
            FOLLOW_START, [self.mirror_key],
            [self.last_id or b"", 16, max(self.settings.mirror_maxlen * 2, 64)],
        ))
        how, entry_id = reply[0], reply[1]
        if how == b"resume":
            return
        self.counters["repositions"] += 1
        self.gate.need_keyframe = True
        self.last_id = _before(entry_id) if how == b"keyframe" else entry_id

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
            self.coordinator._follower_stopped(self, self._stop_d)
        return _observe(self._stop_d)


# ---------------------------------------------------------------- coordinator


@implementer(ICoordinator)
class RedisCoordinator:
    """
    One worker's access to the cluster state in Redis.

    When Redis cannot answer within C{command_timeout}: C{claim}, C{renew},
    C{owner} and C{client_count} errback with L{CoordinatorUnavailable};
    C{release} fires None anyway (the lease will expire); C{cluster_view}
    fires with C{"available": False}, this worker and its own players; the
    fire-and-forget methods skip and count.
    """

    backend = "redis"
    reclaim_margin = 2.5

    def __init__(self, settings: RedisSettings, worker_id: str, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor

            reactor = default_reactor
        self.settings = settings
        self.worker_id = worker_id
        self.reactor = reactor
        self.started_at = float(reactor.seconds())
        self.counters: Dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight_seen = 0
        self._link = _Link(settings, reactor, settings.poolsize, "coordinator", on_up=self._reconnected)
        self._heartbeat: Optional[LoopingCall] = None
        self._followers: Set[RedisFollower] = set()
        self._closing: Set[Deferred[Any]] = set()
        self._clients: Dict[str, ClientRecord] = {}
        self._client_written: Dict[str, float] = {}
        self._started = False
        self._stopping = False
        self._stop_d: Optional[Deferred[Any]] = None

    # ------------------------------------------------------------ keys

    def _key(self, *parts: str) -> str:
        return ":".join((self.settings.prefix,) + parts)

    def _stream_key(self, stream_key: str, what: str) -> str:
        return self._key("stream", stream_key, what)

    # ------------------------------------------------------------ plumbing

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    @property
    def connected(self) -> bool:
        return self._link.up

    def stats(self) -> Dict[str, int]:
        """Counters (published, publish_skipped, publish_fenced, ...) and current sizes."""
        out = dict(self.counters)
        out.update(in_flight=self.in_flight, max_in_flight_seen=self.max_in_flight_seen,
                   followers=len(self._followers), connected=int(self._link.up), connects=self._link.connects)
        return out

    def _request(self, what: str, route: str, args: Sequence[Any], last: bool = False) -> Deferred[Any]:
        """
        A command whose answer the caller needs: waits for a connection and
        the answer, both within C{command_timeout}; errbacks with
        L{CoordinatorUnavailable}.
        """
        if self._stopping and not last:
            return defer.fail(CoordinatorUnavailable("coordinator stopped"))
        sent: List[Any] = []

        def send(_: Any) -> Deferred[Any]:
            conn = self._link.connection(route)
            if conn is None:
                raise CoordinatorUnavailable("no Redis connection")
            sent.append(conn)
            return defer.maybeDeferred(conn.execute_command, *args)

        d = self._link.when_up().addCallback(send)
        d.addTimeout(self.settings.command_timeout, self.reactor)

        def failed(failure: Failure) -> None:
            self._count(f"{what}_failed")
            if _is_timeout(failure) and sent and sent[0].transport is not None and sent[0].connected:
                sent[0].transport.abortConnection()
            if failure.check(txredisapi.ResponseError):
                log.error("Redis refused {what}: {why}", what=what, why=failure.getErrorMessage())
            if failure.check(CoordinatorUnavailable):
                raise failure.value
            raise CoordinatorUnavailable(f"{what}: {failure.getErrorMessage() or failure.type.__name__}")

        return d.addErrback(failed)

    def _fire(self, what: str, route: str, args: Sequence[Any]) -> Optional[Deferred[Any]]:
        """
        A fire-and-forget command: skipped (and counted) while no connection
        is up or C{max_in_flight} are unanswered, never queued.
        """
        if self._stopping:
            return None
        conn = self._link.connection(route)
        if conn is None or self.in_flight >= self.settings.max_in_flight:
            self._count(f"{what}_skipped")
            return None
        self.in_flight += 1
        self.max_in_flight_seen = max(self.max_in_flight_seen, self.in_flight)
        d = self._link.send(conn, *args)

        def done(result: Any) -> Any:
            self.in_flight -= 1
            if isinstance(result, Failure):
                self._count(f"{what}_failed")
                if result.check(txredisapi.ResponseError):
                    log.error("Redis refused {what}: {why}", what=what, why=result.getErrorMessage())
                return None
            return result

        return d.addBoth(done)

    # ------------------------------------------------------------ lifecycle

    def start(self) -> Deferred[None]:
        """
        Connect and start heartbeats. The Deferred fires when connected or
        after C{command_timeout}, whichever is first (never errbacks: a
        worker starts without Redis and catches up when it appears).
        """
        if not self._started:
            self._started = True
            self._link.start()
            self._heartbeat = LoopingCall(self._beat)
            self._heartbeat.clock = self.reactor
            self._heartbeat.start(self.settings.heartbeat_interval, now=True)
        d = self._link.when_up()
        d.addTimeout(self.settings.command_timeout, self.reactor)
        return d.addErrback(lambda f: None)

    def _reconnected(self) -> None:
        # Register at once after (re)connecting instead of at the next tick.
        if self._heartbeat is not None and self._heartbeat.running:
            self._beat()

    def _beat(self) -> None:
        self._fire("heartbeat", self.worker_id, _eval(
            HEARTBEAT,
            [self._key("worker", self.worker_id), self._key("workers")],
            [self.worker_id, int(self.settings.worker_ttl * 1000), socket.gethostname(), os.getpid(),
             f"{self.started_at:.3f}", len(self._clients)],
        ))

    def _halt(self) -> Deferred[Any]:
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        self._heartbeat = None
        for follower in list(self._followers):
            follower.stop()
        # Also waits for followers stopped earlier whose connections are still closing.
        return defer.DeferredList([_observe(d) for d in list(self._closing)])

    def _follower_stopped(self, follower: RedisFollower, closed: Deferred[Any]) -> None:
        self._followers.discard(follower)
        self._closing.add(closed)

        def forget(result: Any) -> Any:
            self._closing.discard(closed)
            return result

        closed.addBoth(forget)

    @inlineCallbacks
    def _stop(self, forget: bool) -> Any:
        yield self._halt()
        if forget and self._link.up:
            keys = [self._key("worker", self.worker_id), self._key("workers")]
            for record in self._clients.values():
                keys.append(self._key("client", record.client_id))
                keys.append(self._stream_key(record.stream_key, "clients"))
            d = self._request("forget_worker", self.worker_id,
                              _eval(FORGET_WORKER, keys, [self.worker_id, *self._clients]), last=True)
            yield d.addErrback(lambda f: None)
        self._clients.clear()
        self._client_written.clear()
        yield self._link.close()

    def _begin_stop(self, forget: bool) -> Deferred[None]:
        if self._stop_d is None:
            self._stopping = True
            self._stop_d = self._stop(forget)
            self._stop_d.addErrback(lambda f: log.failure("stopping the Redis coordinator", f))
        return _observe(self._stop_d)

    def stop(self) -> Deferred[None]:
        """
        Stop heartbeats and followers, delete this worker's key and its
        players' records (bounded by C{command_timeout}), close connections.
        Never errbacks.
        """
        return self._begin_stop(forget=True)

    def _crash(self) -> Deferred[None]:
        """For tests: stop and disconnect without deleting anything, like a killed process."""
        return self._begin_stop(forget=False)

    # ------------------------------------------------------------ ownership

    def _ms(self, seconds: float) -> int:
        return int(seconds * 1000)

    def claim(self, stream_key: str) -> Deferred[Optional[Lease]]:
        s = self.settings
        index_ttl = max(s.lease_ms, self._ms(s.stream_ttl))
        d = self._request("claim", stream_key, _eval(
            CLAIM,
            [self._stream_key(stream_key, "owner"), self._stream_key(stream_key, "epoch"),
             self._key("streams")],
            [self.worker_id, s.lease_ms, self._ms(s.epoch_ttl), stream_key, index_ttl],
        ))

        def claimed(reply: List[Any]) -> Optional[Lease]:
            won, value = reply[0], reply[1]
            if won != 1:
                self._count("claims_lost")
                return None
            self._count("claims_won")
            return parse_lease(value)

        return d.addCallback(claimed)

    def renew(self, stream_key: str, lease: Lease) -> Deferred[bool]:
        s = self.settings
        index_ttl = max(s.lease_ms, self._ms(s.stream_ttl))
        d = self._request("renew", stream_key, _eval(
            RENEW,
            [self._stream_key(stream_key, "owner"), self._stream_key(stream_key, "epoch"),
             self._stream_key(stream_key, "meta"), self._key("streams")],
            [lease_value(lease.owner, lease.epoch), s.lease_ms, self._ms(s.epoch_ttl),
             stream_key, index_ttl, self._ms(s.stream_ttl)],
        ))
        return d.addCallback(lambda reply: reply == 1)

    def release(self, stream_key: str, lease: Lease) -> Deferred[None]:
        d = self._request("release", stream_key, _eval(
            RELEASE, [self._stream_key(stream_key, "owner")], [lease_value(lease.owner, lease.epoch)],
        ))
        return d.addCallbacks(lambda _: None, lambda f: None)

    def owner(self, stream_key: str) -> Deferred[Optional[Lease]]:
        d = self._request("owner", stream_key, ["GET", self._stream_key(stream_key, "owner")])
        return d.addCallback(parse_lease)

    # ------------------------------------------------------------ mirror

    def publish(self, stream_key: str, lease: Lease, block: Block) -> None:
        d = self._fire("publish", stream_key, _eval(
            PUBLISH,
            [self._stream_key(stream_key, "owner"), self._stream_key(stream_key, "mirror")],
            [lease_value(lease.owner, lease.epoch), self.settings.mirror_maxlen,
             self._ms(self.settings.mirror_ttl), block.data, b"1" if block.keyframe else b"0", block.psi,
             lease.epoch, block.seq, block.segment, repr(float(block.created))],
        ))
        if d is not None:
            d.addCallback(self._published)

    def _published(self, reply: Any) -> None:
        if reply == 1:
            self._count("published")
        elif reply == 0:
            self._count("publish_fenced")

    def follow(self, stream_key: str, on_block: Callable[[Block, int], None],
               from_start: bool = False) -> RedisFollower:
        follower = RedisFollower(self, stream_key, on_block, from_start)
        self._followers.add(follower)
        if self._stopping:
            follower.stop()
        return follower

    # ------------------------------------------------------------ players

    def _write_client(self, what: str, record: ClientRecord) -> None:
        fields: List[Any] = []
        for name, value in record_dict(record).items():
            fields += [name, repr(float(value)) if isinstance(value, float) else value]
        d = self._fire(what, record.client_id, _eval(
            CLIENT_WRITE,
            [self._key("client", record.client_id), self._stream_key(record.stream_key, "clients"),
             self._key("streams")],
            [record.client_id, int(self.settings.client_ttl * 1000), record.stream_key, *fields],
        ))
        if d is not None:
            self._client_written[record.client_id] = float(self.reactor.seconds())

    def client_joined(self, record: ClientRecord) -> None:
        self._clients[record.client_id] = attr.evolve(record)
        self._write_client("client_joined", record)

    def client_progress(self, record: ClientRecord) -> None:
        """Refresh the record, at most once per C{progress_interval} (more calls are absorbed)."""
        self._clients[record.client_id] = attr.evolve(record)
        last = self._client_written.get(record.client_id)
        if last is not None and float(self.reactor.seconds()) - last < self.settings.progress_interval:
            self._count("client_progress_absorbed")
            return
        self._write_client("client_progress", record)

    def client_left(self, record: ClientRecord) -> None:
        self._clients.pop(record.client_id, None)
        self._client_written.pop(record.client_id, None)
        self._fire("client_left", record.client_id, _eval(
            CLIENT_LEFT,
            [self._key("client", record.client_id), self._stream_key(record.stream_key, "clients")],
            [record.client_id],
        ))

    def client_count(self, stream_key: str) -> Deferred[int]:
        return self._request("client_count", stream_key, _eval(
            CLIENT_COUNT, [self._stream_key(stream_key, "clients")], [],
        ))

    # ------------------------------------------------------------ streams

    def update_stream(self, stream_key: str, fields: Dict[str, Any]) -> None:
        flat: List[str] = []
        for name, value in fields.items():
            flat += [str(name), field_text(value)]
        self._fire("update_stream", stream_key, _eval(
            UPDATE_STREAM, [self._stream_key(stream_key, "meta"), self._key("streams")],
            [stream_key, int(self.settings.stream_ttl * 1000), *flat],
        ))

    def stream_gone(self, stream_key: str) -> None:
        self._fire("stream_gone", stream_key, _eval(
            STREAM_GONE,
            [self._stream_key(stream_key, "owner"), self._stream_key(stream_key, "mirror"),
             self._stream_key(stream_key, "meta"), self._key("streams")],
            [self.worker_id, stream_key],
        ))

    def cluster_view(self) -> Deferred[Dict[str, Any]]:
        d = self._request("cluster_view", "", _eval(CLUSTER_VIEW, [], [self.settings.prefix]))
        return d.addCallbacks(self._view, self._local_view)

    def _view(self, reply: List[Any]) -> Dict[str, Any]:
        workers, streams = reply
        view = empty_view(self.backend, True)
        for worker_id, flat in workers:
            info: Dict[str, Any] = _pairs(flat)
            view["workers"][_text(worker_id)] = _typed_worker(info)
        for stream_key, owner, meta, players in streams:
            lease = parse_lease(owner) if owner else None
            view["streams"][_text(stream_key)] = {
                "owner": lease.owner if lease else None,
                "epoch": lease.epoch if lease else None,
                "metadata": _pairs(meta),
                "clients": len(players),
            }
            for _client_id, flat in players:
                record = _record_from(_pairs(flat))
                if record is not None:
                    view["players"].setdefault(record["worker"], []).append(record)
        for records in view["players"].values():
            records.sort(key=lambda r: (r["connected_at"], r["client_id"]))
        view["workers"] = dict(sorted(view["workers"].items()))
        view["streams"] = dict(sorted(view["streams"].items()))
        view["players"] = dict(sorted(view["players"].items()))
        return view

    def _local_view(self, failure: Failure) -> Dict[str, Any]:
        view = empty_view(self.backend, False)
        view["error"] = failure.getErrorMessage()
        view["workers"][self.worker_id] = {
            "host": socket.gethostname(), "pid": os.getpid(), "started_at": self.started_at,
            "heartbeat_at": None, "clients": len(self._clients),
        }
        records = sorted((record_dict(r) for r in self._clients.values()),
                         key=lambda r: (r["connected_at"], r["client_id"]))
        if records:
            view["players"][self.worker_id] = records
        return view


def _typed_worker(info: Dict[str, str]) -> Dict[str, Any]:
    out: Dict[str, Any] = dict(info)
    for name, kind in (("pid", int), ("clients", int), ("started_at", float), ("heartbeat_at", float)):
        try:
            out[name] = kind(info[name])
        except (KeyError, ValueError):
            pass
    return out


def _record_from(fields: Dict[str, str]) -> Optional[Dict[str, Any]]:
    try:
        return record_dict(ClientRecord(
            client_id=fields["client_id"],
            stream_key=fields["stream_key"],
            worker=fields["worker"],
            ip=fields["ip"],
            user_agent=fields["user_agent"],
            connected_at=float(fields["connected_at"]),
            bytes_sent=int(fields["bytes_sent"]),
        ))
    except (KeyError, ValueError):
        return None
