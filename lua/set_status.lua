-- set_status.lua: change a preheated activity's status and window (`start`, `stop`).
-- The change is numbered (`gate_ver`), so its copy into the stock buckets' gates
-- (gate_set.lua, src/buckets/gate.rs) never lets an older change overwrite a newer one.
--
-- KEYS[1]  activity hash  P:{a:A}:activity
-- ARGV[1]  new status (online, paused, ended)
-- ARGV[2]  start (ms)     ARGV[3] end (ms)
--
-- Returns the change's number (1 or more) when changed, 0 when the activity is not (fully)
-- preheated: nothing changes then.

local preheated = redis.call('HGET', KEYS[1], 'preheated_at')
if not preheated or preheated == '' then
    return 0
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'start_ms', ARGV[2], 'end_ms', ARGV[3])
return redis.call('HINCRBY', KEYS[1], 'gate_ver', 1)
