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
-- Returns a flat array of 2N values, two per request in request order: verdict, remaining
--   verdict    the reservation's stream entry id ("<ms>-<seq>") when queued, else the refusal:
--              not_found | not_started | paused | ended | blacklisted | invalid_token
--              | bad_request | limit_exceeded | sold_out
--   remaining  the product's stock after this request (-1 when the product is unknown)
-- (Flat, and no order number built here: one Lua table and one string fewer per request.)
-- Checks run in this order: product exists, activity online and now (Redis TIME) within its
-- window, user not blacklisted, token registered for this user, 1 <= quantity <= max_per_order,
-- user's total within the limit, enough stock.
--
-- Cost matters here: every redis.call is about a microsecond. So a product's hash is read
-- once per batch and its stock and sold counters written back once at the end (the script
-- is atomic, so nobody sees the difference), the blacklist is only probed when it has
-- members, and numbers go to Redis as strings (a Lua number costs a float formatting).
-- Redis does not roll a failed script back: if any command fails, the counters of the
-- purchases already queued are written back before the script aborts with that error, so
-- every queued reservation always has its unit deducted.

-- Product hashes read so far in this batch, by key: {stock, sold, limit, max_per_order, price}
-- (stock == nil: no such product). `touched` lists the keys whose counters changed.
local products, touched = {}, {}

local function write_back()
    for _, key in ipairs(touched) do
        local p = products[key]
        redis.pcall('HSET', key, 'stock', string.format('%d', p.stock), 'sold', string.format('%d', p.sold))
    end
    touched = {}
end

local function call(...)
    local reply = redis.pcall(...)
    if type(reply) == 'table' and reply.err then
        write_back()
        error(reply.err, 0)
    end
    return reply
end

local n = tonumber(ARGV[1])
local activity = call('HMGET', KEYS[1], 'status', 'start_ms', 'end_ms', 'id')
local status, start_ms, end_ms, activity_id = activity[1], tonumber(activity[2]), tonumber(activity[3]), activity[4]

local t = call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_ms_str = string.format('%d', now_ms)

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

local check_blacklist = call('SCARD', KEYS[3]) > 0
local function product(key)
    local p = products[key]
    if not p then
        local h = call('HMGET', key, 'stock', 'sold', 'limit', 'max_per_order', 'price')
        p = { stock = tonumber(h[1]), sold = tonumber(h[2]) or 0, limit = tonumber(h[3]),
              max_per_order = tonumber(h[4]), price = h[5] }
        products[key] = p
    end
    return p
end

local replies = {}
for i = 0, n - 1 do
    local product_key, bought_key, token_key = KEYS[4 + i * 3], KEYS[5 + i * 3], KEYS[6 + i * 3]
    local product_id, user, quantity, token =
        ARGV[2 + i * 4], ARGV[3 + i * 4], tonumber(ARGV[4 + i * 4]), ARGV[5 + i * 4]
    local p = product(product_key)
    local stock = p.stock
    local code
    if not stock then
        code, stock = 'not_found', -1
    elseif activity_verdict then
        code = activity_verdict
    elseif check_blacklist and call('SISMEMBER', KEYS[3], user) == 1 then
        code = 'blacklisted'
    elseif token == '' or call('GET', token_key) ~= token then
        code = 'invalid_token'
    elseif not quantity or quantity < 1 or quantity ~= math.floor(quantity) then
        code = 'bad_request'
    elseif quantity > p.max_per_order then
        code = 'limit_exceeded'
    elseif (tonumber(call('HGET', bought_key, user)) or 0) + quantity > p.limit then
        code = 'limit_exceeded'
    elseif stock < quantity then
        code = 'sold_out'
    else
        -- Deducted before queueing: should a command fail from here on, the unit stays
        -- withdrawn (reconcile reports it) rather than queued without being deducted.
        local quantity_str = string.format('%d', quantity)
        stock = stock - quantity
        p.stock, p.sold = stock, p.sold + quantity
        if not p.dirty then
            p.dirty = true
            touched[#touched + 1] = product_key
        end
        local id = call('XADD', KEYS[2], '*',
            'activity', activity_id, 'product', product_id, 'user', user,
            'quantity', quantity_str, 'price', p.price, 'reserved_ms', now_ms_str)
        call('HINCRBY', bought_key, user, quantity_str)
        replies[2 * i + 1], replies[2 * i + 2] = id, stock
    end
    if code then
        replies[2 * i + 1], replies[2 * i + 2] = code, stock
    end
end

write_back()
return replies
