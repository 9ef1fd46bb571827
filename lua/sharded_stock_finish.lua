-- sharded_stock_finish.lua: last step of a live stock change of a sharded product
-- (src/buckets/stock/live.rs), in the activity's slot: records the units every bucket added or
-- withdrew and moves the product's `total` by as much, once.
--
-- KEYS[1]  product hash     P:{a:A}:product:ID
-- KEYS[2]  stock ops hash   P:{a:A}:stock_ops
-- KEYS[3]  activity hash    P:{a:A}:activity
-- ARGV[1]  the ledger row id     ARGV[2] 'add', 'sold_out' or 'remove'
-- ARGV[3]  units the buckets added / withdrew     ARGV[4] the epoch the change began in
--
-- Returns the units recorded (the first call's, on a repeated call). When a `hot` reloaded
-- the activity meanwhile (another epoch), an add is recorded `not_loaded` (the reload read
-- MySQL's count) and a sold-out or remove `void` (the reload put MySQL's stock back on sale: the
-- withdrawal did not happen), answered as the errors "NOT_LOADED" / "VOIDED".

local seen = redis.call('HGET', KEYS[2], ARGV[1])
if seen == 'void' then
    return redis.error_reply('VOIDED')
elseif seen == 'not_loaded' then
    return redis.error_reply('NOT_LOADED')
elseif seen and seen ~= 'part' then
    return tonumber(seen)
end
if (redis.call('HGET', KEYS[3], 'epoch') or '') ~= ARGV[4] or redis.call('EXISTS', KEYS[1]) == 0 then
    if ARGV[2] == 'add' then
        redis.call('HSET', KEYS[2], ARGV[1], 'not_loaded')
        return redis.error_reply('NOT_LOADED')
    end
    redis.call('HSET', KEYS[2], ARGV[1], 'void')
    return redis.error_reply('VOIDED')
end
local units = tonumber(ARGV[3])
local signed = units
if ARGV[2] ~= 'add' then
    signed = -units
end
redis.call('HINCRBY', KEYS[1], 'total', signed)
redis.call('HSET', KEYS[2], ARGV[1], string.format('%d', units))
return units
