-- stock_add.lua: top up the live stock of one product, atomically with reserve.lua.
--
-- KEYS[1]  product hash     P:{a:A}:product:ID
-- ARGV[1]  units to add (positive)
--
-- Returns the stock after the top-up, or the error "NOT_LOADED" when the product is not
-- in Redis (then only MySQL changes, and the next `hot` loads it).

if redis.call('EXISTS', KEYS[1]) == 0 then
    return redis.error_reply('NOT_LOADED')
end
local n = tonumber(ARGV[1])
redis.call('HINCRBY', KEYS[1], 'total', n)
return redis.call('HINCRBY', KEYS[1], 'stock', n)
