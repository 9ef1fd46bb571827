-- quota_return.lua: give back the quotas bucket_buy.lua took in bucket K for purchases no
-- bucket could fill (src/buckets/quota.rs), a whole batch's per call, so a buyer refused
-- `sold_out` keeps their whole limit.
--
-- KEYS[1 .. M]  per product of the returns: bucket K's bought hash   P:{a:A:b:K}:bought:ID
-- ARGV[1 ..]    per return, three values: product (1..M, its place above), user id, quantity
--
-- Returns the number of returns made.

local returned = 0
for a = 1, #ARGV, 3 do
    local key, user = KEYS[tonumber(ARGV[a])], ARGV[a + 1]
    if redis.call('HINCRBY', key, user, '-' .. ARGV[a + 2]) <= 0 then
        redis.call('HDEL', key, user)
    end
    returned = returned + 1
end
return returned
