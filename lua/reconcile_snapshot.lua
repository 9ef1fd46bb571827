-- reconcile_snapshot.lua: reconcile's view of an activity's Redis side, taken atomically
-- with reserve.lua and release.lua, so that a purchase is either wholly in it (stream entry,
-- stock, sold and the buyer's total) or wholly after it. Reading these one command at a time
-- let a purchase land in between and look like drift that --fix then "repaired".
-- The stream itself is not copied here (it can be long): its last id is the cut, and
-- reconcile reads the entries up to it afterwards (entries are only ever appended).
--
-- KEYS[1]  order stream     P:{a:A}:orders
-- KEYS[2]  released set     P:{a:A}:released
-- KEYS[3]  stock ops hash   P:{a:A}:stock_ops
-- KEYS[4 ..]  per product, two keys: P:{a:A}:product:ID, P:{a:A}:bought:ID
--
-- Returns {seconds, microseconds (Redis TIME), last stream id ('' when none), released
-- members, stock ops as field/value pairs, then per product two values: {stock, sold, total}
-- ({} when the product is not loaded) and its bought hash as field/value pairs}.

local t = redis.call('TIME')
local last = ''
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if newest[1] then
    last = newest[1][1]
end
local out = { t[1], t[2], last, redis.call('SMEMBERS', KEYS[2]), redis.call('HGETALL', KEYS[3]) }
for i = 4, #KEYS, 2 do
    local h = redis.call('HMGET', KEYS[i], 'stock', 'sold', 'total')
    if h[1] and h[2] and h[3] then
        out[#out + 1] = { h[1], h[2], h[3] }
        out[#out + 1] = redis.call('HGETALL', KEYS[i + 1])
    else
        out[#out + 1] = {}
        out[#out + 1] = {}
    end
end
return out
