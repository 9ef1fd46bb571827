-- quota.lua: step one of the purchases of sharded products (src/buckets/quota.rs), a whole
-- batch per call: every check reserve.lua makes except the stock, and each accepted buyer's
-- total raised by the quantity, in the activity's slot, where the per-user limit lives for all
-- buckets. Step two takes the units from the buckets (bucket_reserve.lua); a purchase no bucket
-- can fill has its quota given back (quota_return.lua).
--
-- KEYS[1]  activity hash    P:{a:A}:activity
-- KEYS[2]  blacklist set    P:{a:A}:blacklist
-- KEYS[3 .. 2+2M]   per product of the batch, two keys: P:{a:A}:product:ID, P:{a:A}:bought:ID
-- KEYS[3+2M]       revoked set  P:{a:A}:revoked (the token's signature is checked by `serve`)
-- ARGV[1]  number of requests N
-- ARGV[2]  number of distinct products M
-- ARGV[3]  the least persist sequence MySQL is known to have recorded (as in reserve.lua)
-- ARGV[4 ..]        per request, three values: product (1..M, its place above), user id,
--                   quantity
--
-- Returns a flat array of 2M + N values: per product, its bucket count (0 when unknown) and
-- unit price ("" when unknown); then per request, in order, its verdict:
--   "ok" (the buyer's total now includes the quantity), "not_sharded" (the product has no
--   buckets: decide it with reserve.lua), or the refusal, as in reserve.lua:
--   suspended | not_found | not_started | paused | ended | blacklisted | invalid_token
--   | bad_request | limit_exceeded
-- The requests are decided in order, so two of one buyer in a batch see each other's totals.

local n, m, min_seq = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local activity = redis.call('HMGET', KEYS[1], 'status', 'start_ms', 'end_ms', 'persist_seq')
local status, start_ms, end_ms = activity[1], tonumber(activity[2]), tonumber(activity[3])

local activity_verdict
if status and (status == 'lost' or (tonumber(activity[4]) or 0) < min_seq) then
    activity_verdict = 'suspended'
elseif not status then
    activity_verdict = 'not_found'
elseif status == 'paused' or status == 'ended' then
    activity_verdict = status
elseif status ~= 'online' then
    activity_verdict = 'not_started'
else
    local t = redis.call('TIME')
    local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    if now_ms < start_ms then
        activity_verdict = 'not_started'
    elseif now_ms >= end_ms then
        activity_verdict = 'ended'
    end
end

local replies = {}
local products = {}
for j = 1, m do
    local h = redis.call('HMGET', KEYS[1 + 2 * j], 'shards', 'limit', 'max_per_order', 'price', 'sold')
    local p = { bought_key = KEYS[2 + 2 * j], exists = h[5] ~= false, shards = tonumber(h[1]),
        limit = tonumber(h[2]), max_per_order = tonumber(h[3]) }
    products[j] = p
    replies[2 * j - 1], replies[2 * j] = p.shards or 0, h[4] or ''
end

local check_blacklist = redis.call('SCARD', KEYS[2]) > 0
-- An empty set does not exist: while nobody is revoked, no purchase probes it.
local revoked_key = KEYS[3 + 2 * m]
local check_revoked = redis.call('EXISTS', revoked_key) == 1

-- The one place a purchase's token is checked: only whether the operator revoked the user.
local function token_ok(user)
    return not (check_revoked and redis.call('SISMEMBER', revoked_key, user) == 1)
end

local function decide(i)
    local a = 3 + (i - 1) * 3
    local p = products[tonumber(ARGV[a + 1])]
    local user, quantity_arg = ARGV[a + 2], ARGV[a + 3]
    local quantity = tonumber(quantity_arg)
    if activity_verdict == 'suspended' then
        return 'suspended'
    elseif not p.exists then
        return 'not_found'
    elseif not p.shards or p.shards < 2 then
        return 'not_sharded'
    elseif activity_verdict then
        return activity_verdict
    elseif check_blacklist and redis.call('SISMEMBER', KEYS[2], user) == 1 then
        return 'blacklisted'
    elseif not token_ok(user) then
        return 'invalid_token'
    elseif not quantity or quantity < 1 or quantity ~= math.floor(quantity) then
        return 'bad_request'
    elseif quantity > p.max_per_order then
        return 'limit_exceeded'
    end
    local q = string.format('%d', quantity)
    local total = redis.call('HINCRBY', p.bought_key, user, q)
    if total > p.limit then
        if total == quantity then
            redis.call('HDEL', p.bought_key, user)
        else
            redis.call('HINCRBY', p.bought_key, user, '-' .. q)
        end
        return 'limit_exceeded'
    end
    return 'ok'
end

for i = 1, n do
    replies[2 * m + i] = decide(i)
end
return replies
