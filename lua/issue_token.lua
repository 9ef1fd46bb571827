-- issue_token.lua: register purchase tokens, at most one per user and activity.
-- A user who already holds a registered token gets it back unchanged, so asking twice
-- (or racing two servers) never leaves two valid tokens for one user. With ARGV[2] = '1'
-- (a buyer asking over HTTP) a user the operator revoked gets none.
--
-- KEYS[1]       revoked set   P:{a:A}:revoked
-- KEYS[2..N+1]  token keys    P:{a:A}:token:USER  (all of one activity: one hash slot)
-- ARGV[1]       lifetime in seconds of newly registered tokens
-- ARGV[2]       '1': refuse revoked users; '0': issue to them too (the operator's own issue)
-- ARGV[3..]     for each token key, same order: the user id, then the freshly signed token
--
-- Returns N values, in key order: the token now registered for each user, or '' for a
-- revoked user refused.

local ttl, refuse_revoked = ARGV[1], ARGV[2] == '1'
local out = {}
for i = 2, #KEYS do
    local user, token = ARGV[2 * i - 1], ARGV[2 * i]
    if refuse_revoked and redis.call('SISMEMBER', KEYS[1], user) == 1 then
        out[i - 1] = ''
    elseif redis.call('SET', KEYS[i], token, 'NX', 'EX', ttl) then
        out[i - 1] = token
    else
        out[i - 1] = redis.call('GET', KEYS[i])
    end
end
return out
