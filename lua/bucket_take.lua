-- bucket_take.lua: move units out of one bucket of a sharded product, or back into it
-- (src/buckets/gather.rs: an order of several units no single bucket holds). Units taken leave
-- the sale here and come back in the target bucket's bucket_reserve.lua call, which adds them
-- and sells them in one step (or here, put back, when too few were found); a crash in between
-- leaves them withdrawn (reconcile reports the product's stock short), never on sale twice.
-- Units come back only into a bucket of the `hot` they were taken in (its `epoch`): a later
-- `hot` loaded MySQL's count, which has them.
--
-- KEYS[1]  bucket hash      P:{a:A:b:K}:product:ID   (stock, epoch)
-- ARGV[1]  'take' (at most ARGV[2] units) or 'put' (ARGV[2] units back)
-- ARGV[2]  units
-- ARGV[3]  for 'put': the epoch the units were taken in
--
-- Returns {units, epoch}: the units taken (0 up to ARGV[2], never more than the bucket holds)
-- or put back, and the bucket's epoch; units -1 when there is no such bucket, or (put) it is
-- of another epoch: nothing done.

local h = redis.call('HMGET', KEYS[1], 'stock', 'epoch')
local stock, epoch = tonumber(h[1]), h[2] or ''
if not stock then
    return { -1, epoch }
end
local units = tonumber(ARGV[2])
if ARGV[1] == 'put' then
    if epoch ~= ARGV[3] then
        return { -1, epoch }
    end
    redis.call('HINCRBY', KEYS[1], 'stock', units)
    return { units, epoch }
end
local take = math.max(math.min(stock, units), 0)
if take > 0 then
    redis.call('HINCRBY', KEYS[1], 'stock', -take)
end
return { take, epoch }
