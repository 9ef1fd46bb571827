-- repair_product.lua: reconcile's compare-and-set of one product's counters.
-- Reconcile computes the right values from MySQL plus the reservations in flight; the
-- compare part makes sure no purchase slipped in between that computation and the write
-- (otherwise its deduction would be overwritten, which could oversell).
--
-- KEYS[1]  product hash     P:{a:A}:product:ID
-- ARGV[1]  stock seen       ARGV[2] sold seen
-- ARGV[3]  new stock        ARGV[4] new sold      ARGV[5] new total
--
-- Returns 1 written, 0 the counters changed since they were read (run reconcile again),
-- -1 product not loaded.

if redis.call('EXISTS', KEYS[1]) == 0 then
    return -1
end
local p = redis.call('HMGET', KEYS[1], 'stock', 'sold')
if (tonumber(p[1]) or 0) ~= tonumber(ARGV[1]) or (tonumber(p[2]) or 0) ~= tonumber(ARGV[2]) then
    return 0
end
redis.call('HSET', KEYS[1], 'stock', ARGV[3], 'sold', ARGV[4], 'total', ARGV[5])
return 1
