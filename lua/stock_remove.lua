-- stock_remove.lua: take a number of units off sale (`stock remove`), atomically with
-- reserve.lua, so only units still on sale are taken, never reserved ones; at most once per
-- ledger row, whose id is recorded with the units withdrawn so that MySQL can be completed
-- later (by the command or by reconcile) with exactly that number. All or nothing: when fewer
-- units are on sale, nothing is taken and the change is recorded void.
--
-- KEYS[1]  product hash     P:{a:A}:product:ID
-- KEYS[2]  stock ops hash   P:{a:A}:stock_ops
-- ARGV[1]  the ledger row id of the change
-- ARGV[2]  units to take (positive)
--
-- Returns the units withdrawn (on a repeated call, the first call's), or the error
-- "NOT_LOADED" when the product is not in Redis, "VOIDED" when reconcile settled the change
-- as undone or too few units were on sale.

local seen = redis.call('HGET', KEYS[2], ARGV[1])
if seen == 'void' then
    return redis.error_reply('VOIDED')
elseif seen == 'not_loaded' then
    return redis.error_reply('NOT_LOADED')
elseif seen then
    return tonumber(seen) or 0
end
if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('HSET', KEYS[2], ARGV[1], 'not_loaded')
    return redis.error_reply('NOT_LOADED')
end
local units = tonumber(ARGV[2])
if (tonumber(redis.call('HGET', KEYS[1], 'stock')) or 0) < units then
    redis.call('HSET', KEYS[2], ARGV[1], 'void')
    return redis.error_reply('VOIDED')
end
redis.call('HINCRBY', KEYS[1], 'stock', -units)
redis.call('HINCRBY', KEYS[1], 'total', -units)
redis.call('HSET', KEYS[2], ARGV[1], string.format('%d', units))
return units
