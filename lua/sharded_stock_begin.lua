-- sharded_stock_begin.lua: step one of a live stock change (`stock add`, `stock sold-out`, `stock remove`) of
-- a product whose stock is in buckets (src/buckets/stock/live.rs), in the activity's slot: the same
-- checks as stock_add.lua / sold_out.lua, then the change is marked begun ('part') in the
-- stock ops hash. From then on it is completed, never undone: each bucket applies its share
-- at most once (bucket_stock_op.lua), and sharded_stock_finish.lua records the result, so a
-- retry, a late call or reconcile can drive it to the end; settle_stock_op.lua voids only a
-- change that was never begun.
--
-- KEYS[1]  product hash     P:{a:A}:product:ID
-- KEYS[2]  stock ops hash   P:{a:A}:stock_ops
-- KEYS[3]  activity hash    P:{a:A}:activity
-- ARGV[1]  the ledger row id of the change
-- ARGV[2]  'add', 'sold_out' or 'remove'
-- ARGV[3]  for an add, the activity's `preheated_at` read before MySQL counted the units ('' if none);
--          '*' when resuming a change already begun (reconcile, a retry)
--
-- Returns {state, shards, epoch}: state 'part' (begun: apply it to the buckets) or the units
-- already recorded (the change is complete); shards the product's bucket count; epoch the
-- activity's preheat epoch the buckets must carry. Errors: "NOT_LOADED" (the product is not in
-- Redis as sharded, or a `hot` since ARGV[3] loaded MySQL's count: only MySQL changes),
-- "VOIDED" (reconcile settled the change as undone).

local seen = redis.call('HGET', KEYS[2], ARGV[1])
if seen == 'void' then
    return redis.error_reply('VOIDED')
elseif seen == 'not_loaded' then
    return redis.error_reply('NOT_LOADED')
end
local shards = tonumber(redis.call('HGET', KEYS[1], 'shards')) or 0
local epoch = redis.call('HGET', KEYS[3], 'epoch') or ''
if seen then
    return { seen, shards, epoch }
end
local loaded_at = redis.call('HGET', KEYS[3], 'preheated_at') or ''
local stale = ARGV[2] == 'add' and (loaded_at == '' or loaded_at ~= ARGV[3])
if shards < 2 or stale then
    redis.call('HSET', KEYS[2], ARGV[1], 'not_loaded')
    return redis.error_reply('NOT_LOADED')
end
redis.call('HSET', KEYS[2], ARGV[1], 'part')
return { 'part', shards, epoch }
