-- restore_group.lua: put the consumers' group back on a reservation stream that lost it
-- (Redis's NOGROUP), without creating the stream. A stream that is gone was flushed (or
-- never written to, and then its first XADD creates it and the next read restores the
-- group); the consumer must not bring it back as an empty key that `flush` already removed.
-- `hot` creates the streams and their group itself (XGROUP CREATE ... MKSTREAM).
--
-- KEYS[1]  order stream  P:{a:A}:orders, or a stock bucket's (its own tag, see src/keys.rs)
-- ARGV[1]  the consumer group
--
-- Returns 1 when the group was created (reading from the first entry), 0 when the stream
-- already has it, -1 when there is no stream. A key of another type is an error.

if redis.call('EXISTS', KEYS[1]) == 0 then
    return -1
end
local created = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0')
if type(created) == 'table' and created.err then
    if string.find(created.err, 'BUSYGROUP', 1, true) then
        return 0
    end
    return created
end
return 1
