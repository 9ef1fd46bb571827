-- stock_add.lua: put the units of one `stock add` on sale, atomically with reserve.lua and
-- at most once: MySQL already counts them (a pending ledger row), and the row's id is
-- recorded here in the same step, so a retry, a late call from a killed process or
-- reconcile can tell whether it happened.
--
-- KEYS[1]  product hash     P:{a:A}:product:ID
-- KEYS[2]  stock ops hash   P:{a:A}:stock_ops
-- ARGV[1]  units to add (positive)
-- ARGV[2]  the ledger row id of the change
--
-- Returns the stock after the top-up (also when this change was already applied), or the
-- error "NOT_LOADED" when the product is not in Redis (then only MySQL changes, and the next
-- `hot` loads it), or "VOIDED" when reconcile settled the change as undone.

local seen = redis.call('HGET', KEYS[2], ARGV[2])
if seen == 'void' then
    return redis.error_reply('VOIDED')
end
if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('HSET', KEYS[2], ARGV[2], 'not_loaded')
    return redis.error_reply('NOT_LOADED')
end
if seen then
    return tonumber(redis.call('HGET', KEYS[1], 'stock'))
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'total', ARGV[1])
return redis.call('HINCRBY', KEYS[1], 'stock', ARGV[1])
