-- lib/set_probe.lua: not a script of its own. src/scripts.rs puts it in front of reserve.lua
-- and bucket_buy.lua, the two scripts that check a batch's buyers against the blacklist and
-- the revoked set, so both check them the one same way.
--
-- probe_sets(blacklist, revoked, args, first, count, stride, numbered) returns the verdict
-- character of each request whose buyer is blacklisted ('B') or revoked ('I'), by request
-- number (1..count), the buyer of request i being args[first + (i - 1) * stride] (with its
-- first character, a '#', left off when `numbered`: see reserve.lua's ARGV); nil when neither
-- set exists.
-- Blacklisted comes first. One SMISMEMBER per set that exists, not a SISMEMBER per purchase;
-- both sets are usually empty, and an empty set does not exist, so while they are one EXISTS
-- is all. (Its inputs are passed, not taken as upvalues, which each cost a call an allocation.)
local function probe_sets(blacklist, revoked, args, first, count, stride, numbered)
    local sets = redis.call('EXISTS', blacklist, revoked)
    if sets == 0 then
        return nil
    end
    local users = args
    if stride ~= 1 or numbered then
        users = {}
        for i = 1, count do
            local user = args[first + (i - 1) * stride]
            users[i] = numbered and string.sub(user, 2) or user
        end
        first = 1
    end
    local last = first + count - 1
    local flags, listed = {}, nil
    if sets == 2 or redis.call('EXISTS', blacklist) == 1 then
        listed = redis.call('SMISMEMBER', blacklist, unpack(users, first, last))
    end
    if sets == 2 or not listed then
        local r = redis.call('SMISMEMBER', revoked, unpack(users, first, last))
        for i = 1, #r do
            if r[i] == 1 then
                flags[i] = 'I'
            end
        end
    end
    for i = 1, listed and #listed or 0 do
        if listed[i] == 1 then
            flags[i] = 'B'
        end
    end
    return flags
end

