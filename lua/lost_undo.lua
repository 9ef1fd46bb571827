-- lost_undo.lua: take back a lost state's suspension (src/lost_state.rs) that was judged against
-- a mark `hot` has since replaced: the check read MySQL's mark before `hot` stamped its new
-- epoch and Redis after `hot` preheated it, so the two differed although nothing was lost.
-- Called by the suspension itself once a fresh look finds the activity whole, and by `hot`
-- once it has stamped its epoch and finished loading.
--
-- KEYS[1]  activity hash  P:{a:A}:activity
-- ARGV[1]  the status to put back
-- ARGV[2]  the change number (`gate_ver`) the suspension got, or '' for any: a status changed
--          since then (a newer suspension, `start`, `stop`) is left alone
-- ARGV[3]  the epoch the hash must hold, or '' for any: a suspension of another preheat's
--          state is left alone
--
-- Returns {change number, start_ms, end_ms} when taken back (what the stock buckets' gates
-- copy), {0, nil, nil} when the status is not `lost` or the hash does not match.

local held = redis.call('HMGET', KEYS[1], 'status', 'gate_ver', 'epoch', 'start_ms', 'end_ms')
if held[1] ~= 'lost' then
    return { 0, false, false }
end
if (ARGV[2] ~= '' and held[2] ~= ARGV[2]) or (ARGV[3] ~= '' and held[3] ~= ARGV[3]) then
    return { 0, false, false }
end
redis.call('HSET', KEYS[1], 'status', ARGV[1])
redis.call('HDEL', KEYS[1], 'lost_reason')
return { redis.call('HINCRBY', KEYS[1], 'gate_ver', 1), held[4], held[5] }
