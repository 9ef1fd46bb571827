-- reconcile_snapshot.lua: reconcile's view of an activity's Redis side, taken atomically
-- with reserve.lua and release.lua, so that a purchase is either wholly in it (stream entry,
-- stock, sold and the buyer's total) or wholly after it. Reading these one command at a time
-- let a purchase land in between and look like drift that --fix then "repaired".
-- The stream itself is not copied here (it can be long): its last generated id is the cut,
-- and reconcile reads the entries up to it afterwards (entries are only ever appended).
-- The last generated id, not the newest entry left: an order whose entry was the newest and
-- is gone (deleted, lost) is then judged as an order without its reservation, not taken for
-- a purchase made after the view, which left out of the count made --fix put its unit back
-- on sale.
--
-- KEYS[1]  order stream     P:{a:A}:orders
-- KEYS[2]  released set     P:{a:A}:released
-- KEYS[3]  stock ops hash   P:{a:A}:stock_ops
-- KEYS[4]  returning hash   P:{a:A}:returning
-- KEYS[5]  moves hash       P:{a:A}:moving
-- KEYS[6 ..]  per product, three keys: P:{a:A}:product:ID, P:{a:A}:bought:ID,
--              P:{a:A}:totals:ID
--
-- Returns {seconds, microseconds (Redis TIME), last generated stream id ('' when none), released
-- members, stock ops as field/value pairs, returns under way as field/value pairs, moves under
-- way as field/value pairs, then per
-- product three values: {stock, sold, total} ({} when the product is not loaded; a product whose
-- stock is in buckets: {'b', sold, total, shards}, its buckets read by bucket_view.lua), its bought
-- hash as field/value pairs, and its totals array as stored ('' when none; src/totals.rs
-- decodes it)}.

local t = redis.call('TIME')
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
local out = { t[1], t[2], last, redis.call('SMEMBERS', KEYS[2]), redis.call('HGETALL', KEYS[3]),
    redis.call('HGETALL', KEYS[4]), redis.call('HGETALL', KEYS[5]) }
for i = 6, #KEYS, 3 do
    local h = redis.call('HMGET', KEYS[i], 'stock', 'sold', 'total', 'shards')
    if h[1] and h[2] and h[3] then
        out[#out + 1] = { h[1], h[2], h[3] }
        out[#out + 1] = redis.call('HGETALL', KEYS[i + 1])
        out[#out + 1] = redis.call('GET', KEYS[i + 2]) or ''
    elseif h[2] and h[3] and (tonumber(h[4]) or 0) > 1 then
        out[#out + 1] = { 'b', h[2], h[3], h[4] }
        out[#out + 1] = redis.call('HGETALL', KEYS[i + 1])
        out[#out + 1] = ''
    else
        out[#out + 1] = {}
        out[#out + 1] = {}
        out[#out + 1] = ''
    end
end
return out
