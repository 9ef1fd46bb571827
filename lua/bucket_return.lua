-- bucket_return.lua: step two of putting a cancelled or expired order of a sharded product
-- back on sale (src/buckets/stock.rs): its units into the buyer's bucket (the one holding the
-- buyer's total) and the buyer's total lowered by them, at most once (the bucket records the
-- order under `r:<order number>`), so a retry or reconcile finishing a return cut short can
-- neither put the units on sale twice nor lower the total twice.
--
-- KEYS[1]  bucket hash      P:{a:A:b:K}:product:ID
-- KEYS[2]  bought hash      P:{a:A:b:K}:bought:ID
-- ARGV[1]  order number     ARGV[2] quantity
-- ARGV[3]  the preheat epoch release_sharded.lua noted     ARGV[4] the buyer's user id
--
-- Returns 1 done now, 0 done earlier, -1 no such bucket or one another `hot` loaded (whose
-- stock and totals, read from MySQL, count the order as returned already): nothing done.

if redis.call('EXISTS', KEYS[1]) == 0 or (redis.call('HGET', KEYS[1], 'epoch') or '') ~= ARGV[3] then
    return -1
end
if redis.call('HSETNX', KEYS[1], 'r:' .. ARGV[1], ARGV[2]) == 0 then
    return 0
end
redis.call('HINCRBY', KEYS[1], 'stock', ARGV[2])
if redis.call('HINCRBY', KEYS[2], ARGV[4], -tonumber(ARGV[2])) <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[4])
end
return 1
