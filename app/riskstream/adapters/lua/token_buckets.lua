-- Token buckets, one per API key, shared by every worker (app/riskstream/adapters/rate_limit.py).
-- One call decides the takes a worker gathered (app/riskstream/core/rate_leases.py). Each take is
-- decided in order (a bucket named twice sees the first take), so gathering them changes the
-- Redis calls, not the decisions. A bucket is a hash of tokens (negative: debt) and ts
-- (microseconds).
--
-- A take first gives back the tokens its worker leased and did not spend (never filling the
-- bucket past the burst), then takes its cost, decided exactly as a take alone, then, if that was
-- allowed, leases up to `lease` more whole tokens of what is left: the worker spends those
-- locally, with no call. A cost of 0 only gives back.
--
-- Time is the Redis server's, so workers with skewed clocks agree. A take costing more than the
-- burst is let through once the bucket is full and leaves a debt, so the long-run rate holds and
-- the largest bulk request is still possible. The key expires once the bucket would be full
-- again, which is the state a missing key stands for. A clock that went back (failover) refills
-- nothing and takes nothing back. Numbers are returned as strings (Redis would cut a Lua number
-- to an integer).
--
-- KEYS[i]      the bucket of take i
-- ARGV[1]      rate: tokens added per second;  ARGV[2]  burst: the bucket's size
-- ARGV[3i]     cost of take i;  ARGV[3i+1]  tokens it gives back;  ARGV[3i+2]  tokens to lease
--
-- Returns {now, allowed_1, wait_1, remaining_1, leased_1, allowed_2, ...}.
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local out = {string.format('%.6f', now / 1000000)}

for i, key in ipairs(KEYS) do
  local cost = tonumber(ARGV[3 * i])
  local give_back = tonumber(ARGV[3 * i + 1])
  local lease = tonumber(ARGV[3 * i + 2])
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
  tokens = math.min(burst, tokens + give_back)
  local need = math.min(cost, burst)
  local allowed = 0
  local wait = 0
  local leased = 0
  if tokens >= need then
    allowed = 1
    tokens = tokens - cost
    if lease > 0 and tokens >= 1 then
      leased = math.min(lease, math.floor(tokens))
      tokens = tokens - leased
    end
  else
    wait = (need - tokens) / rate
  end
  redis.call('HSET', key, 'tokens', string.format('%.6f', tokens), 'ts', string.format('%.0f', ts))
  redis.call('PEXPIRE', key, math.ceil((burst - tokens) / rate * 1000) + 1000)
  out[#out + 1] = allowed
  out[#out + 1] = string.format('%.6f', wait)
  out[#out + 1] = string.format('%.6f', tokens)
  out[#out + 1] = string.format('%d', leased)
end
return out
