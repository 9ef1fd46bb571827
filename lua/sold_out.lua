-- sold_out.lua: withdraw every unit still on sale of one product (the source ran out),
-- atomically with reserve.lua, so no purchase decided after this can take one; at most once
-- per ledger row, whose id is recorded with the units withdrawn so that MySQL can be
-- completed later (by the command or by reconcile) with exactly that number.
--
-- KEYS[1]  product hash     P:{a:A}:product:ID
-- KEYS[2]  stock ops hash   P:{a:A}:stock_ops
-- ARGV[1]  the ledger row id of the change
--
-- Returns the units withdrawn (stock before, now 0; total shrinks by as much; on a repeated
-- call, the units the first call withdrew), or the error "NOT_LOADED" when the product is
-- not in Redis, or "VOIDED" when reconcile settled the change as undone.

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
local withdrawn = tonumber(redis.call('HGET', KEYS[1], 'stock')) or 0
if withdrawn > 0 then
    redis.call('HSET', KEYS[1], 'stock', 0)
    redis.call('HINCRBY', KEYS[1], 'total', -withdrawn)
end
redis.call('HSET', KEYS[2], ARGV[1], string.format('%d', withdrawn))
return withdrawn
