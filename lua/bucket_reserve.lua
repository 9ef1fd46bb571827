-- bucket_reserve.lua: the follow-up of the purchases of sharded products (src/buckets/fill.rs):
-- purchases whose buyers' bucket was short, sent to another bucket, take their units from it
-- and are queued in that bucket's stream, atomically, in the bucket's own slot. Their quotas
-- (window, token, limit) were taken by bucket_buy.lua in the buyer's bucket before. Every
-- purchase queued here goes into ONE stream entry, in the format reserve.lua writes
-- (activity, reserved_ms, then per run of consecutive purchases of one product: product,
-- price, buyers space-separated, quantities; decoded by src/reservation/entry.rs: keep them in
-- step), built and numbered by lib/bucket_entry.lua, which src/scripts.rs puts in front of
-- this script.
--
-- KEYS[1]  bucket stream    P:{a:A:b:K}:orders
-- KEYS[2]  last entry id    P:{a:A:b:K}:seq          (ms, n)
-- KEYS[3 .. 2+M]   per product of the call: bucket hash P:{a:A:b:K}:product:ID (stock, sold)
-- ARGV[1]  activity id     ARGV[2] bucket number K     ARGV[3] the bucket-sequence base
--          (src/keys.rs BUCKET_SEQ_BASE)
-- ARGV[4]  number of requests N     ARGV[5] number of distinct products M
-- ARGV[6 .. 5+5M]  per product, five values: product id, unit price, units to add to the
--                  bucket before deciding (0, or the units of a move, src/buckets/moves.rs,
--                  withdrawn from buckets for an order none held whole: added and sold in one
--                  step), the preheat epoch they were withdrawn in and the move id ('' when
--                  none are added). Units are added only while this bucket's `m:<move id>`
--                  is open (bucket_take.lua; it becomes "N:in:Q", so a move is sold once
--                  and never after it was put back) and the bucket is of that epoch; else
--                  the product answers not_found
-- ARGV[6+5M ..]    per request, three values: product (1..M, its place above), user id, quantity
--
-- Returns a flat array of 1 + 2N values: the id of the entry holding the queued purchases
-- ('' when none was queued), then two per request in request order: verdict, remaining
--   verdict    when queued, the purchase's index (integer, from 0) within that entry, else
--              "sold_out" (fewer units than asked in this bucket) or "not_found" (no such
--              bucket: nothing is added either)
--   remaining  the bucket's stock after this request (-1 when there is no such bucket)
-- Entry ids are <ms>-<base + n * 1024 + K>: n counts the entries of one millisecond, so every
-- id is higher than the last (the clock never goes back here) and names its bucket.
-- Counters are written before the XADD: should it fail, the units stay withdrawn (reconcile
-- reports them) rather than queued without being deducted.

local activity, bucket, base = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local n, m = tonumber(ARGV[4]), tonumber(ARGV[5])

local products = {}
for j = 1, m do
    local a = 6 + (j - 1) * 5
    local add = tonumber(ARGV[a + 2])
    local move
    local h = redis.call('HMGET', KEYS[2 + j], 'stock', 'sold', 'epoch')
    local stock = tonumber(h[1])
    if stock and add > 0 then
        local field = 'm:' .. ARGV[a + 4]
        local taken = redis.call('HGET', KEYS[2 + j], field)
        if (h[3] or '') == ARGV[a + 3] and taken and tonumber(taken) then
            stock = stock + add
            move = { field = field, value = taken .. ':in:' .. ARGV[a + 2] }
        else
            stock = nil
        end
    end
    products[j] = { key = KEYS[2 + j], id = ARGV[a], price = ARGV[a + 1], stock = stock,
        sold = tonumber(h[2]) or 0, dirty = add > 0, move = move }
end

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local replies = { '' }
local entry = bucket_entry(KEYS[1], activity, now_ms)
local first_arg = 6 + 5 * m
for i = 1, n do
    local a = first_arg + (i - 1) * 3
    local p = products[tonumber(ARGV[a])]
    local quantity_arg = ARGV[a + 2]
    local quantity = tonumber(quantity_arg)
    if not p.stock then
        replies[2 * i], replies[2 * i + 1] = 'not_found', -1
    elseif p.stock < quantity then
        replies[2 * i], replies[2 * i + 1] = 'sold_out', p.stock
    else
        p.stock, p.sold, p.dirty = p.stock - quantity, p.sold + quantity, true
        replies[2 * i], replies[2 * i + 1] = entry.queue(p, ARGV[a + 1], quantity_arg), p.stock
    end
end

for _, p in ipairs(products) do
    if p.dirty and p.stock then
        redis.call('HSET', p.key, 'stock', string.format('%d', p.stock), 'sold', string.format('%d', p.sold))
        if p.move then
            redis.call('HSET', p.key, p.move.field, p.move.value)
        end
    end
end
if entry.queued() > 0 then
    replies[1] = entry.append(KEYS[2], base, bucket)
end
return replies
