-- sold_out.lua: withdraw every unit still on sale of one product (the source ran out),
-- atomically with reserve.lua, so no purchase decided after this can take one.
--
-- KEYS[1]  product hash     P:{a:A}:product:ID
--
-- Returns the units withdrawn (stock before, now 0; total shrinks by as much), or the
-- error "NOT_LOADED" when the product is not in Redis.

if redis.call('EXISTS', KEYS[1]) == 0 then
    return redis.error_reply('NOT_LOADED')
end
local withdrawn = tonumber(redis.call('HGET', KEYS[1], 'stock')) or 0
if withdrawn > 0 then
    redis.call('HSET', KEYS[1], 'stock', 0)
    redis.call('HINCRBY', KEYS[1], 'total', -withdrawn)
end
return withdrawn
