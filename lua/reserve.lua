-- reserve.lua: decide a batch of purchases of one activity, atomically, in arrival order.
-- Each accepted purchase deducts stock, adds to the buyer's total, counts as sold and is
-- queued in the activity's order stream in this same script, so a unit can neither be
-- sold twice nor be deducted without its reservation being queued.
--
-- KEYS[1]  activity hash    P:{a:A}:activity   (status, start_ms, end_ms, id)
-- KEYS[2]  order stream     P:{a:A}:orders
-- KEYS[3]  blacklist set    P:{a:A}:blacklist
-- KEYS[4..] per request, three keys: P:{a:A}:product:ID, P:{a:A}:bought:ID, P:{a:A}:token:USER
-- ARGV[1]  number of requests N
-- ARGV[2..] per request, four values: product id, user id, quantity, token
--
-- Returns N replies, in request order, each {code, order_no, remaining}:
--   code       ok | not_found | not_started | paused | ended | blacklisted | invalid_token
--              | bad_request | limit_exceeded | sold_out
--   order_no   "A-<stream entry id>" when ok, "" otherwise
--   remaining  the product's stock after this request (-1 when the product is unknown)
-- Checks run in this order: product exists, activity online and now (Redis TIME) within its
-- window, user not blacklisted, token registered for this user, 1 <= quantity <= max_per_order,
-- user's total within the limit, enough stock.

local n = tonumber(ARGV[1])
local activity = redis.call('HMGET', KEYS[1], 'status', 'start_ms', 'end_ms', 'id')
local status, start_ms, end_ms, activity_id = activity[1], tonumber(activity[2]), tonumber(activity[3]), activity[4]

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local activity_verdict
if not status then
    activity_verdict = 'not_found'
elseif status == 'online' then
    if now_ms < start_ms then
        activity_verdict = 'not_started'
    elseif now_ms >= end_ms then
        activity_verdict = 'ended'
    end
elseif status == 'paused' or status == 'ended' then
    activity_verdict = status
else
    activity_verdict = 'not_started'
end

local replies = {}
for i = 0, n - 1 do
    local product_key, bought_key, token_key = KEYS[4 + i * 3], KEYS[5 + i * 3], KEYS[6 + i * 3]
    local product_id, user, quantity, token =
        ARGV[2 + i * 4], ARGV[3 + i * 4], tonumber(ARGV[4 + i * 4]), ARGV[5 + i * 4]
    local p = redis.call('HMGET', product_key, 'stock', 'limit', 'max_per_order', 'price')
    local stock = tonumber(p[1])
    local code
    if not stock then
        code, stock = 'not_found', -1
    elseif activity_verdict then
        code = activity_verdict
    elseif redis.call('SISMEMBER', KEYS[3], user) == 1 then
        code = 'blacklisted'
    elseif token == '' or redis.call('GET', token_key) ~= token then
        code = 'invalid_token'
    elseif not quantity or quantity < 1 or quantity ~= math.floor(quantity) then
        code = 'bad_request'
    elseif quantity > tonumber(p[3]) then
        code = 'limit_exceeded'
    elseif (tonumber(redis.call('HGET', bought_key, user)) or 0) + quantity > tonumber(p[2]) then
        code = 'limit_exceeded'
    elseif stock < quantity then
        code = 'sold_out'
    else
        stock = redis.call('HINCRBY', product_key, 'stock', -quantity)
        redis.call('HINCRBY', product_key, 'sold', quantity)
        redis.call('HINCRBY', bought_key, user, quantity)
        local id = redis.call('XADD', KEYS[2], '*',
            'activity', activity_id, 'product', product_id, 'user', user,
            'quantity', quantity, 'price', p[4], 'reserved_ms', now_ms)
        replies[i + 1] = {'ok', activity_id .. '-' .. id, stock}
    end
    if code then
        replies[i + 1] = {code, '', stock}
    end
end
return replies
