-- bucket_return.lua: step two of putting a cancelled or expired order of a sharded product
-- back on sale (src/buckets/stock.rs): its units into the bucket its order number picks, at
-- most once (the bucket records the order under `r:<order number>`), so a retry or
-- reconcile finishing a return cut short cannot put the units on sale twice.
--
-- KEYS[1]  bucket hash      P:{a:A:b:K}:product:ID
-- ARGV[1]  order number     ARGV[2] quantity
-- ARGV[3]  the preheat epoch release_sharded.lua noted
--
-- Returns 1 added now, 0 added earlier, -1 no such bucket or one another `hot` loaded (whose
-- stock, read from MySQL, has the units already): nothing added.

if redis.call('EXISTS', KEYS[1]) == 0 or (redis.call('HGET', KEYS[1], 'epoch') or '') ~= ARGV[3] then
    return -1
end
if redis.call('HSETNX', KEYS[1], 'r:' .. ARGV[1], ARGV[2]) == 0 then
    return 0
end
redis.call('HINCRBY', KEYS[1], 'stock', ARGV[2])
return 1
