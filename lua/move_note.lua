-- move_note.lua: step one of gathering an order no single bucket holds (src/buckets/moves.rs),
-- in the activity's slot: the move is noted BEFORE any unit leaves a bucket, so reconcile
-- knows which buckets to look at, whose order it is, how old it is, and which `hot` its units
-- belong to. The units themselves are recorded in each bucket (`m:<move id>`,
-- bucket_take.lua / bucket_reserve.lua); the note goes when the move is over (sold or put
-- back), by the mover or by `reconcile --fix` for a move left behind. A `hot` drops every
-- note: it loads MySQL's count, which has the units.
--
-- KEYS[1]  moves hash       P:{a:A}:moving
-- KEYS[2]  activity hash    P:{a:A}:activity
-- ARGV[1]  move id     ARGV[2] product id     ARGV[3] units     ARGV[4] buckets to take from,
--          in order, comma-separated     ARGV[5] the buyer's user id (no whitespace)
--
-- Returns the activity's preheat epoch, which every bucket of the move must carry.

local epoch = redis.call('HGET', KEYS[2], 'epoch') or ''
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], ARGV[1], table.concat(
    { ARGV[2], ARGV[3], string.format('%d', ms), ARGV[4], ARGV[5], epoch }, ' '))
return epoch
