-- bucket_stock_op.lua: one bucket's share of a live stock change begun by
-- sharded_stock_begin.lua (src/buckets/stock/live.rs), atomically with bucket_reserve.lua and at
-- most once per change: the bucket records what it did under `op:<ledger id>`.
--
-- KEYS[1]  bucket hash      P:{a:A:b:K}:product:ID
-- ARGV[1]  the ledger row id of the change
-- ARGV[2]  'add', 'sold_out' or 'remove'
-- ARGV[3]  units to add (an add) or to take at most (a remove; 0: only ask what was taken);
--          ignored for a sold-out
-- ARGV[4]  the preheat epoch the change began in
--
-- Returns the units this bucket added (an add) or withdrew (a sold-out: its whole stock; a
-- remove: as many as asked or as it has), also when called again for the same change; -1 when
-- the bucket is gone or was loaded by another `hot` (whose stock, read from MySQL, already
-- reflects the change): nothing done; -2 for a remove asking 0 of a bucket that took nothing.

local h = redis.call('HMGET', KEYS[1], 'stock', 'epoch')
if not h[1] or (h[2] or '') ~= ARGV[4] then
    return -1
end
local field = 'op:' .. ARGV[1]
local seen = redis.call('HGET', KEYS[1], field)
if seen then
    return tonumber(seen)
end
local units
if ARGV[2] == 'add' then
    units = tonumber(ARGV[3])
    redis.call('HINCRBY', KEYS[1], 'stock', units)
elseif ARGV[2] == 'remove' then
    if tonumber(ARGV[3]) == 0 then
        return -2
    end
    units = math.min(tonumber(ARGV[3]), math.max(tonumber(h[1]), 0))
    redis.call('HINCRBY', KEYS[1], 'stock', -units)
else
    units = tonumber(h[1])
    redis.call('HSET', KEYS[1], 'stock', 0)
end
redis.call('HSET', KEYS[1], field, string.format('%d', units))
return units
