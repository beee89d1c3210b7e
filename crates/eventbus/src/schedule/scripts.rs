//! The scheduler's Lua scripts. Each touches the keys of one partition (one
//! hash slot: `<stream>:scheduled` and `<stream>:scheduled:events` share the
//! stream's hash tag), or only the namespace's hint key, so they run on a
//! Redis Cluster as they do on a server. A script runs atomically: no other
//! command (another scheduler's move, a cancel) sees half of one.

/// KEYS: zset, events hash. ARGV: due (ms since the epoch), event id, then
/// the entry's fields as name, value, ... — packed with msgpack so the
/// fields keep their order (a hash would not).
pub(crate) const SCHEDULE: &str = r#"
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], ARGV[2], cmsgpack.pack(fields))
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
return 'scheduled'
"#;

/// KEYS: zset, events hash, stream, unreadable hash. ARGV: at most this many events, the
/// stream's approximate cap (`''` = none).
///
/// Moves the events due by the server's clock, earliest first (ties by event
/// id), to the stream: `XADD` then `HDEL` + `ZREM`, all in this one script, so
/// an event is moved exactly once however many schedulers run it and
/// whenever one is killed; a script retried after an unknown outcome finds
/// the events gone from the set and moves nothing twice. An event whose
/// packed fields cannot be read (not written by [`SCHEDULE`]) is kept in
/// `<stream>:scheduled:unreadable` and leaves the set, so it never blocks
/// the partition. If Redis refuses the `XADD` (e.g. the key is not a
/// stream), the move stops there, the event stays scheduled, and the error
/// is returned.
///
/// Returns `{now_ms, next_due_ms or '', {id, due_ms, entry_id, ...}, unreadable, error or ''}`.
pub(crate) const MOVE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[1]))
local moved = {}
local unreadable = 0
local err = ''
for i = 1, #due, 2 do
  local id = due[i]
  local packed = redis.call('HGET', KEYS[2], id)
  local ok, fields = false, nil
  if packed then ok, fields = pcall(cmsgpack.unpack, packed) end
  if not ok or type(fields) ~= 'table' or #fields == 0 or #fields % 2 ~= 0 then
    if packed then redis.call('HSET', KEYS[4], id, packed) end
    unreadable = unreadable + 1
  else
    local entry
    if ARGV[2] ~= '' then
      entry = redis.pcall('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
    else
      entry = redis.pcall('XADD', KEYS[3], '*', unpack(fields))
    end
    if type(entry) == 'table' and entry.err then
      err = entry.err
      break
    end
    moved[#moved + 1] = id
    moved[#moved + 1] = due[i + 1]
    moved[#moved + 1] = entry
  end
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[1], id)
end
local nxt = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {now, nxt[2] or '', moved, unreadable, err}
"#;

/// KEYS: the namespace's hint zset. ARGV: at most this many streams.
/// Returns `{now_ms, {stream, ...}}`: the streams whose earliest scheduled
/// event is due by the server's clock.
pub(crate) const DUE_STREAMS: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return {now, redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))}
"#;

/// KEYS: zset, events hash. ARGV: first and last rank. Returns
/// `{{id, due_ms, {name, value, ...}}, ...}` (fields empty if unreadable).
pub(crate) const LIST: &str = r#"
local ids = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2], 'WITHSCORES')
local out = {}
for i = 1, #ids, 2 do
  local packed = redis.call('HGET', KEYS[2], ids[i])
  local ok, fields = false, nil
  if packed then ok, fields = pcall(cmsgpack.unpack, packed) end
  if not ok or type(fields) ~= 'table' then fields = {} end
  out[#out + 1] = {ids[i], ids[i + 1], fields}
end
return out
"#;

/// KEYS: zset, events hash. ARGV: event id. Returns 1 if it was scheduled
/// here (and is now cancelled), 0 otherwise.
pub(crate) const CANCEL: &str = r#"
local n = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return n
"#;
