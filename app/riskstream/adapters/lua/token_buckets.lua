-- Token buckets, one per API key, shared by every worker (app/riskstream/adapters/rate_limit.py): one take,
-- or the takes several requests of a worker gathered in one event-loop turn. Each take is decided
-- in order (a bucket named twice sees the first take), so gathering them changes the Redis calls,
-- not the decisions. A bucket is a hash of tokens (negative: debt) and ts (microseconds).
--
-- Time is the Redis server's, so workers with skewed clocks agree. A take costing more than the
-- burst is let through once the bucket is full and leaves a debt, so the long-run rate holds and
-- the largest bulk request is still possible. The key expires once the bucket would be full
-- again, which is the state a missing key stands for. A clock that went back (failover) refills
-- nothing and takes nothing back. Numbers are returned as strings (Redis would cut a Lua number
-- to an integer).
--
-- KEYS[i]    the bucket of take i
-- ARGV[1]    rate: tokens added per second;  ARGV[2]  burst: the bucket's size
-- ARGV[2+i]  cost of take i
--
-- Returns {now, allowed_1, wait_1, remaining_1, allowed_2, ...}; numbers as strings.
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local out = {string.format('%.6f', now / 1000000)}

for i, key in ipairs(KEYS) do
  local cost = tonumber(ARGV[2 + i])
  local bucket = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(bucket[1])
  local ts = tonumber(bucket[2])
  if tokens == nil or ts == nil then
    tokens = burst
    ts = now
  end
  if now > ts then
    tokens = math.min(burst, tokens + (now - ts) * rate / 1000000)
    ts = now
  end
  local need = math.min(cost, burst)
  local allowed = 0
  local wait = 0
  if tokens >= need then
    allowed = 1
    tokens = tokens - cost
  else
    wait = (need - tokens) / rate
  end
  redis.call('HSET', key, 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.0f', ts))
  redis.call('PEXPIRE', key, math.ceil((burst - tokens) / rate * 1000) + 1000)
  out[#out + 1] = allowed
  out[#out + 1] = string.format('%.6f', wait)
  out[#out + 1] = string.format('%.6f', tokens)
end
return out
