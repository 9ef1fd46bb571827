-- release_sharded.lua: step one of putting a cancelled or expired order of a sharded product
-- back on sale, exactly once (as release.lua for a product without buckets): the order is
-- marked released, the buyer's total and the product's `sold` drop by its units, and the
-- return is noted in the activity's `returning` hash with the preheat epoch. Step two
-- (bucket_return.lua, once per order, only into a bucket of that epoch) puts the units into
-- the bucket the order number picks; step three removes the note. A `hot` in between drops
-- the note and loads MySQL's count, which has the units: step two then adds nothing.
-- Should the process stop midway, the note tells reconcile which return to finish, and
-- reconcile's view knows units noted but not yet in a bucket are neither sold nor on sale.
--
-- KEYS[1]  released set     P:{a:A}:released
-- KEYS[2]  product hash     P:{a:A}:product:ID
-- KEYS[3]  bought hash      P:{a:A}:bought:ID
-- KEYS[4]  returning hash   P:{a:A}:returning
-- KEYS[5]  activity hash    P:{a:A}:activity
-- ARGV[1]  order number     ARGV[2] user id     ARGV[3] quantity     ARGV[4] product id
--
-- Returns  1 released now (add the units to a bucket), 0 already released earlier,
--         -1 product not loaded in Redis.

if redis.call('EXISTS', KEYS[2]) == 0 then
    return -1
end
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then
    return 0
end
local q = tonumber(ARGV[3])
redis.call('HINCRBY', KEYS[2], 'sold', -q)
if redis.call('HINCRBY', KEYS[3], ARGV[2], -q) <= 0 then
    redis.call('HDEL', KEYS[3], ARGV[2])
end
redis.call('HSET', KEYS[4], ARGV[1],
    ARGV[4] .. ':' .. ARGV[3] .. ':' .. (redis.call('HGET', KEYS[5], 'epoch') or ''))
return 1
