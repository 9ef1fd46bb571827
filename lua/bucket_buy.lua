-- bucket_buy.lua: the purchases of sharded products whose buyers' bucket is K (src/buckets/quota.rs),
-- a batch's worth per call, decided in bucket K's slot alone: every check reserve.lua makes,
-- against bucket K's copies of the activity's status, window, persist sequence, blacklist and
-- revoked users (lua/gate_set.lua, `hot`), and the product's limits; the buyer's total (kept in
-- this bucket only: the buyer's bucket is picked by the user id) raised by the quantity and
-- checked against the limit; then, when ARGV[7] is 1 and the bucket holds the units, the units
-- deducted and the purchase queued in the bucket's stream, all in one step. Every purchase
-- queued goes into ONE stream entry, in the format reserve.lua writes (activity, reserved_ms,
-- then per run of consecutive purchases of one product: product, price, buyers
-- space-separated, quantities; decoded by src/reservation/entry.rs: keep them in step), built
-- and numbered by lib/bucket_entry.lua, which src/scripts.rs puts in front of this script. A
-- purchase whose quota is taken but whose
-- units this bucket does not hold is answered `short`: the caller fills it from another bucket
-- (bucket_reserve.lua) or gives the quota back (quota_return.lua).
--
-- KEYS[1]  bucket stream    P:{a:A:b:K}:orders
-- KEYS[2]  last entry id    P:{a:A:b:K}:seq          (ms, n)
-- KEYS[3]  gate hash        P:{a:A:b:K}:gate         (status start_ms end_ms persist_seq)
-- KEYS[4]  blacklist copy   P:{a:A:b:K}:blacklist
-- KEYS[5]  revoked copy     P:{a:A:b:K}:revoked
-- KEYS[6 .. 5+2M]  per product of the call, two keys: P:{a:A:b:K}:product:ID,
--                  P:{a:A:b:K}:bought:ID
-- ARGV[1]  activity id     ARGV[2] bucket number K     ARGV[3] the bucket-sequence base
--          (src/keys.rs BUCKET_SEQ_BASE)
-- ARGV[4]  number of requests N     ARGV[5] number of distinct products M
-- ARGV[6]  the least persist sequence MySQL is known to have recorded (as in reserve.lua)
-- ARGV[7]  1: take the units here when the bucket holds them; 0: take the quotas only
-- ARGV[8 .. 7+2M]  per product, two values: product id, the bucket count the caller picked K
--                  with (a bucket of another count answers not_found: the buyer's total may
--                  live in another bucket)
-- ARGV[8+2M ..]    per request, three values: product (1..M, its place above), user id, quantity
--
-- Returns a flat array of 1 + M + 2N values: the id of the entry holding the queued purchases
-- ('' when none was queued), per product its unit price ('' when there is no such bucket),
-- then two per request in request order: verdict, remaining
--   verdict    when queued, the purchase's index (integer, from 0) within that entry, else
--              "short" (the buyer's total now includes the quantity, this bucket holds fewer
--              units), "not_found" (no such bucket, or one of another bucket count), or the
--              refusal as in reserve.lua: suspended | not_started | paused | ended |
--              blacklisted | invalid_token | bad_request | limit_exceeded
--   remaining  the bucket's stock after this request (-1 when there is no such bucket)
-- Requests are decided in order, so two of one buyer in a call see each other's totals.
-- Entry ids are <ms>-<base + n * 1024 + K>, as in bucket_reserve.lua.
-- The buyers' totals are read with one HMGET per product and written back with one HSET per
-- product, at the end (the script is atomic), not a command per purchase. Totals and counters
-- are written before the XADD: should it fail, the units stay withdrawn and the totals raised
-- (reconcile reports them) rather than queued without being deducted.

-- Strings are converted by arithmetic (once; Lua 5.1's tonumber converts twice) where a
-- missing value would fail anyway.
local activity, bucket, base = ARGV[1], ARGV[2] + 0, ARGV[3] + 0
local n, m, min_seq, take = ARGV[4] + 0, ARGV[5] + 0, ARGV[6], ARGV[7] == '1'

local gate = redis.call('HMGET', KEYS[3], 'status', 'start_ms', 'end_ms', 'persist_seq')
local status = gate[1]
local gate_verdict
if not status or status == 'lost' or (min_seq ~= '0' and (tonumber(gate[4]) or 0) < min_seq + 0) then
    -- No gate where the bucket is loaded: this primary lost its keys; sell nothing here.
    gate_verdict = 'suspended'
elseif status == 'paused' or status == 'ended' then
    gate_verdict = status
elseif status ~= 'online' then
    gate_verdict = 'not_started'
end

local t = redis.call('TIME')
local us = t[2] + 0
local now_ms = t[1] * 1000 + (us - us % 1000) / 1000
if not gate_verdict then
    if now_ms < gate[2] + 0 then
        gate_verdict = 'not_started'
    elseif now_ms >= gate[3] + 0 then
        gate_verdict = 'ended'
    end
end

-- The answer, 1 + M + 2N values: made that size at once (every value is replaced below) rather
-- than grown, which rehashes it at every power of two.
local replies = { unpack(ARGV, 1, 1 + m + 2 * n) }
replies[1] = ''
local products = {}
for j = 1, m do
    local key = KEYS[4 + 2 * j]
    local h = redis.call('HMGET', key, 'stock', 'sold', 'shards', 'limit', 'max_per_order', 'price')
    local p = { key = key, bought_key = KEYS[5 + 2 * j], id = ARGV[6 + 2 * j], stock = tonumber(h[1]),
        sold = tonumber(h[2]) or 0, limit = tonumber(h[4]), max_per_order = tonumber(h[5]),
        price = h[6] or '' }
    if not p.stock or h[3] ~= ARGV[7 + 2 * j] or not p.limit or not p.max_per_order then
        p.stock = nil
        p.price = ''
    end
    -- The units taken in this call are stock_before - stock at the end, and as many sold.
    p.stock_before = p.stock
    products[j] = p
    replies[1 + j] = p.price
end

local first_arg = 8 + 2 * m
-- Blacklisted ('B') and revoked ('I') buyers by request number (lua/lib/set_probe.lua).
local flags = not gate_verdict and probe_sets(KEYS[4], KEYS[5], ARGV, first_arg + 1, n, 3) or nil

local entry = bucket_entry(KEYS[1], activity, now_ms)

-- Each product's buyers' totals, read with one HMGET per product and written back with one
-- HSET (the script is atomic: nobody sees the difference), not a command per purchase. The
-- HMGET names every request's buyer (a buyer twice, twice): slot[i] is request i's place in
-- its product's reply. set is the product's HSET, at[user] the place of the buyer's new total
-- in it and total[at] that total as a number, for a buyer asking twice in the call.
local slot = {}
for _, p in ipairs(products) do
    p.users, p.set, p.at, p.total = {}, { 'HSET', p.bought_key }, {}, {}
end
if not gate_verdict then
    for i = 1, n do
        local a = first_arg + (i - 1) * 3
        local p = products[m == 1 and 1 or tonumber(ARGV[a])]
        if p.stock then
            local users = p.users
            local k = #users + 1
            users[k], slot[i] = ARGV[a + 1], k
        end
    end
    for _, p in ipairs(products) do
        if p.users[1] then
            p.held = redis.call('HMGET', p.bought_key, unpack(p.users))
        end
    end
end
local floor, format = math.floor, string.format
for i = 1, n do
    local a = first_arg + (i - 1) * 3
    local p = products[m == 1 and 1 or tonumber(ARGV[a])]
    local user, quantity_arg = ARGV[a + 1], ARGV[a + 2]
    local stock = p.stock
    local verdict
    if not stock then
        verdict, stock = 'not_found', -1
    elseif gate_verdict then
        verdict = gate_verdict
    elseif flags and flags[i] == 'B' then
        verdict = 'blacklisted'
    elseif flags and flags[i] == 'I' then
        verdict = 'invalid_token'
    else
        local quantity = 1
        if quantity_arg ~= '1' then
            quantity = tonumber(quantity_arg)
            if quantity and (quantity < 1 or quantity ~= floor(quantity)) then
                quantity = nil
            end
        end
        if not quantity then
            verdict = 'bad_request'
        elseif quantity > p.max_per_order then
            verdict = 'limit_exceeded'
        else
            local set, at = p.set, p.at[user]
            local before
            if at then
                before = p.total[at]
            else
                before = tonumber(p.held[slot[i]]) or 0
            end
            local total = before + quantity
            if total > p.limit then
                verdict = 'limit_exceeded'
            else
                if not at then
                    at = #set + 2
                    set[at - 1] = user
                    p.at[user] = at
                end
                p.total[at] = total
                -- A first purchase of one unit writes the quantity passed, not a formatted one.
                set[at] = (total == 1 and quantity_arg == '1') and quantity_arg or format('%d', total)
                if not take or stock < quantity then
                    verdict = 'short'
                else
                    stock = stock - quantity
                    p.stock = stock
                    verdict = entry.queue(p, user, quantity_arg)
                end
            end
        end
    end
    replies[m + 2 * i], replies[m + 2 * i + 1] = verdict, stock
end

for _, p in ipairs(products) do
    if p.set[3] then
        redis.call(unpack(p.set))
    end
    local taken = p.stock and p.stock_before - p.stock or 0
    if taken > 0 then
        redis.call('HSET', p.key, 'stock', format('%d', p.stock), 'sold', format('%d', p.sold + taken))
    end
end
if entry.queued() > 0 then
    replies[1] = entry.append(KEYS[2], base, bucket)
end
return replies
