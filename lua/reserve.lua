-- reserve.lua: decide a batch of purchases of one activity, atomically, in arrival order.
-- Each accepted purchase deducts stock, adds to the buyer's total, counts as sold and is
-- queued in the activity's order stream in this same script, so a unit can neither be
-- sold twice nor be deducted without its reservation being queued. The batch's accepted
-- purchases go into ONE stream entry (decoded in src/reservation/entry.rs): activity,
-- reserved_ms, then per run of consecutive purchases of one product: product, price, buyers
-- (the user ids, space-separated: ids hold no whitespace) and quantities (same order).
--
-- KEYS[1]  activity hash    P:{a:A}:activity   (status, start_ms, end_ms, id)
-- KEYS[2]  order stream     P:{a:A}:orders
-- KEYS[3]  blacklist set    P:{a:A}:blacklist
-- KEYS[4]  revoked set      P:{a:A}:revoked    (users whose token the operator revoked)
-- KEYS[5 .. 4+2M]   per product of the batch, two keys: P:{a:A}:product:ID, P:{a:A}:bought:ID
-- ARGV[1]  number of requests N
-- ARGV[2]  number of distinct products M
-- ARGV[3]  the least persist sequence the caller knows MySQL has recorded (0: unknown); a
--          lower one in the activity hash means Redis went back in time (src/lost_state.rs)
-- ARGV[4 .. 3+M]    the product ids, in the order of their keys
-- ARGV[4+M]         E, the number of requests that are not (first product, quantity 1)
-- then E triples    request number (1..N), product (1..M, its place above), quantity
-- then N values     the user id of each request, in request order
--
-- Returns {entry id, verdicts, stock of product 1, ..., stock of product M}
--   entry id  "<ms>-<seq>" of the entry holding the accepted purchases ('' when none)
--   verdicts  one character per request, in request order: '.' queued (the k-th '.' is
--             purchase k, from 0, of that entry), else the refusal: S suspended, N not_found,
--             T not_started, P paused, E ended, B blacklisted, I invalid_token (revoked),
--             R bad_request, L limit_exceeded, O sold_out
--   stock     each product's stock before the batch (-1 when the product is unknown); the
--             caller works out each request's remaining stock from it and the verdicts
-- Checks run in this order: activity not suspended (status `lost`, or a persist sequence
-- below ARGV[3]: Redis lost state, see src/lost_state.rs), product exists, activity online
-- and now (Redis TIME) within its window, user not blacklisted, user's token not revoked
-- (the token's signature and expiry are checked by `serve` before the batch: src/token.rs),
-- 1 <= quantity <= max_per_order, user's total within the limit, enough stock.
--
-- Cost matters here: Redis spends more time on this script than on anything else in a sale,
-- and each redis.call costs far more than the Lua around it. So a purchase passes one
-- argument in the usual case and runs one command (the buyer's HINCRBY); a product's keys
-- are passed, and its hash read, once per batch, and its stock and sold counters written
-- back once at the end (the script is atomic, so nobody sees the difference); the blacklist
-- and revoked sets are only probed when one of them exists; an accepted purchase adds to the
-- buyer's total first and checks the result (taking it back when over the limit) instead of
-- reading the total before; the answer is one short string plus a number per product.
-- Redis does not roll a failed script back: if any command fails, the counters of the
-- purchases already queued are written back, and their entry added, before the script
-- aborts with that error, so every queued reservation always has its unit deducted.

-- The batch's products: {key, bought_key, id, stock, sold, limit, max_per_order, price, dirty}
-- (stock == nil: no such product).
local products = {}
local pcall_redis = redis.pcall
local function write_back()
    for _, p in ipairs(products) do
        if p.dirty then
            pcall_redis('HSET', p.key, 'stock', string.format('%d', p.stock), 'sold', string.format('%d', p.sold))
        end
    end
end
-- Runs a command; a failed one is raised as a plain Lua error, which the pcall around the
-- batch below catches to write the counters back before the script aborts.
local function call(...)
    local reply = pcall_redis(...)
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
local refusal
if not status then
    refusal = 'N'
elseif status == 'lost' or (tonumber(activity[5]) or 0) < min_seq then
    refusal = 'S'
elseif status == 'online' then
    if now_ms < start_ms then
        refusal = 'T'
    elseif now_ms >= end_ms then
        refusal = 'E'
    end
elseif status == 'paused' then
    refusal = 'P'
elseif status == 'ended' then
    refusal = 'E'
else
    refusal = 'T'
end
local reply = { '', '' }
for j = 1, m do
    local key = KEYS[3 + 2 * j]
    local h = call('HMGET', key, 'stock', 'sold', 'limit', 'max_per_order', 'price')
    local stock = tonumber(h[1])
    products[j] = { key = key, bought_key = KEYS[4 + 2 * j], id = ARGV[3 + j],
        stock = stock, sold = tonumber(h[2]) or 0, limit = tonumber(h[3]),
        max_per_order = tonumber(h[4]), price = h[5], dirty = false }
    reply[2 + j] = stock or -1
end
-- The requests that are not (first product, quantity 1), by request number.
local e_count = tonumber(ARGV[4 + m])
local places, quantities = {}, {}
for k = 0, e_count - 1 do
    local a = 5 + m + 3 * k
    local i = tonumber(ARGV[a])
    places[i], quantities[i] = tonumber(ARGV[a + 1]), ARGV[a + 2]
end
local first_user = 4 + m + 3 * e_count
-- Both sets are usually empty, and an empty set does not exist: one EXISTS covers both.
local check_blacklist, check_revoked = false, false
if call('EXISTS', KEYS[3], KEYS[4]) > 0 then
    check_blacklist, check_revoked = call('EXISTS', KEYS[3]) == 1, call('EXISTS', KEYS[4]) == 1
end
local codes = {}
local entry = { 'XADD', KEYS[2], '*', 'activity', activity_id, 'reserved_ms', string.format('%d', now_ms) }
local buyers, bought = {}, {}
local run_product, run_len, queued = nil, 0, 0
-- The purchases queued since the last change of product, as one run of the entry.
local function close_run()
    if run_len > 0 then
        local e = #entry
        entry[e + 1], entry[e + 2], entry[e + 3], entry[e + 4] = 'product', run_product.id, 'price', run_product.price
        entry[e + 5], entry[e + 6] = 'buyers', table.concat(buyers, ' ', 1, run_len)
        entry[e + 7], entry[e + 8] = 'quantities', table.concat(bought, ' ', 1, run_len)
        run_len = 0
    end
end
-- Decides every request in order; codes[i] is request i's verdict character.
local function decide_all()
    local floor, find = math.floor, string.find
    for i = 1, n do
        local code
        local place = places[i]
        local p = products[place or 1]
        local user = ARGV[first_user + i]
        local quantity, quantity_arg = 1, '1'
        if place then
            quantity_arg = quantities[i]
            quantity = tonumber(quantity_arg)
            if not quantity or quantity < 1 or quantity ~= floor(quantity) then
                quantity = nil
            elseif not find(quantity_arg, '^[1-9]%d*$') then
                quantity_arg = string.format('%d', quantity)
            end
        end
        local stock = p.stock
        if refusal == 'S' then
            code = 'S'
        elseif not stock then
            code = 'N'
        elseif refusal then
            code = refusal
        elseif check_blacklist and call('SISMEMBER', KEYS[3], user) == 1 then
            code = 'B'
        elseif check_revoked and call('SISMEMBER', KEYS[4], user) == 1 then
            code = 'I'
        elseif not quantity then
            code = 'R'
        elseif quantity > p.max_per_order then
            code = 'L'
        elseif stock < quantity then
            if (tonumber(call('HGET', p.bought_key, user)) or 0) + quantity > p.limit then
                code = 'L'
            else
                code = 'O'
            end
        else
            local total = pcall_redis('HINCRBY', p.bought_key, user, quantity_arg)
            if type(total) ~= 'number' then
                error(total.err, 0)
            end
            if total > p.limit then
                if total == quantity then
                    call('HDEL', p.bought_key, user)
                else
                    call('HINCRBY', p.bought_key, user, '-' .. quantity_arg)
                end
                code = 'L'
            else
                p.stock, p.sold, p.dirty = stock - quantity, p.sold + quantity, true
                if p ~= run_product then
                    close_run()
                    run_product = p
                end
                run_len = run_len + 1
                buyers[run_len], bought[run_len] = user, quantity_arg
                queued = queued + 1
                code = '.'
            end
        end
        codes[i] = code
    end
end
-- Queues the accepted purchases, if any, as one entry.
local function append()
    close_run()
    if queued > 0 then
        reply[1] = call(unpack(entry))
    end
end
-- The purchases decided before a failed command are deducted, so they are queued even then.
local ok, err = pcall(decide_all)
local added, add_err = pcall(append)
write_back()
if not ok then error(err, 0) end
if not added then error(add_err, 0) end
reply[2] = table.concat(codes)
return reply
