-- lost_withdraw.lua: take back a lost state's suspension (src/lost_state.rs) that raced a
-- `flush`: the suspension wrote the activity hash after the flush removed it, so the hash
-- holds nothing but the suspension. Called only once MySQL no longer expects Redis to hold the
-- activity (its mark is forgotten).
--
-- KEYS[1]  activity hash  P:{a:A}:activity
--
-- Returns 1 when the hash was removed, 0 when it is absent or was preheated (it has an
-- `epoch`: a `hot` since the flush owns it, or the flush has yet to remove it).

if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'epoch') == 1 then
    return 0
end
redis.call('UNLINK', KEYS[1])
return 1
