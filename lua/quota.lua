-- quota.lua: step one of a purchase of a sharded product (src/buckets.rs): every check
-- reserve.lua makes except the stock, and the buyer's total raised by the quantity, in the
-- activity's slot, where the per-user limit lives for all buckets. Step two takes the units
-- from a bucket (bucket_reserve.lua); when no bucket has them, quota_return.lua gives the
-- quota back.
--
-- KEYS[1]  activity hash    P:{a:A}:activity
-- KEYS[2]  blacklist set    P:{a:A}:blacklist
-- KEYS[3]  product hash     P:{a:A}:product:ID
-- KEYS[4]  bought hash      P:{a:A}:bought:ID
-- KEYS[5]  revoked set      P:{a:A}:revoked  (the token's signature is checked by `serve`)
-- ARGV[1]  the least persist sequence MySQL is known to have recorded (as in reserve.lua)
-- ARGV[2]  user id     ARGV[3] quantity
--
-- Returns {verdict, shards, price}
--   verdict  "ok" (the buyer's total now includes the quantity), "not_sharded" (the product
--            has no buckets: decide it with reserve.lua), or the refusal, as in reserve.lua:
--            suspended | not_found | not_started | paused | ended | blacklisted
--            | invalid_token | bad_request | limit_exceeded
--   shards   the product's bucket count (0 when unknown)
--   price    the product's unit price ("" when unknown)

local activity = redis.call('HMGET', KEYS[1], 'status', 'start_ms', 'end_ms', 'persist_seq')
local status, start_ms, end_ms = activity[1], tonumber(activity[2]), tonumber(activity[3])
local product = redis.call('HMGET', KEYS[3], 'shards', 'limit', 'max_per_order', 'price', 'sold')
local shards, limit, max_per_order, price = tonumber(product[1]), tonumber(product[2]),
    tonumber(product[3]), product[4] or ''

local function answer(verdict)
    return { verdict, shards or 0, price }
end

if status and (status == 'lost' or (tonumber(activity[4]) or 0) < tonumber(ARGV[1])) then
    return answer('suspended')
end
if not product[5] then
    return answer('not_found')
end
if not shards or shards < 2 then
    return answer('not_sharded')
end
if not status then
    return answer('not_found')
end
if status == 'paused' or status == 'ended' then
    return answer(status)
elseif status ~= 'online' then
    return answer('not_started')
end
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if now_ms < start_ms then
    return answer('not_started')
elseif now_ms >= end_ms then
    return answer('ended')
end

local user, quantity = ARGV[2], tonumber(ARGV[3])
if redis.call('SISMEMBER', KEYS[2], user) == 1 then
    return answer('blacklisted')
end
if redis.call('SISMEMBER', KEYS[5], user) == 1 then
    return answer('invalid_token')
end
if not quantity or quantity < 1 or quantity ~= math.floor(quantity) then
    return answer('bad_request')
end
if quantity > max_per_order then
    return answer('limit_exceeded')
end
local q = string.format('%d', quantity)
local total = redis.call('HINCRBY', KEYS[4], user, q)
if total > limit then
    if total == quantity then
        redis.call('HDEL', KEYS[4], user)
    else
        redis.call('HINCRBY', KEYS[4], user, '-' .. q)
    end
    return answer('limit_exceeded')
end
return answer('ok')
