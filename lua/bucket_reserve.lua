-- bucket_reserve.lua: step two of a purchase of a sharded product (src/buckets.rs): take the
-- units from one bucket and queue the reservation in that bucket's stream, atomically, in the
-- bucket's own slot. The quota (window, token, limit) was taken by quota.lua before.
--
-- KEYS[1]  bucket hash      P:{a:A:b:K}:product:ID   (stock, sold)
-- KEYS[2]  bucket stream    P:{a:A:b:K}:orders
-- KEYS[3]  last entry id    P:{a:A:b:K}:seq          (ms, n)
-- ARGV[1]  activity id     ARGV[2] product id     ARGV[3] user id
-- ARGV[4]  quantity        ARGV[5] unit price     ARGV[6] bucket number K
-- ARGV[7]  the bucket-sequence base (src/keys.rs BUCKET_SEQ_BASE)
--
-- Returns {verdict, remaining}
--   verdict    the reservation's entry id when queued, else "sold_out" (fewer units than
--              asked in this bucket) or "not_found" (no such bucket)
--   remaining  the bucket's stock after this call (-1 when there is no such bucket)
-- Entry ids are <ms>-<base + n * 1024 + K>: n counts the entries of one millisecond, so every
-- id is higher than the last (the clock never goes back here) and names its bucket. The entry's
-- fields are those reserve.lua writes, decoded by src/reservation/entry.rs: keep them in step.

local h = redis.call('HMGET', KEYS[1], 'stock', 'sold')
local stock = tonumber(h[1])
if not stock then
    return { 'not_found', -1 }
end
local quantity = tonumber(ARGV[4])
if stock < quantity then
    return { 'sold_out', stock }
end

local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local last = redis.call('HMGET', KEYS[3], 'ms', 'n')
local ms, n = now_ms, 0
local last_ms = tonumber(last[1])
if last_ms and last_ms >= now_ms then
    ms, n = last_ms, tonumber(last[2]) + 1
end
local seq = tonumber(ARGV[7]) + n * 1024 + tonumber(ARGV[6])
local ms_str = string.format('%d', ms)
local id = ms_str .. '-' .. string.format('%d', seq)

-- Deducted before queueing, as in reserve.lua: should the XADD fail, the unit stays withdrawn
-- (reconcile reports it) rather than queued without being deducted.
stock = stock - quantity
redis.call('HSET', KEYS[1], 'stock', string.format('%d', stock),
    'sold', string.format('%d', (tonumber(h[2]) or 0) + quantity))
redis.call('HSET', KEYS[3], 'ms', ms_str, 'n', string.format('%d', n))
redis.call('XADD', KEYS[2], id,
    'activity', ARGV[1], 'product', ARGV[2], 'user', ARGV[3],
    'quantity', ARGV[4], 'price', ARGV[5], 'reserved_ms', string.format('%d', now_ms))
return { id, stock }
