-- reserve.lua: decide a batch of purchases of one activity, atomically, in arrival order.
-- Each accepted purchase deducts stock, adds to the buyer's total, counts as sold and is
-- queued in the activity's order stream in this same script, so a unit can neither be
-- sold twice nor be deducted without its reservation being queued. The batch's accepted
-- purchases go into ONE stream entry (one XADD per call, not per purchase: less for Redis to
-- execute and to propagate to the AOF and replicas): activity, reserved_ms, then product,
-- user, quantity, price per purchase in order (decoded in src/reservation/entry.rs).
--
-- KEYS[1]  activity hash    P:{a:A}:activity   (status, start_ms, end_ms, id)
-- KEYS[2]  order stream     P:{a:A}:orders
-- KEYS[3]  blacklist set    P:{a:A}:blacklist
-- KEYS[4 .. 3+2M]   per product of the batch, two keys: P:{a:A}:product:ID, P:{a:A}:bought:ID
-- KEYS[4+2M ..]     per request, one key: P:{a:A}:token:USER
-- ARGV[1]  number of requests N
-- ARGV[2]  number of distinct products M
-- ARGV[3]  the least persist sequence the caller knows MySQL has recorded (0: unknown); a
--          lower one in the activity hash means Redis went back in time (src/lost_state.rs)
-- ARGV[4 .. 3+M]    the product ids, in the order of their keys
-- ARGV[4+M ..]      per request, four values: product (1..M, its place above), user id,
--                   quantity, token
--
-- Returns a flat array of 1 + 2N values: the id ("<ms>-<seq>") of the entry holding the
-- accepted purchases ('' when none was accepted), then two per request in request order:
-- verdict, remaining
--   verdict    when queued, the purchase's index (integer, from 0) within that entry, else the refusal:
--              suspended | not_found | not_started | paused | ended | blacklisted
--              | invalid_token | bad_request | limit_exceeded | sold_out
--   remaining  the product's stock after this request (-1 when the product is unknown)
-- Checks run in this order: activity not suspended (status `lost`, or a persist sequence
-- below ARGV[3]: Redis lost state, see src/lost_state.rs), product exists, activity online and now (Redis TIME) within its window, user not blacklisted, token registered for this user, 1 <= quantity <= max_per_order,
-- user's total within the limit, enough stock.
--
-- Cost matters here: Redis spends more time on this script than on anything else in a sale.
-- So a product's keys are passed, and its hash read, once per batch, and its stock and sold
-- counters written back once at the end (the script is atomic, so nobody sees the
-- difference); the blacklist is only probed when it has members; an accepted purchase adds
-- to the buyer's total first and checks the result (taking it back when over the limit)
-- instead of reading the total before; numbers go to Redis as strings (a Lua number costs a
-- float formatting); and the answer is a flat array with no order number built here.
-- Redis does not roll a failed script back: if any command fails, the counters of the
-- purchases already queued are written back before the script aborts with that error, so
-- every queued reservation always has its unit deducted.

-- The batch's products: {key, bought_key, id, stock, sold, limit, max_per_order, price, dirty}
-- (stock == nil: no such product).
local products = {}

local function write_back()
    for _, p in ipairs(products) do
        if p.dirty then
            redis.pcall('HSET', p.key, 'stock', string.format('%d', p.stock), 'sold', string.format('%d', p.sold))
        end
    end
end

-- Runs a command; a failed one is raised as a plain Lua error, which the pcall around the
-- batch below catches to write the counters back before the script aborts.
local function call(...)
    local reply = redis.pcall(...)
    if type(reply) == 'table' and reply.err then
        error(reply.err, 0)
    end
    return reply
end

local n, m, min_seq = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local activity = call('HMGET', KEYS[1], 'status', 'start_ms', 'end_ms', 'id', 'persist_seq')
local status, start_ms, end_ms, activity_id = activity[1], tonumber(activity[2]), tonumber(activity[3]), activity[4]

local t = call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local now_ms_str = string.format('%d', now_ms)

local activity_verdict
if not status then
    activity_verdict = 'not_found'
elseif status == 'lost' or (tonumber(activity[5]) or 0) < min_seq then
    activity_verdict = 'suspended'
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

for j = 1, m do
    local key = KEYS[2 + 2 * j]
    local h = call('HMGET', key, 'stock', 'sold', 'limit', 'max_per_order', 'price')
    products[j] = { key = key, bought_key = KEYS[3 + 2 * j], id = ARGV[3 + j],
        stock = tonumber(h[1]), sold = tonumber(h[2]) or 0, limit = tonumber(h[3]),
        max_per_order = tonumber(h[4]), price = h[5], dirty = false }
end

local check_blacklist = call('SCARD', KEYS[3]) > 0
local first_token_key, first_arg = 3 + 2 * m, 3 + m

-- replies[1] is the entry id; request i's two values are at 2i and 2i + 1.
local replies = { '' }
-- The XADD arguments; accepted purchases append their four field/value pairs.
local entry = { 'XADD', KEYS[2], '*', 'activity', activity_id, 'reserved_ms', now_ms_str }
local queued, last = 0, #entry
local function decide(i)
    local a = first_arg + (i - 1) * 4
    local p = products[tonumber(ARGV[a + 1])]
    local user, quantity_arg, token = ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
    local quantity = tonumber(quantity_arg)
    local stock = p.stock
    local code
    if activity_verdict == 'suspended' then
        code, stock = 'suspended', stock or -1
    elseif not stock then
        code, stock = 'not_found', -1
    elseif activity_verdict then
        code = activity_verdict
    elseif check_blacklist and call('SISMEMBER', KEYS[3], user) == 1 then
        code = 'blacklisted'
    elseif token == '' or call('GET', KEYS[first_token_key + i]) ~= token then
        code = 'invalid_token'
    elseif not quantity or quantity < 1 or quantity ~= math.floor(quantity) then
        code = 'bad_request'
    elseif quantity > p.max_per_order then
        code = 'limit_exceeded'
    elseif stock < quantity then
        -- The limit is checked before the stock, so the buyer's total still decides.
        if (tonumber(call('HGET', p.bought_key, user)) or 0) + quantity > p.limit then
            code = 'limit_exceeded'
        else
            code = 'sold_out'
        end
    else
        if not string.find(quantity_arg, '^[1-9]%d*$') then
            quantity_arg = string.format('%d', quantity)
        end
        local total = call('HINCRBY', p.bought_key, user, quantity_arg)
        if total > p.limit then
            if total == quantity then
                call('HDEL', p.bought_key, user)
            else
                call('HINCRBY', p.bought_key, user, '-' .. quantity_arg)
            end
            code = 'limit_exceeded'
        else
            -- Deducted before queueing: should the XADD fail, the unit stays withdrawn
            -- (reconcile reports it) rather than queued without being deducted.
            stock = stock - quantity
            p.stock, p.sold, p.dirty = stock, p.sold + quantity, true
            local e = last
            last = e + 8
            entry[e + 1], entry[e + 2], entry[e + 3], entry[e + 4] = 'product', p.id, 'user', user
            entry[e + 5], entry[e + 6], entry[e + 7], entry[e + 8] = 'quantity', quantity_arg, 'price', p.price
            replies[2 * i], replies[2 * i + 1] = queued, stock
            queued = queued + 1
        end
    end
    if code then
        replies[2 * i], replies[2 * i + 1] = code, stock
    end
end

-- Queues the accepted purchases, if any, as one entry.
local function append()
    if queued > 0 then
        replies[1] = call(unpack(entry))
    end
end

-- The purchases decided before a failed command are deducted, so they are queued even then.
local ok, err = pcall(function()
    for i = 1, n do
        decide(i)
    end
end)
local added, add_err = pcall(append)
write_back()
if not ok then
    error(err, 0)
end
if not added then
    error(add_err, 0)
end
return replies
