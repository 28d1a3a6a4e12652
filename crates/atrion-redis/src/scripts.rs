//! The Lua scripts of the Redis store: each write, its version bump, its TTL and its change
//! notification happen atomically on the server.

/// Repairs shared by the write scripts, each counted in the script's last reply:
/// - `writable`: something that is not one of our hashes under one of our keys (written by
///   someone else) is deleted before the write replaces it.
/// - `bump`: a version counter that is not an integer restarts above every version handed
///   out, at the server's clock in microseconds (versions come from `INCRBY`, which cannot
///   outrun one per microsecond).
pub(crate) const REPAIRS: &str = r"
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
redis.call('PUBLISH', ARGV[3], 'set ' .. int(ver) .. ' ' .. ARGV[4])
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
redis.call('PUBLISH', ARGV[3], 'set ' .. int(ver) .. ' ' .. ARGV[4])
return {1, int(ver), fixed + reset}
";

/// Many writes in one script: one counter bump, one notification for the whole chunk.
pub(crate) const PUT_BATCH: &str = r"
local n = #KEYS - 1
local last, fixed = bump(KEYS[1], n)
local first = last - n
local msg = {'batch'}
for i = 1, n do
  local ver = first + i
  local base = 1 + (i - 1) * 3
  fixed = fixed + writable(KEYS[i + 1])
  redis.call('HSET', KEYS[i + 1], 'v', ARGV[base + 1], 'ver', int(ver))
  local ttl = tonumber(ARGV[base + 2])
  if ttl > 0 then redis.call('PEXPIRE', KEYS[i + 1], ttl) else redis.call('PERSIST', KEYS[i + 1]) end
  local key = ARGV[base + 3]
  msg[#msg + 1] = int(ver) .. ' ' .. #key .. ' ' .. key
end
redis.call('PUBLISH', ARGV[1], table.concat(msg, ' '))
return {first + 1, last, fixed}
";

/// Entries per batch script.
pub(crate) const BATCH_CHUNK: usize = 256;

pub(crate) const DELETE: &str = r"
local n = redis.call('DEL', KEYS[1])
if n == 1 then redis.call('PUBLISH', ARGV[1], 'del ' .. ARGV[2]) end
return n
";
