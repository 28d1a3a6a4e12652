//! The Lua scripts of the Redis store: each write, its version bump, its TTL and its change
//! notification happen atomically on the server.
//!
//! A notification is a run of records of length-prefixed tokens (`<len>:<bytes>`, the
//! tokens of [`atrion_state::shares`]): `set <version> <key> <value>`, `ref <version> <key>`
//! (a set whose value is too large to carry), `del 0 <key>`. `feed.rs` reads them.

/// Repairs shared by the write scripts, each counted in the script's last reply:
/// - `writable`: something that is not one of our hashes under one of our keys (written by
///   someone else) is deleted before the write replaces it.
/// - `bump`: a version counter that is not an integer restarts above every version handed
///   out, at the server's clock in microseconds (versions come from `INCRBY`, which cannot
///   outrun one per microsecond).
pub(crate) const REPAIRS: &str = r"
local function tok(s) s = tostring(s) return #s .. ':' .. s end
local function record(ver, key, v)
  if #v <= 1024 then return tok('set') .. tok(ver) .. tok(key) .. tok(v) end
  return tok('ref') .. tok(ver) .. tok(key)
end
local function writable(k)
  local t = redis.call('TYPE', k)['ok']
  if t == 'hash' or t == 'none' then return 0 end
  redis.call('DEL', k)
  return 1
end
local function int(x) return string.format('%d', x) end
local function bump(counter, n)
  local r = redis.pcall('INCRBY', counter, n)
  if type(r) == 'number' then return r, 0 end
  local now = redis.call('TIME')
  redis.call('DEL', counter)
  redis.call('SET', counter, now[1] .. string.format('%06d', tonumber(now[2])))
  return redis.call('INCRBY', counter, n), 1
end
";

/// A write; announced on the channel `ARGV[3]`, or not at all when it is empty
/// (`put_quiet`).
pub(crate) const PUT: &str = r"
local fixed = writable(KEYS[1])
local ver, reset = bump(KEYS[2], 1)
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'ver', int(ver))
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) else redis.call('PERSIST', KEYS[1]) end
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], record(int(ver), ARGV[4], ARGV[1])) end
return {ver, fixed + reset}
";

/// A key holding something else than one of our hashes counts as absent (and is repaired).
pub(crate) const CAS: &str = r"
local fixed = writable(KEYS[1])
local cur = redis.call('HGET', KEYS[1], 'ver')
if cur == false then cur = '' end
if cur ~= ARGV[5] then return {0, cur, fixed} end
local ver, reset = bump(KEYS[2], 1)
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'ver', int(ver))
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) else redis.call('PERSIST', KEYS[1]) end
redis.call('PUBLISH', ARGV[3], record(int(ver), ARGV[4], ARGV[1]))
return {1, int(ver), fixed + reset}
";

pub(crate) const DELETE: &str = r"
local n = redis.call('DEL', KEYS[1])
if n == 1 then redis.call('PUBLISH', ARGV[1], '3:del1:0' .. #ARGV[2] .. ':' .. ARGV[2]) end
return n
";

/// A group (`StateStore::transact`) as one script: Redis runs it to the end with nothing
/// in between, and persists and replicates its effects as one `MULTI`/`EXEC`, so a kill
/// leaves all of it or none. KEYS: an entry and its version counter per distinct key.
/// ARGV: the channel, the number of checks, then per check the key's index (from 1) and
/// the version expected (`''`: absent); the number of writes, then per write `p`, index,
/// value, TTL in ms, user's key; or `d`, index, user's key. Every check is read before
/// anything is written: a failed one returns `{0, check, found}` having written nothing
/// (something else than our hash under a key counts as absent, and is left alone). Else
/// `{1, versions ('' for a delete), repairs}`, with one notice of every write.
pub(crate) const GROUP: &str = r"
local nc = tonumber(ARGV[2])
local a = 3
for i = 1, nc do
  local k = KEYS[2 * tonumber(ARGV[a]) - 1]
  local cur = false
  if redis.call('TYPE', k)['ok'] == 'hash' then cur = redis.call('HGET', k, 'ver') end
  if cur == false then cur = '' end
  if cur ~= ARGV[a + 1] then return {0, i, cur} end
  a = a + 2
end
local nw = tonumber(ARGV[a])
a = a + 1
local out, msg, fixed = {}, {}, 0
for i = 1, nw do
  local kind, j = ARGV[a], tonumber(ARGV[a + 1])
  local k, c = KEYS[2 * j - 1], KEYS[2 * j]
  if kind == 'p' then
    fixed = fixed + writable(k)
    local ver, reset = bump(c, 1)
    fixed = fixed + reset
    redis.call('HSET', k, 'v', ARGV[a + 2], 'ver', int(ver))
    if tonumber(ARGV[a + 3]) > 0 then redis.call('PEXPIRE', k, ARGV[a + 3]) else redis.call('PERSIST', k) end
    msg[#msg + 1] = record(int(ver), ARGV[a + 4], ARGV[a + 2])
    out[i] = int(ver)
    a = a + 5
  else
    if redis.call('DEL', k) == 1 then msg[#msg + 1] = tok('del') .. tok('0') .. tok(ARGV[a + 2]) end
    out[i] = ''
    a = a + 3
  end
end
if #msg > 0 then redis.call('PUBLISH', ARGV[1], table.concat(msg)) end
return {1, out, fixed}
";

/// The shares of one key live in two Redis keys of one hash slot: a hash of values by member
/// (and the key's version under the empty field, which no member can be) and a sorted set
/// of ranks. Shared by the share scripts: `tok` writes a token; `leaders(values, ranks, last)`
/// encodes the top `last + 1` (all for -1) as `Shares` tokens, member, rank, value.
pub(crate) const SHARES_COMMON: &str = r"
local function tok(s) s = tostring(s) return #s .. ':' .. s end
local function leaders(vk, rk, last)
  local t = redis.call('ZREVRANGE', rk, 0, last, 'WITHSCORES')
  local out = {}
  for i = 1, #t, 2 do
    out[#out + 1] = tok(t[i]) .. tok(t[i + 1]) .. tok(redis.call('HGET', vk, t[i]) or '')
  end
  return table.concat(out), t
end
";

/// Sets members' shares: for each (hash of values, sorted set of ranks) pair of KEYS, with
/// (member, rank, value, key) in ARGV after the channel and the step, reads the key's top
/// three, writes the share, and works out the new top two from those (the new leaders are
/// among the old top three and this member). When the key gains one of its first three
/// members, or the rank of either of its two leaders moves by more than the step
/// ([`atrion_state::shares::NOTIFY_RANK_STEP`]), bumps the key's version and notifies its new
/// leaders (one `PUBLISH` for the whole call). Three commands per share when it is no news,
/// four to six when it is: a script's cost is its commands (a share costs ~13 µs of server
/// time on the reference machine). Something else than our hash or sorted set under a key is
/// deleted first (counted in the reply). On a Redis Cluster each call carries one key (one
/// slot); on one server, up to [`SHARES_CHUNK`].
pub(crate) const SHARE_PUT: &str = r"
local step = tonumber(ARGV[2])
local function moved(x, y)
  if x == y then return false end
  if x == nil or y == nil then return true end
  return math.abs(x - y) > step
end
-- A score as Redis writes it (`inf`, `-inf` included); nil stays nil (no such leader).
local function num(x)
  if x == nil then return nil end
  local n = tonumber(x)
  if n then return n end
  if string.sub(x, 1, 1) == '-' then return -math.huge end
  return math.huge
end
-- Redis's order, highest first: by score, then by member.
local function before(x, y)
  if x[3] ~= y[3] then return x[3] > y[3] end
  return x[1] > y[1]
end
local fixed, msg = 0, {}
-- Something else under a key fails its first command: deleted, counted, done again.
local function call(k, ...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r.err then
    redis.call('DEL', k)
    fixed = fixed + 1
    r = redis.call(...)
  end
  return r
end
for i = 1, #KEYS / 2 do
  local vk, rk = KEYS[2 * i - 1], KEYS[2 * i]
  local a = 2 + (i - 1) * 4
  local m, rs, v = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  -- The top three before the write: the new top two are among them and this member.
  local t = call(rk, 'ZREVRANGE', rk, 0, 2, 'WITHSCORES')
  call(vk, 'HSET', vk, m, v)
  local added = redis.call('ZADD', rk, rs, m)
  local l = {{m, rs, num(rs)}}
  for j = 1, #t, 2 do
    if t[j] ~= m then l[#l + 1] = {t[j], t[j + 1], num(t[j + 1])} end
  end
  table.sort(l, before)
  local a1, b1 = l[1][3], l[2] and l[2][3]
  -- A member joining a key of three or more below its leaders is not news: a reader's
  -- count (more than the two listed) says the same either way.
  if (added == 1 and #t < 6) or moved(num(t[2]), a1) or moved(num(t[4]), b1) then
    local ver = redis.call('HINCRBY', vk, '', 1)
    local n = #t / 2 + added
    if #t == 6 then n = redis.call('ZCARD', rk) end
    local s = tok('s1') .. tok(n)
    for j = 1, math.min(#l, 2) do
      local mem, r = l[j][1], l[j][2]
      local val = v
      if mem ~= m then val = redis.call('HGET', vk, mem) or '' end
      s = s .. tok(mem) .. tok(r) .. tok(val)
    end
    msg[#msg + 1] = tok('set') .. tok(ver) .. tok(ARGV[a + 4]) .. tok(s)
  end
end
if #msg > 0 then redis.call('PUBLISH', ARGV[1], table.concat(msg)) end
return fixed
";

/// Shares per `SHARE_PUT` call on one server: larger calls cost more per share (18 µs at
/// 256, 13 µs at 64 and 16, measured with `INFO commandstats`).
pub(crate) const SHARES_CHUNK: usize = 64;

/// The encoded shares of one key: the top `ARGV[2] + 1` (all for -1), then `ARGV[1]`'s own
/// share if it is not among them; `false` when the key has none.
pub(crate) const SHARES_READ: &str = r"
local n = redis.call('ZCARD', KEYS[2])
if n == 0 then return false end
local top, t = leaders(KEYS[1], KEYS[2], tonumber(ARGV[2]))
local out = tok('s1') .. tok(n) .. top
if ARGV[1] ~= '' then
  for i = 1, #t, 2 do if t[i] == ARGV[1] then return out end end
  local r = redis.call('ZSCORE', KEYS[2], ARGV[1])
  if r then out = out .. tok(ARGV[1]) .. tok(r) .. tok(redis.call('HGET', KEYS[1], ARGV[1]) or '') end
end
return out
";
