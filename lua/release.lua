-- release.lua: put the units of one cancelled or expired order back on sale, exactly once.
-- MySQL has already decided the order's fate (only the winner of the conditional UPDATE
-- calls this); the released set makes a second call (a retry, or reconcile finishing a
-- half-done return) a no-op, so a unit can never go back on sale twice.
-- src/scripts.rs puts lib/totals.lua (where the buyer's total lives) in front of it.
--
-- KEYS[1]  released set     P:{a:A}:released
-- KEYS[2]  product hash     P:{a:A}:product:ID
-- KEYS[3]  bought hash      P:{a:A}:bought:ID
-- KEYS[4]  totals array     P:{a:A}:totals:ID
-- ARGV[1]  order number     ARGV[2] user id     ARGV[3] quantity
--
-- Returns  1 released now, 0 already released earlier,
--         -1 product not loaded in Redis (nothing to return: the next `hot` loads
--            stock from MySQL, where the order no longer counts as sold).

local below = redis.call('HGET', KEYS[2], 'ids_below')
if not below and redis.call('EXISTS', KEYS[2]) == 0 then
    return -1
end
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then
    return 0
end
local q = tonumber(ARGV[3])
redis.call('HINCRBY', KEYS[2], 'stock', q)
redis.call('HINCRBY', KEYS[2], 'sold', -q)
local at = array_offset(ARGV[2], bound_of(below))
if at then
    -- Saturating: a total never goes below nothing.
    redis.call('BITFIELD', KEYS[4], 'OVERFLOW', 'SAT', 'INCRBY', TOTAL_TYPE, at, -q)
elseif redis.call('HINCRBY', KEYS[3], ARGV[2], -q) <= 0 then
    redis.call('HDEL', KEYS[3], ARGV[2])
end
return 1
