-- The naive baseline for `redis-benchmark`: one EVALSHA per purchase.
-- KEYS[1] the user's bought counter, KEYS[2] the stock; ARGV[1] the per-user limit.
local bought = tonumber(redis.call('GET', KEYS[1]) or '0')
if bought >= tonumber(ARGV[1]) then return -1 end
local stock = tonumber(redis.call('GET', KEYS[2]) or '0')
if stock <= 0 then return 0 end
redis.call('SET', KEYS[2], stock - 1)
redis.call('INCRBY', KEYS[1], 1)
return 1
