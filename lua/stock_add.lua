-- stock_add.lua: put the units of one `stock add` on sale, atomically with reserve.lua and
-- at most once: MySQL already counts them (a pending ledger row), and the row's id is
-- recorded here in the same step, so a retry, a late call from a killed process or
-- reconcile can tell whether it happened.
--
-- KEYS[1]  product hash     P:{a:A}:product:ID
-- KEYS[2]  stock ops hash   P:{a:A}:stock_ops
-- KEYS[3]  activity hash    P:{a:A}:activity
-- ARGV[1]  units to add (positive)
-- ARGV[2]  the ledger row id of the change
-- ARGV[3]  the activity's `preheated_at` read before MySQL counted the units ('' if none)
--
-- Returns the stock after the top-up (also when this change was already applied), or the
-- error "NOT_LOADED" when the product is not in Redis (then only MySQL changes, and the next
-- `hot` loads it), or "VOIDED" when reconcile settled the change as undone.
-- A `hot` since ARGV[3] (or one still running: `preheated_at` empty) may have loaded the
-- units already, as it reads MySQL's total; the change is then not applied either and
-- answers "NOT_LOADED": Redis holds what that `hot` read, and reconcile restores anything
-- MySQL counts beyond it.

local seen = redis.call('HGET', KEYS[2], ARGV[2])
if seen == 'void' then
    return redis.error_reply('VOIDED')
elseif seen == 'not_loaded' then
    return redis.error_reply('NOT_LOADED')
elseif seen then
    return tonumber(redis.call('HGET', KEYS[1], 'stock'))
end
local loaded_at = redis.call('HGET', KEYS[3], 'preheated_at') or ''
if redis.call('EXISTS', KEYS[1]) == 0 or loaded_at == '' or loaded_at ~= ARGV[3] then
    redis.call('HSET', KEYS[2], ARGV[2], 'not_loaded')
    return redis.error_reply('NOT_LOADED')
end
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('HINCRBY', KEYS[1], 'total', ARGV[1])
return redis.call('HINCRBY', KEYS[1], 'stock', ARGV[1])
