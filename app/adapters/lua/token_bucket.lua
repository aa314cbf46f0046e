-- A token bucket per API key, shared by every worker (app/adapters/rate_limit.py).
--
-- KEYS[1]  the bucket: a hash of tokens (may be negative: debt) and ts (microseconds)
-- ARGV[1]  rate: tokens added per second
-- ARGV[2]  burst: the bucket's size
-- ARGV[3]  cost: tokens this request takes (a bulk request: its number of events)
--
-- Time is the Redis server's, so workers with skewed clocks agree. A request costing more than
-- the burst is let through once the bucket is full and leaves a debt, so the long-run rate holds
-- and the largest bulk request is still possible. The key expires once the bucket would be full
-- again, which is the state a missing key stands for.
--
-- Returns {allowed (1/0), seconds to wait, tokens left, server time in seconds}, numbers as
-- strings (a Lua number returned to Redis would be cut to an integer).
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])

local bucket = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(bucket[1])
local ts = tonumber(bucket[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
if now > ts then  -- a clock that went back (failover) refills nothing, and takes nothing back
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

redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.0f', ts))
local full_in_ms = math.ceil((burst - tokens) / rate * 1000) + 1000
redis.call('PEXPIRE', KEYS[1], full_in_ms)

return {allowed, string.format('%.6f', wait), string.format('%.6f', tokens),
        string.format('%.6f', now / 1000000)}
