-- gate_set.lua: bring bucket K's copy of the activity's sale switches (src/buckets/gate.rs) up
-- to date, for bucket_buy.lua to decide purchases in the bucket's slot alone.
--   'status': the status and window of status change number ARGV[5] (the activity hash's
--             `gate_ver`, raised by set_status.lua and a lost state's suspension); an older
--             change arriving late changes nothing, so concurrent fan-outs end at the latest.
--   'seq':    the persist sequence raised to at least ARGV[2] (src/lost_state.rs: every
--             persisted batch raises it here before its MySQL commit, so a bucket's sequence
--             below MySQL's means this bucket's primary lost writes).
--
-- KEYS[1]  gate hash        P:{a:A:b:K}:gate
-- ARGV[1]  'status' or 'seq'
-- ARGV[2]  'status': the status; 'seq': the persist sequence
-- ARGV[3]  start (ms)     ARGV[4] end (ms)     ARGV[5] the change's number (status only)
--
-- Returns 1 written, 0 not (an older status change; or no gate: a bucket not loaded by `hot`
-- is left alone, and a lost one stays lost).

if redis.call('EXISTS', KEYS[1]) == 0 then
    return 0
end
if ARGV[1] == 'seq' then
    if (tonumber(redis.call('HGET', KEYS[1], 'persist_seq')) or 0) < tonumber(ARGV[2]) then
        redis.call('HSET', KEYS[1], 'persist_seq', ARGV[2])
        return 1
    end
    return 0
end
if (tonumber(redis.call('HGET', KEYS[1], 'ver')) or 0) >= tonumber(ARGV[5]) then
    return 0
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'start_ms', ARGV[3], 'end_ms', ARGV[4], 'ver', ARGV[5])
return 1
