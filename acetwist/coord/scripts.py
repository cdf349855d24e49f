# -*- test-case-name: tests.test_coord_contract,tests.test_coord_redis -*-
"""
The Lua scripts of the Redis coordinator, as L{Script}s whose KEYS and ARGV
have names. A script called with keyword arguments gives the C{EVAL}
command to send::

    CLAIM(owner_key=..., epoch_key=..., streams_key=..., worker=..., ...)

Inside the Lua, each name is a local (C{owner_key} is C{KEYS[1]}, C{worker}
is C{ARGV[1]}, ...); ARGV values are strings, as Redis passes them.

Every script takes its times from Redis (C{TIME}), so workers with skewed
clocks agree on expiry. Index ZSETs are scored by expiry (ms) and only ever
moved forward; their own TTL is only ever extended. Scripts are replicated
by effects (Redis >= 5), so they may write after reading C{TIME}.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import attr

#: Helpers some scripts start with.
LIB = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function index(key, member, expires, ttl)
  local s = redis.call('ZSCORE', key, member)
  if (not s) or tonumber(s) < expires then redis.call('ZADD', key, expires, member) end
  if redis.call('PTTL', key) < ttl then redis.call('PEXPIRE', key, ttl) end
end
local function keep_data_set(key, now, ttl)
  if not redis.call('SET', key, string.format('%d', now), 'NX', 'PX', ttl) then
    if redis.call('PTTL', key) < tonumber(ttl) then redis.call('PEXPIRE', key, ttl) end
  end
end
"""


@attr.s(frozen=True, auto_attribs=True)
class Script:
    """
    One Lua script with named KEYS and ARGV.

    @ivar name: what the script does (for logs and counters).
    @ivar body: the Lua, using the names below as locals.
    @ivar keys: names of C{KEYS[1..n]}.
    @ivar args: names of C{ARGV[1..m]}.
    @ivar more_keys: if set, a keyword taking a sequence appended to KEYS,
        visible in the Lua as a table of that name.
    @ivar more_args: likewise for ARGV.
    @ivar lib: whether the body uses L{LIB}'s helpers.
    """

    name: str
    body: str
    keys: Tuple[str, ...] = ()
    args: Tuple[str, ...] = ()
    more_keys: Optional[str] = None
    more_args: Optional[str] = None
    lib: bool = False

    def __attrs_post_init__(self) -> None:
        names = [*self.keys, *self.args, *filter(None, (self.more_keys, self.more_args))]
        if len(set(names)) != len(names) or not all(n.isidentifier() for n in names):
            raise ValueError(f"script {self.name}: names must be distinct identifiers: {names}")

    @property
    def lua(self) -> str:
        """The script as sent: locals for every name, the helpers, the body."""
        lines = [f"local {name} = KEYS[{i}]" for i, name in enumerate(self.keys, 1)]
        lines += [f"local {name} = ARGV[{i}]" for i, name in enumerate(self.args, 1)]
        for table, source, first in ((self.more_keys, "KEYS", len(self.keys) + 1),
                                     (self.more_args, "ARGV", len(self.args) + 1)):
            if table is not None:
                lines.append(f"local {table} = {{}}")
                lines.append(f"for i = {first}, #{source} do {table}[#{table} + 1] = {source}[i] end")
        return "\n".join(lines) + (LIB if self.lib else "\n") + self.body.strip() + "\n"

    def __call__(self, **values: Any) -> List[Any]:
        """The C{EVAL} command for these named values (every name required, no other)."""
        expected = {*self.keys, *self.args, *filter(None, (self.more_keys, self.more_args))}
        if set(values) != expected:
            raise TypeError(f"script {self.name} takes {sorted(expected)}, not {sorted(values)}")
        keys: List[Any] = [values[name] for name in self.keys]
        args: List[Any] = [values[name] for name in self.args]
        if self.more_keys is not None:
            keys += list(values[self.more_keys])
        if self.more_args is not None:
            args += list(values[self.more_args])
        return ["EVAL", self.lua, len(keys), *keys, *args]


# ---------------------------------------------------------------- ownership

#: Claim an unowned stream. The epoch is INCR'ed, floored at Redis's clock in
#: ms, so it stays strictly higher than any earlier one even after the counter
#: was lost (a Redis restart without persistence, or the counter's TTL).
#: Answers C{{1, lease}} or C{{0, current lease}}; with C{aliases} = 1, an
#: unowned stream whose alias (C{alias_key}) is owned answers C{{2, alias}}
#: instead (the alias's owner key is C{prefix:stream:<alias>:owner}).
CLAIM = Script("claim", lib=True, keys=("owner_key", "epoch_key", "streams_key", "alias_key"),
               args=("worker", "lease_ms", "epoch_ttl_ms", "stream", "index_ttl_ms", "prefix", "aliases"), body="""
local cur = redis.call('GET', owner_key)
if cur then return {0, cur} end
if aliases == '1' then
  local other = redis.call('GET', alias_key)
  if other and redis.call('EXISTS', prefix .. ':stream:' .. other .. ':owner') == 1 then return {2, other} end
end
local now = now_ms()
local e = redis.call('INCR', epoch_key)
if e < now then
  e = now
  redis.call('SET', epoch_key, string.format('%d', e))
end
local val = worker .. ':' .. string.format('%d', e)
if not redis.call('SET', owner_key, val, 'NX', 'PX', lease_ms) then
  return {0, redis.call('GET', owner_key)}
end
redis.call('PEXPIRE', epoch_key, epoch_ttl_ms)
index(streams_key, stream, now + tonumber(index_ttl_ms), tonumber(index_ttl_ms))
return {1, val}
""")

#: Extend a lease that is still exactly ours (1), else 0.
RENEW = Script("renew", lib=True, keys=("owner_key", "epoch_key", "meta_key", "streams_key"),
               args=("lease", "lease_ms", "epoch_ttl_ms", "stream", "index_ttl_ms", "stream_ttl_ms"), body="""
if redis.call('GET', owner_key) ~= lease then return 0 end
redis.call('PEXPIRE', owner_key, lease_ms)
redis.call('PEXPIRE', epoch_key, epoch_ttl_ms)
redis.call('PEXPIRE', meta_key, stream_ttl_ms)
index(streams_key, stream, now_ms() + tonumber(index_ttl_ms), tonumber(index_ttl_ms))
return 1
""")

#: Delete a lease only if it is still exactly ours.
RELEASE = Script("release", keys=("owner_key",), args=("lease",), body="""
if redis.call('GET', owner_key) == lease then return redis.call('DEL', owner_key) end
return 0
""")

# ---------------------------------------------------------------- aliases

#: Two keys of one stream (C{stream}, whose owner's engine session named
#: C{canonical}): record the alias both ways for C{ttl_ms}, and answer
#: C{canonical}'s current lease (nil when nobody owns it). Together with
#: CLAIM's alias check this leaves no window: a claim of C{canonical} either
#: ran before (its owner is answered here, and the caller defers to it) or
#: runs after (it finds the alias and C{stream}'s owner, and is redirected).
ALIAS = Script("alias", keys=("alias_key", "canonical_alias_key", "canonical_owner_key"),
               args=("stream", "canonical", "ttl_ms"), body="""
redis.call('SET', alias_key, canonical, 'PX', ttl_ms)
redis.call('SET', canonical_alias_key, stream, 'PX', ttl_ms)
return redis.call('GET', canonical_owner_key)
""")

ALIAS_SCRIPTS = (ALIAS,)

# ---------------------------------------------------------------- mirror

#: Fenced: only the current lease holder's blocks get into the mirror.
PUBLISH = Script("publish", keys=("owner_key", "mirror_key"),
                 args=("lease", "maxlen", "ttl_ms", "data", "keyframe", "psi", "epoch", "seq", "segment",
                       "created", "hls"), body="""
if redis.call('GET', owner_key) ~= lease then return 0 end
redis.call('XADD', mirror_key, 'MAXLEN', '~', maxlen, '*',
  'data', data, 'keyframe', keyframe, 'psi', psi, 'epoch', epoch,
  'seq', seq, 'segment', segment, 'created', created, 'hls', hls)
redis.call('PEXPIRE', mirror_key, ttl_ms)
return 1
""")

#: Delete a stream's mirror and metadata, unless another worker owns it again.
STREAM_GONE = Script("stream_gone", keys=("owner_key", "mirror_key", "meta_key", "streams_key"),
                     args=("worker", "stream"), body="""
local cur = redis.call('GET', owner_key)
if cur and string.match(cur, '^(.*):%d+$') ~= worker then return 0 end
redis.call('DEL', mirror_key, meta_key)
redis.call('ZREM', streams_key, stream)
return 1
""")

#: Merge fields (name, value, ...) into a stream's metadata.
UPDATE_STREAM = Script("update_stream", lib=True, keys=("meta_key", "streams_key"),
                       args=("stream", "stream_ttl_ms"), more_args="fields", body="""
if #fields > 0 then redis.call('HSET', meta_key, unpack(fields)) end
local ttl = tonumber(stream_ttl_ms)
redis.call('PEXPIRE', meta_key, ttl)
index(streams_key, stream, now_ms() + ttl, ttl)
return 1
""")

#: Where a follower starts: C{resume} at its last entry if that is still
#: there; otherwise the newest keyframe entry (with a C{backlog} in seconds,
#: the newest one created at least that long before the newest entry, else
#: the oldest of the newest keyframe's epoch and segment), else the newest
#: entry, else C{empty}.
FOLLOW_START = Script("follow_start", keys=("mirror_key",),
                      args=("last_id", "page_size", "scan_limit", "backlog"), body="""
if last_id ~= '' and #redis.call('XRANGE', mirror_key, last_id, last_id) > 0 then
  return {'resume', last_id}
end
local page = tonumber(page_size)
local limit = tonumber(scan_limit)
local back = tonumber(backlog) or 0
local top = '+'
local newest = false
local newest_created = 0
local found = false
local run = false
local scanned = 0
while scanned < limit do
  local entries = redis.call('XREVRANGE', mirror_key, top, '-', 'COUNT', page)
  local fresh = 0
  for _, e in ipairs(entries) do
    if e[1] ~= top then
      fresh = fresh + 1
      scanned = scanned + 1
      local f = e[2]
      local keyframe, created, epoch, segment = false, 0, '', ''
      for j = 1, #f, 2 do
        local name = f[j]
        if name == 'keyframe' then keyframe = f[j + 1] == '1'
        elseif name == 'created' then created = tonumber(f[j + 1]) or 0
        elseif name == 'epoch' then epoch = f[j + 1]
        elseif name == 'segment' then segment = f[j + 1] end
      end
      if not newest then newest, newest_created = e[1], created end
      -- the backlog stays within the newest keyframe's epoch and segment
      if run and run ~= epoch .. '/' .. segment then return {'keyframe', found} end
      if keyframe then
        found, run = e[1], epoch .. '/' .. segment
        if back <= 0 or newest_created - created >= back then return {'keyframe', found} end
      end
    end
  end
  if fresh == 0 or #entries < page then break end
  top = entries[#entries][1]
end
if found then return {'keyframe', found} end
if newest then return {'newest', newest} end
return {'empty', '0-0'}
""")

# ---------------------------------------------------------------- players and workers

#: Write (create or refresh) a player's record (fields name, value, ...) and index it.
CLIENT_WRITE = Script("client_write", lib=True, keys=("client_key", "clients_key", "streams_key"),
                      args=("client_id", "ttl_ms", "stream"), more_args="fields", body="""
local now = now_ms()
local ttl = tonumber(ttl_ms)
redis.call('HSET', client_key, unpack(fields))
redis.call('PEXPIRE', client_key, ttl)
redis.call('ZREMRANGEBYSCORE', clients_key, '-inf', '(' .. now)
index(clients_key, client_id, now + ttl, ttl)
index(streams_key, stream, now + ttl, ttl)
return 1
""")

CLIENT_LEFT = Script("client_left", keys=("client_key", "clients_key"), args=("client_id",), body="""
redis.call('DEL', client_key)
redis.call('ZREM', clients_key, client_id)
return 1
""")

#: C{{players, age of the data set in ms}}; the age is -1 when the data-set
#: marker was missing (Redis restarted, was flushed, or nobody refreshed the
#: marker for its TTL) and has just been created.
CLIENT_COUNT = Script("client_count", lib=True, keys=("clients_key", "since_key"), args=("since_ttl_ms",),
                      body="""
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', clients_key, '-inf', '(' .. now)
local count = redis.call('ZCARD', clients_key)
local since = tonumber(redis.call('GET', since_key) or '')
if not since then
  redis.call('SET', since_key, string.format('%d', now), 'PX', since_ttl_ms)
  return {count, -1}
end
return {count, now - since}
""")

#: Register a worker and keep the data-set marker alive (creating it if missing).
HEARTBEAT = Script("heartbeat", lib=True, keys=("worker_key", "workers_key", "since_key"),
                   args=("worker", "ttl_ms", "host", "pid", "started_at", "clients", "since_ttl_ms"), body="""
local now = now_ms()
local ttl = tonumber(ttl_ms)
redis.call('HSET', worker_key, 'host', host, 'pid', pid, 'started_at', started_at,
  'clients', clients, 'heartbeat_at', string.format('%.3f', now / 1000))
redis.call('PEXPIRE', worker_key, ttl)
redis.call('ZREMRANGEBYSCORE', workers_key, '-inf', '(' .. now)
index(workers_key, worker, now + ttl, ttl)
keep_data_set(since_key, now, since_ttl_ms)
return 1
""")

#: A worker's clean stop: its key, and its players' records (C{player_keys}
#: holds a client key and its stream's clients key per id in C{client_ids}).
FORGET_WORKER = Script("forget_worker", keys=("worker_key", "workers_key"), args=("worker",),
                       more_keys="player_keys", more_args="client_ids", body="""
redis.call('DEL', worker_key)
redis.call('ZREM', workers_key, worker)
for i, client_id in ipairs(client_ids) do
  redis.call('DEL', player_keys[2 * i - 1])
  redis.call('ZREM', player_keys[2 * i], client_id)
end
return 1
""")

#: C{{workers, streams}} of the whole cluster. Reads keys it is not given
#: (standalone Redis only).
CLUSTER_VIEW = Script("cluster_view", lib=True, args=("prefix",), body="""
local p = prefix
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
""")

# ---------------------------------------------------------------- engine load

#: Take slot C{slot} on an engine when it has fewer than C{capacity} live
#: slots (0: no limit), or refresh it if it is already there; the slot expires
#: C{ttl_ms} from now. Answers C{{1, slots}} or C{{0, slots}}.
ENGINE_RESERVE = Script("engine_reserve", lib=True, keys=("slots_key", "engines_key"),
                        args=("engine", "slot", "capacity", "ttl_ms", "index_ttl_ms"), body="""
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', slots_key, '-inf', now)
local n = redis.call('ZCARD', slots_key)
local cap = tonumber(capacity)
if not redis.call('ZSCORE', slots_key, slot) then
  if cap > 0 and n >= cap then return {0, n} end
  n = n + 1
end
local ttl = tonumber(ttl_ms)
redis.call('ZADD', slots_key, now + ttl, slot)
if redis.call('PTTL', slots_key) < ttl then redis.call('PEXPIRE', slots_key, ttl) end
index(engines_key, engine, now + tonumber(index_ttl_ms), tonumber(index_ttl_ms))
return {1, n}
""")

#: Write slot C{slot} (a running session's) to expire C{ttl_ms} from now,
#: whether or not it was still there.
ENGINE_COMMIT = Script("engine_commit", lib=True, keys=("slots_key", "engines_key"),
                       args=("engine", "slot", "ttl_ms", "index_ttl_ms"), body="""
local now = now_ms()
local ttl = tonumber(ttl_ms)
redis.call('ZADD', slots_key, now + ttl, slot)
if redis.call('PTTL', slots_key) < ttl then redis.call('PEXPIRE', slots_key, ttl) end
index(engines_key, engine, now + tonumber(index_ttl_ms), tonumber(index_ttl_ms))
return 1
""")

#: C{{engine, live slots, ...}} for every engine in the index with live
#: slots. Reads keys it
#: is not given (standalone Redis only, like C{cluster_view}).
ENGINE_LOADS = Script("engine_loads", lib=True, keys=("engines_key",), args=("prefix",), body="""
local now = now_ms()
redis.call('ZREMRANGEBYSCORE', engines_key, '-inf', '(' .. now)
local out = {}
for _, e in ipairs(redis.call('ZRANGEBYSCORE', engines_key, now, '+inf')) do
  local key = prefix .. ':engine:' .. e .. ':slots'
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  local n = redis.call('ZCARD', key)
  if n > 0 then
    out[#out + 1] = e
    out[#out + 1] = n
  end
end
return out
""")

#: Every script, by name.
SCRIPTS: Dict[str, Script] = {s.name: s for s in (
    CLAIM, RENEW, RELEASE, PUBLISH, STREAM_GONE, UPDATE_STREAM, FOLLOW_START, CLIENT_WRITE, CLIENT_LEFT,
    CLIENT_COUNT, HEARTBEAT, FORGET_WORKER, CLUSTER_VIEW, ENGINE_RESERVE, ENGINE_COMMIT, ENGINE_LOADS,
) + ALIAS_SCRIPTS}


def flat_fields(fields: Sequence[Tuple[str, Any]]) -> List[Any]:
    """C{[(name, value), ...]} as Redis's C{name, value, ...}."""
    return [item for pair in fields for item in pair]
