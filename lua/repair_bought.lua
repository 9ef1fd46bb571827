-- repair_bought.lua: reconcile's compare-and-set of one user's total of one product.
-- src/scripts.rs puts lib/totals.lua (where the buyer's total lives) in front of it.
--
-- KEYS[1]  bought hash      P:{a:A}:bought:ID (for a sharded product: the buyer's bucket's
--          bought hash, the same key under the bucket's tag; see src/keys.rs bucket_bought)
-- KEYS[2]  (a product without buckets only) its product hash P:{a:A}:product:ID, whose
--          `ids_below` says whether the total lives in ...
-- KEYS[3]  ... its totals array P:{a:A}:totals:ID
-- ARGV[1]  user id          ARGV[2] units seen (0 = absent)     ARGV[3] new units
--
-- Returns 1 written, 0 the total changed since it was read (run reconcile again).

local at = KEYS[2] and array_offset(ARGV[1], bound_of(redis.call('HGET', KEYS[2], 'ids_below')))
local seen, new = tonumber(ARGV[2]), tonumber(ARGV[3])
if at then
    if redis.call('BITFIELD_RO', KEYS[3], 'GET', TOTAL_TYPE, at)[1] ~= seen then
        return 0
    end
    redis.call('BITFIELD', KEYS[3], 'OVERFLOW', 'SAT', 'SET', TOTAL_TYPE, at, math.max(new, 0))
    return 1
end
if (tonumber(redis.call('HGET', KEYS[1], ARGV[1])) or 0) ~= seen then
    return 0
end
if new <= 0 then
    redis.call('HDEL', KEYS[1], ARGV[1])
else
    redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
end
return 1
