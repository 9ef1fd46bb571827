-- bucket_add.lua: put units into one bucket of a sharded product (src/buckets.rs): a
-- cancelled or expired order's units (after release_sharded.lua), or a share of `stock add`.
--
-- KEYS[1]  bucket hash      P:{a:A:b:K}:product:ID
-- ARGV[1]  units to add
--
-- Returns the bucket's stock after the call, or -1 when there is no such bucket (nothing
-- is added: the next `hot` loads the stock from MySQL).

if redis.call('EXISTS', KEYS[1]) == 0 then
    return -1
end
return redis.call('HINCRBY', KEYS[1], 'stock', ARGV[1])
