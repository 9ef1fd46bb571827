-- bucket_take.lua: withdraw units from one bucket of a sharded product to move them into
-- another (src/buckets/gather.rs: an order of several units no single bucket holds). The units
-- leave the sale here and come back in the target bucket's bucket_reserve.lua call, which adds
-- them and sells them in one step; a crash in between leaves them withdrawn (reconcile reports
-- the product's stock short), never on sale twice.
--
-- KEYS[1]  bucket hash      P:{a:A:b:K}:product:ID   (stock)
-- ARGV[1]  the most units to take
--
-- Returns the units taken (0 up to ARGV[1], never more than the bucket holds), or -1 when
-- there is no such bucket.

local stock = tonumber(redis.call('HGET', KEYS[1], 'stock'))
if not stock then
    return -1
end
local take = math.min(stock, tonumber(ARGV[1]))
if take <= 0 then
    return 0
end
redis.call('HSET', KEYS[1], 'stock', string.format('%d', stock - take))
return take
