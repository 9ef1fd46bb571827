-- bucket_take.lua: move units of a noted move (move_note.lua, src/buckets/moves.rs) out of one
-- bucket of a sharded product, or back into it. The bucket records what the move did here in
-- the field `m:<move id>`, atomically with its stock, so reconcile can count units in hand
-- from any bucket's view, and each bucket is a fence that makes the move end exactly once:
--   "N"         N units taken, in hand (0: this bucket had none)
--   "N:back"    closed: the N units are back here (or none were taken and none ever will be)
--   "N:in:Q"    the target: Q units of the move were added here and sold (bucket_reserve.lua)
-- A take after the bucket was closed is refused, and so is the target's sale
-- (bucket_reserve.lua wants its field open): whoever closes a bucket first (the mover
-- giving up, or `reconcile --fix` finishing a move left behind) decides for its units.
--
-- KEYS[1]  bucket hash      P:{a:A:b:K}:product:ID   (stock, epoch, m:<move id>)
-- ARGV[1]  'take' (at most ARGV[3] units) or 'back' (close the bucket, its units back)
-- ARGV[2]  move id
-- ARGV[3]  units (take)
-- ARGV[4]  the epoch the move was noted in
--
-- Returns for 'take' the units taken (the first answer again on a repeated take), -2 the bucket
-- is closed for this move; for 'back' the units put back now (0: none, or earlier), -3 this is
-- the move's target and its units were sold; both -1 when there is no such bucket or it is of
-- another epoch (a later `hot` loaded MySQL's count, which has the units): nothing done.

local h = redis.call('HMGET', KEYS[1], 'stock', 'epoch')
local stock = tonumber(h[1])
if not stock or (h[2] or '') ~= ARGV[4] then
    return -1
end
local field = 'm:' .. ARGV[2]
local seen = redis.call('HGET', KEYS[1], field)
if ARGV[1] == 'back' then
    if not seen then
        redis.call('HSET', KEYS[1], field, '0:back')
        return 0
    end
    local open = tonumber(seen)
    if open then
        if open > 0 then
            redis.call('HINCRBY', KEYS[1], 'stock', open)
        end
        redis.call('HSET', KEYS[1], field, seen .. ':back')
        return open
    end
    if string.find(seen, ':in:', 1, true) then
        return -3
    end
    return 0
end
if seen then
    return tonumber(seen) or -2
end
local take = math.max(math.min(stock, tonumber(ARGV[3])), 0)
if take > 0 then
    redis.call('HINCRBY', KEYS[1], 'stock', -take)
end
redis.call('HSET', KEYS[1], field, string.format('%d', take))
return take
