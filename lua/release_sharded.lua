-- release_sharded.lua: step one of putting a cancelled or expired order of a sharded product
-- back on sale, exactly once (as release.lua for a product without buckets): the order is
-- marked released, the product's `sold` drops by its units, and the return is noted in the
-- activity's `returning` hash with the preheat epoch. Step two (bucket_return.lua, once per
-- order, only into a bucket of that epoch) puts the units into the buyer's bucket and lowers
-- the buyer's total there (where it lives); step three removes the note. A `hot` in between
-- drops the note and loads MySQL's count, which has the units: step two then does nothing.
-- Should the process stop midway, the note tells reconcile which return to finish, and
-- reconcile's view knows units noted but not yet in a bucket are neither sold nor on sale
-- (and still in the buyer's total).
--
-- KEYS[1]  released set     P:{a:A}:released
-- KEYS[2]  product hash     P:{a:A}:product:ID
-- KEYS[3]  returning hash   P:{a:A}:returning
-- KEYS[4]  activity hash    P:{a:A}:activity
-- ARGV[1]  order number     ARGV[2] quantity     ARGV[3] product id
--
-- Returns  1 released now (add the units to a bucket), 0 already released earlier,
--         -1 product not loaded in Redis.

if redis.call('EXISTS', KEYS[2]) == 0 then
    return -1
end
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then
    return 0
end
redis.call('HINCRBY', KEYS[2], 'sold', -tonumber(ARGV[2]))
redis.call('HSET', KEYS[3], ARGV[1],
    ARGV[3] .. ':' .. ARGV[2] .. ':' .. (redis.call('HGET', KEYS[4], 'epoch') or ''))
return 1
