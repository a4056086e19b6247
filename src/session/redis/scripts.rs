//! The Lua scripts behind [`super::RedisStore`]. Each one is a single atomic step on the
//! keys of one session (all hash-tagged `abacus:{<id>}:…`, so every script touches one Cluster
//! slot). Times come from the Redis server's clock (`TIME`), never from a node's, so nodes with
//! skewed clocks agree on expiry.
//!
//! Key layout for a session (or a modern-era state handle) with id `S`:
//! - `abacus:{S}:rec`: hash. `r` = immutable part as JSON (version, capabilities, client info,
//!   principal), `c` created ms, `dl` absolute deadline ms (created + max lifetime), `ls` last
//!   seen ms, `rc` request count, `ct` calculations ever, `o:<op>` calculations per operation,
//!   `init`, `lvl`, `subs` (JSON array), `ver` (bumped by every change), `k` (`s`/`h`).
//! - `abacus:{S}:hist`: list of history entries (JSON text), trimmed to the cap.
//! - `abacus:{S}:st`: set of the session's SSE stream names.
//! - `abacus:{S}:m:<stream>`: hash `head`, `closed`, `owner` (node id), `orphan` (final message
//!   to write if the owner dies), `at`, `bytes`, `tp` (the producing request's trace context).
//! - `abacus:{S}:e:<stream>`: Redis Stream of events, ids `<seq>-0`, `MAXLEN ~`.
//! - `abacus:{S}:g`: the claim on the standalone GET stream (node id, short lease).

/// Redis server time in ms, shared prelude of the scripts below.
const NOW: &str = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n";

/// Slides the idle TTL of the record and history (bounded by the absolute deadline); returns the
/// TTL applied, or deletes the scope and returns -1 if its lifetime is over.
const SLIDE: &str = r#"
local function slide(rec, hist, idle, now)
  local dl = tonumber(redis.call('HGET', rec, 'dl'))
  if dl == nil or now >= dl then
    redis.call('DEL', rec, hist)
    return -1
  end
  local ttl = math.min(idle, dl - now)
  redis.call('HSET', rec, 'ls', now)
  redis.call('PEXPIRE', rec, ttl)
  redis.call('PEXPIRE', hist, ttl)
  return ttl
end
"#;

fn with_prelude(body: &str) -> String {
    format!("{NOW}{SLIDE}{body}")
}

/// KEYS: rec. ARGV: idle, lifetime, kind, immutable JSON, request count, and for handles the
/// owner (`''` without auth). Creates the scope; returns the TTL.
pub fn create() -> String {
    with_prelude(
        r#"
local idle = tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'k', ARGV[3], 'r', ARGV[4], 'c', now, 'dl', now + tonumber(ARGV[2]),
  'ls', now, 'rc', ARGV[5], 'ct', 0, 'ver', 0, 'init', 0)
if ARGV[6] then redis.call('HSET', KEYS[1], 'o', ARGV[6]) end
redis.call('PEXPIRE', KEYS[1], idle)
return idle
"#,
    )
}

/// KEYS: rec, hist. ARGV: idle, requests to count, what to read back (0 nothing, 1 the whole
/// record, 2 its immutable part `r`), kind (`s`/`h`), and optionally the owner it must have.
/// Returns nil if gone (or of another kind or owner, then untouched); else `{ttl, ver}` or
/// `{ttl, ver, field, value, …}` with what was asked for.
pub fn touch() -> String {
    with_prelude(
        r#"
if redis.call('HGET', KEYS[1], 'k') ~= ARGV[4] then return false end
if ARGV[5] and (redis.call('HGET', KEYS[1], 'o') or '') ~= ARGV[5] then return false end
local ttl = slide(KEYS[1], KEYS[2], tonumber(ARGV[1]), now)
if ttl < 0 then return false end
local n = tonumber(ARGV[2])
if n > 0 then redis.call('HINCRBY', KEYS[1], 'rc', n) end
local out = {ttl, redis.call('HGET', KEYS[1], 'ver')}
if ARGV[3] == '1' then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all do out[#out + 1] = all[i] end
elseif ARGV[3] == '2' then
  out[3] = 'r'
  out[4] = redis.call('HGET', KEYS[1], 'r') or ''
end
return out
"#,
    )
}

/// KEYS: rec, hist, recent requests. ARGV: idle, cap, requests to count, request key (empty:
/// none), the entries' ids (comma list), most requests remembered, then `op, entry` pairs.
/// Returns nil if gone, `{ttl, ver, ''}` once appended, or `{ttl, ver, ids}` without appending
/// when the request key is among the recent ones (a retried request: its first try ran).
pub fn append() -> String {
    with_prelude(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local ttl = slide(KEYS[1], KEYS[2], tonumber(ARGV[1]), now)
if ttl < 0 then return false end
local request = ARGV[4]
if request ~= '' then
  local tag = request .. '\n'
  for _, seen in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
    if string.sub(seen, 1, #tag) == tag then
      return {ttl, redis.call('HGET', KEYS[1], 'ver'), string.sub(seen, #tag + 1)}
    end
  end
  redis.call('LPUSH', KEYS[3], tag .. ARGV[5])
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[6]) - 1)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
local n = 0
for i = 7, #ARGV, 2 do
  redis.call('RPUSH', KEYS[2], ARGV[i + 1])
  redis.call('HINCRBY', KEYS[1], 'o:' .. ARGV[i], 1)
  n = n + 1
end
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('HINCRBY', KEYS[1], 'ct', n)
local pending = tonumber(ARGV[3])
if pending > 0 then redis.call('HINCRBY', KEYS[1], 'rc', pending) end
redis.call('PEXPIRE', KEYS[2], ttl)
return {ttl, redis.call('HGET', KEYS[1], 'ver'), ''}
"#,
    )
}

/// KEYS: rec, hist. Returns nil if gone, else `{fields…, '#history', n}` (HGETALL + history
/// length) or, with ARGV[1] == 'h', the history list prefixed by nothing.
pub fn read_scope() -> String {
    format!(
        "{NOW}{}",
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local dl = tonumber(redis.call('HGET', KEYS[1], 'dl'))
if dl ~= nil and now >= dl then return false end
if ARGV[1] == 'h' then return {'ok', redis.call('LRANGE', KEYS[2], 0, -1)} end
local all = redis.call('HGETALL', KEYS[1])
all[#all + 1] = '#history'
all[#all + 1] = tostring(redis.call('LLEN', KEYS[2]))
return {'ok', all}
"#
    )
}

/// KEYS: rec. ARGV: change (`init`, `lvl`, `sub`, `unsub`), value, signal channel, signal JSON,
/// most subscriptions. Applies the change, bumps `ver`, publishes the invalidation; 0 if gone,
/// -1 (nothing changed) if a new subscription would pass the bound.
pub fn update() -> String {
    r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local what = ARGV[1]
if what == 'init' then
  redis.call('HSET', KEYS[1], 'init', 1)
elseif what == 'lvl' then
  redis.call('HSET', KEYS[1], 'lvl', ARGV[2])
else
  local raw = redis.call('HGET', KEYS[1], 'subs')
  local subs = {}
  if raw then subs = cjson.decode(raw) end
  local out, found = {}, false
  for _, u in ipairs(subs) do
    if u == ARGV[2] then found = true end
    if not (what == 'unsub' and u == ARGV[2]) then out[#out + 1] = u end
  end
  if what == 'sub' and not found then
    if #out >= tonumber(ARGV[5]) then return -1 end
    out[#out + 1] = ARGV[2]
  end
  if #out == 0 then redis.call('HDEL', KEYS[1], 'subs')
  else redis.call('HSET', KEYS[1], 'subs', cjson.encode(out)) end
end
redis.call('HINCRBY', KEYS[1], 'ver', 1)
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
"#
    .to_owned()
}

/// KEYS: rec, hist, streams set, GET claim. ARGV: key prefix `abacus:{S}:`, signal channel,
/// signal JSON. Deletes the session and all its streams; returns 1 + how long it lived (ms),
/// or 0 if it did not exist or is not a session (a state handle's id is refused, never
/// deleted).
pub fn delete() -> String {
    format!(
        "{NOW}{}",
        r#"
if redis.call('HGET', KEYS[1], 'k') ~= 's' then return 0 end
local lived = now - (tonumber(redis.call('HGET', KEYS[1], 'c')) or now)
for _, s in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  redis.call('DEL', ARGV[1] .. 'e:' .. s, ARGV[1] .. 'm:' .. s)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1] .. 'rq')
redis.call('PUBLISH', ARGV[2], ARGV[3])
return lived + 1
"#
    )
}

/// KEYS: meta, streams set. ARGV: stream name, owner node, orphan message, TTL ms.
/// Creates the stream's metadata if absent.
///
/// Then bounds what the session keeps (ARGV: key prefix `abacus:{S}:`, most streams, most bytes
/// of finished streams; then the producer's `traceparent` or `''`): names of expired streams are forgotten, and the oldest finished
/// streams are deleted while the session holds more streams, or more bytes of finished ones,
/// than allowed. Streams still being written are never deleted. Returns how many were.
pub fn open_stream() -> String {
    format!(
        "{NOW}{}",
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'head', 0, 'closed', 0, 'owner', ARGV[2], 'orphan', ARGV[3], 'at', now)
  if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'tp', ARGV[8]) end
end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
local most, budget = tonumber(ARGV[6]), tonumber(ARGV[7])
local names = redis.call('SMEMBERS', KEYS[2])
local finished, count, bytes = {}, 0, 0
for _, s in ipairs(names) do
  local f = redis.call('HMGET', ARGV[5] .. 'm:' .. s, 'closed', 'at', 'bytes')
  if not f[1] then
    redis.call('SREM', KEYS[2], s)
  else
    count = count + 1
    if f[1] == '1' and s ~= ARGV[1] then
      local b = tonumber(f[3] or '0') or 0
      finished[#finished + 1] = {tonumber(f[2] or '0') or 0, s, b}
      bytes = bytes + b
    end
  end
end
if count <= most and bytes <= budget then return 0 end
table.sort(finished, function(x, y) return x[1] < y[1] end)
local deleted = 0
for _, f in ipairs(finished) do
  if count <= most and bytes <= budget then break end
  redis.call('DEL', ARGV[5] .. 'm:' .. f[2], ARGV[5] .. 'e:' .. f[2])
  redis.call('SREM', KEYS[2], f[2])
  count, bytes, deleted = count - 1, bytes - f[3], deleted + 1
end
return deleted
"#
    )
}

/// KEYS: meta, events. ARGV: message, MAXLEN, TTL ms, notify channel, notify payload,
/// close after (1/0). Appends (and optionally closes) atomically, then wakes readers on every
/// node. Returns the sequence number, or 0 if the stream is already closed.
pub fn append_event() -> String {
    r#"
if redis.call('HGET', KEYS[1], 'closed') == '1' then return 0 end
local seq = redis.call('HINCRBY', KEYS[1], 'head', 1)
redis.call('HINCRBY', KEYS[1], 'bytes', #ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], seq .. '-0', 'm', ARGV[1])
if ARGV[6] == '1' then redis.call('HSET', KEYS[1], 'closed', 1) end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return seq
"#
    .to_owned()
}

/// KEYS: meta. ARGV: notify channel, payload. Marks the stream complete.
pub fn close_stream() -> String {
    r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'closed', 1)
redis.call('PUBLISH', ARGV[1], ARGV[2])
return 1
"#
    .to_owned()
}

/// KEYS: rec, meta, events. ARGV: after, max count, TTL ms (slid for readers).
/// Returns `{state, head, closed, owner, seq1, msg1, …}`; state is `gone` when the session or
/// the stream does not exist.
pub fn read_events() -> String {
    r#"
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('EXISTS', KEYS[2]) == 0 then
  return {'gone'}
end
local m = redis.call('HMGET', KEYS[2], 'head', 'closed', 'owner')
local out = {'ok', m[1] or '0', m[2] or '0', m[3] or ''}
local rows = redis.call('XRANGE', KEYS[3], '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])
for _, row in ipairs(rows) do
  local seq = string.match(row[1], '^(%d+)-')
  out[#out + 1] = seq
  out[#out + 1] = row[2][2]
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return out
"#
    .to_owned()
}

/// KEYS: meta, events. ARGV: MAXLEN, notify channel, payload. Ends a stream whose owner died:
/// writes its orphan message as the final event, once.
pub fn end_orphan() -> String {
    r#"
local m = redis.call('HMGET', KEYS[1], 'closed', 'orphan')
if m[1] == '1' or m[1] == false then return 0 end
local seq = redis.call('HINCRBY', KEYS[1], 'head', 1)
if m[2] and m[2] ~= '' then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], seq .. '-0', 'm', m[2])
end
redis.call('HSET', KEYS[1], 'closed', 1)
redis.call('PUBLISH', ARGV[2], ARGV[3])
return seq
"#
    .to_owned()
}

/// KEYS: claim. ARGV: node, lease ms. Takes the claim if free or already ours.
pub fn claim() -> String {
    r#"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"#
    .to_owned()
}

/// KEYS: claim. ARGV: node. Releases the claim if it is ours.
pub fn release() -> String {
    r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"#
    .to_owned()
}
