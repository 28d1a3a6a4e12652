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

pub(crate) const PUT: &str = r"
local fixed = writable(KEYS[1])
local ver, reset = bump(KEYS[2], 1)
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'ver', int(ver))
if tonumber(ARGV[2]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) else redis.call('PERSIST', KEYS[1]) end
redis.call('PUBLISH', ARGV[3], record(int(ver), ARGV[4], ARGV[1]))
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

/// The shares of one key live in two Redis keys of one hash slot: a hash of values by member
/// (and the key's version under the empty field, which no member can be) and a sorted set
/// of ranks. Shared by the share scripts: `leaders(n)` encodes the top `n` (all for -1) as
/// `Shares` tokens, member, rank, value.
pub(crate) const SHARES_COMMON: &str = r"
local function tok(s) s = tostring(s) return #s .. ':' .. s end
local function leaders(last)
  local t = redis.call('ZREVRANGE', KEYS[2], 0, last, 'WITHSCORES')
  local out = {}
  for i = 1, #t, 2 do
    out[#out + 1] = tok(t[i]) .. tok(t[i + 1]) .. tok(redis.call('HGET', KEYS[1], t[i]) or '')
  end
  return table.concat(out), t
end
";

/// Sets one member's share; when the member count changes, or the rank of either of the
/// two leaders moves by more than `ARGV[6]` ([`atrion_state::shares::NOTIFY_RANK_STEP`]),
/// bumps the key's version and notifies the new leaders. Something else than our hash or
/// sorted set under either key is deleted first (counted in the reply).
pub(crate) const SHARE_PUT: &str = r"
local fixed = 0
for i, want in ipairs({'hash', 'zset'}) do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= want and t ~= 'none' then redis.call('DEL', KEYS[i]); fixed = fixed + 1 end
end
local function ranks(t) return tonumber(t[2]) or -math.huge, tonumber(t[4]) or -math.huge end
local n0 = redis.call('ZCARD', KEYS[2])
local a0, b0 = ranks(redis.call('ZREVRANGE', KEYS[2], 0, 1, 'WITHSCORES'))
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
local n = redis.call('ZCARD', KEYS[2])
local top, t = leaders(1)
local a1, b1 = ranks(t)
local step = tonumber(ARGV[6])
local function moved(x, y)
  if x == y then return false end
  if x == -math.huge or y == -math.huge then return true end
  return math.abs(x - y) > step
end
if n ~= n0 or moved(a0, a1) or moved(b0, b1) then
  local ver = redis.call('HINCRBY', KEYS[1], '', 1)
  local shares = tok('s1') .. tok(n) .. top
  redis.call('PUBLISH', ARGV[4], tok('set') .. tok(ver) .. tok(ARGV[5]) .. tok(shares))
end
return fixed
";

/// The encoded shares of one key: the top `ARGV[2] + 1` (all for -1), then `ARGV[1]`'s own
/// share if it is not among them; `false` when the key has none.
pub(crate) const SHARES_READ: &str = r"
local n = redis.call('ZCARD', KEYS[2])
if n == 0 then return false end
local top, t = leaders(tonumber(ARGV[2]))
local out = tok('s1') .. tok(n) .. top
if ARGV[1] ~= '' then
  for i = 1, #t, 2 do if t[i] == ARGV[1] then return out end end
  local r = redis.call('ZSCORE', KEYS[2], ARGV[1])
  if r then out = out .. tok(ARGV[1]) .. tok(r) .. tok(redis.call('HGET', KEYS[1], ARGV[1]) or '') end
end
return out
";
