-- repair_bought.lua: reconcile's compare-and-set of one user's total of one product.
--
-- KEYS[1]  bought hash      P:{a:A}:bought:ID (for a sharded product: the buyer's bucket's
--          bought hash, the same key under the bucket's tag; see src/keys.rs bucket_bought)
-- ARGV[1]  user id          ARGV[2] units seen (0 = absent)     ARGV[3] new units
--
-- Returns 1 written, 0 the total changed since it was read (run reconcile again).

if (tonumber(redis.call('HGET', KEYS[1], ARGV[1])) or 0) ~= tonumber(ARGV[2]) then
    return 0
end
if tonumber(ARGV[3]) <= 0 then
    redis.call('HDEL', KEYS[1], ARGV[1])
else
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
return 1
