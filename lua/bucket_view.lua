-- bucket_view.lua: reconcile's view of one bucket slot (src/ops/reconcile/gather.rs), taken
-- atomically with bucket_buy.lua and bucket_reserve.lua, so a purchase is either wholly in it
-- (entry, stock, sold, and when it was decided here, the buyer's total) or wholly after it.
--
-- KEYS[1]  bucket stream    P:{a:A:b:K}:orders
-- KEYS[2 ..]  per sharded product, two keys: P:{a:A:b:K}:product:ID, P:{a:A:b:K}:bought:ID
--
-- Returns {last generated stream id ('' when none), then per product its hash as field/value
-- pairs ({} when the bucket does not exist) and its bought hash as field/value pairs}.

local last = ''
if redis.call('EXISTS', KEYS[1]) == 1 then
    local info = redis.call('XINFO', 'STREAM', KEYS[1])
    for i = 1, #info, 2 do
        if info[i] == 'last-generated-id' then
            last = info[i + 1]
        end
    end
    if last == '0-0' then
        last = ''
    end
end
local out = { last }
for i = 2, #KEYS do
    out[#out + 1] = redis.call('HGETALL', KEYS[i])
end
return out
