-- preheat.lua: load an activity and its products into Redis (phase one of `seckill hot`).
--
-- KEYS[1]  activity hash            P:{a:A}:activity
-- KEYS[2]  product id set           P:{a:A}:products
-- KEYS[3]  blacklist set            P:{a:A}:blacklist
-- KEYS[4]  released order set       P:{a:A}:released
-- KEYS[5..] per product, three keys: P:{a:A}:product:ID, P:{a:A}:bought:ID, P:{a:A}:totals:ID
-- ARGV[1]  activity id     ARGV[2] name     ARGV[3] status (never "online")
-- ARGV[4]  start (ms)      ARGV[5] end (ms) ARGV[6] product count N
-- ARGV[7]  preheat epoch   ARGV[8] persist sequence (both from MySQL; see src/lost_state.rs)
-- ARGV[9..] per product, nine values: id, stock, sold, total, limit, max_per_order, price, name,
--          ids_below (buyers with a numeric id below it keep their totals in the totals array,
--          src/totals.rs; 0: none)
--
-- Returns 1 when loaded, or the error "ONLINE" when Redis says the activity is on sale:
-- overwriting live stock would oversell, so nothing is written then.
-- The product's bought hash and totals array, the blacklist and the released set are emptied
-- here and refilled by
-- phase two; `preheated_at` stays empty until phase two is done, so `start` waits for it.
-- The preheat is itself a status change: `gate_ver` is raised, never reset (phase two copies
-- the status into the stock buckets' gates under that number, src/buckets/gate.rs).

if redis.call('HGET', KEYS[1], 'status') == 'online' then
    return redis.error_reply('ONLINE')
end

-- The status change numbers keep rising across preheats: a bucket's gate holds one issued
-- before, and a late copy of an old change must stay older than every change from now on.
local gate_ver = (tonumber(redis.call('HGET', KEYS[1], 'gate_ver')) or 0) + 1
local stale = redis.call('SMEMBERS', KEYS[2])
local base = string.sub(KEYS[2], 1, #KEYS[2] - #'products')
for _, id in ipairs(stale) do
    redis.call('DEL', base .. 'product:' .. id, base .. 'bought:' .. id, base .. 'totals:' .. id)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])

redis.call('HSET', KEYS[1], 'id', ARGV[1], 'name', ARGV[2], 'status', ARGV[3],
    'start_ms', ARGV[4], 'end_ms', ARGV[5], 'preheated_at', '', 'epoch', ARGV[7], 'persist_seq', ARGV[8],
    'gate_ver', gate_ver)

local n = tonumber(ARGV[6])
for i = 0, n - 1 do
    local a = 9 + i * 9
    local product_key = KEYS[5 + i * 3]
    redis.call('DEL', product_key, KEYS[6 + i * 3], KEYS[7 + i * 3])
    redis.call('HSET', product_key, 'id', ARGV[a], 'stock', ARGV[a + 1], 'sold', ARGV[a + 2],
        'total', ARGV[a + 3], 'limit', ARGV[a + 4], 'max_per_order', ARGV[a + 5], 'price', ARGV[a + 6],
        'name', ARGV[a + 7])
    -- Missing means 0: a product preheated without a bound looks as it always did.
    if ARGV[a + 8] ~= '0' then
        redis.call('HSET', product_key, 'ids_below', ARGV[a + 8])
    end
    redis.call('SADD', KEYS[2], ARGV[a])
end
return 1
