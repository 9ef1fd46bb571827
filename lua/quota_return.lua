-- quota_return.lua: give back the quota quota.lua took when no bucket had the units
-- (src/buckets.rs), so a buyer refused `sold_out` keeps their whole limit.
--
-- KEYS[1]  bought hash      P:{a:A}:bought:ID
-- ARGV[1]  user id     ARGV[2] quantity
--
-- Returns the buyer's total after the return.

local total = redis.call('HINCRBY', KEYS[1], ARGV[1], '-' .. ARGV[2])
if total <= 0 then
    redis.call('HDEL', KEYS[1], ARGV[1])
    return 0
end
return total
