-- bucket_repair.lua: reconcile's repair of one bucket (src/ops/reconcile/sharded.rs), as
-- deltas, never as values: a purchase moves `stock` down and `sold` up by the same units, so
-- a delta computed from an earlier view stays right whatever was bought since, where a
-- written value would overwrite those purchases.
--
-- KEYS[1]  bucket hash      P:{a:A:b:K}:product:ID
-- ARGV[1]  the preheat epoch the view was taken in
-- ARGV[2]  change of `sold`
-- ARGV[3]  change of `stock`: positive adds; negative withdraws at most the stock left
--
-- Returns the units of stock added (positive) or withdrawn (negative), or the error
-- "RELOADED" when the bucket is gone or another `hot` loaded it (nothing changed).

local h = redis.call('HMGET', KEYS[1], 'stock', 'epoch')
if not h[1] or (h[2] or '') ~= ARGV[1] then
    return redis.error_reply('RELOADED')
end
local dsold, dstock = tonumber(ARGV[2]), tonumber(ARGV[3])
if dsold ~= 0 then
    redis.call('HINCRBY', KEYS[1], 'sold', dsold)
end
if dstock < 0 then
    dstock = -math.min(-dstock, math.max(tonumber(h[1]), 0))
end
if dstock ~= 0 then
    redis.call('HINCRBY', KEYS[1], 'stock', dstock)
end
return dstock
