-- issue_token.lua: register purchase tokens, at most one per user and activity.
-- A user who already holds a registered token gets it back unchanged, so asking twice
-- (or racing two servers) never leaves two valid tokens for one user.
--
-- KEYS[1..N]  token keys   P:{a:A}:token:USER  (all of one activity: one hash slot)
-- ARGV[1]     lifetime in seconds of newly registered tokens
-- ARGV[2..]   the freshly signed token for each key, same order
--
-- Returns N tokens, in key order: the one now registered for each user.

local ttl = ARGV[1]
local out = {}
for i, key in ipairs(KEYS) do
    if redis.call('SET', key, ARGV[i + 1], 'NX', 'EX', ttl) then
        out[i] = ARGV[i + 1]
    else
        out[i] = redis.call('GET', key)
    end
end
return out
