-- persist_mark.lua: raise an activity's persist sequence before a batch of its orders is
-- committed to MySQL (src/lost_state.rs), so Redis's sequence is never below MySQL's
-- unless Redis lost writes. The caller then raises the buckets' copies (gate_set.lua `seq`)
-- to it, still before the commit.
--
-- KEYS[1]  activity hash    P:{a:A}:activity
--
-- Returns {the new sequence, the activity's bucket count}, or {0, 0} when the activity hash
-- does not exist (flushed, or lost: it is not recreated here, so a vanished activity still
-- reads as vanished).

if redis.call('EXISTS', KEYS[1]) == 0 then
    return { 0, 0 }
end
return { redis.call('HINCRBY', KEYS[1], 'persist_seq', 1), tonumber(redis.call('HGET', KEYS[1], 'buckets')) or 0 }
