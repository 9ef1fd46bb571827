-- repair_sharded.lua: reconcile's compare-and-set of a sharded product's counters in the
-- activity's slot (src/ops/reconcile/sharded.rs): `sold` (units sold before `hot`, less the
-- units returned since) and `total`. Only a return (release_sharded.lua) or a stock change
-- moves them; should one have landed since reconcile's view, nothing is written and the
-- buckets are left alone too (their repair is computed from the same view).
--
-- KEYS[1]  product hash     P:{a:A}:product:ID
-- ARGV[1]  sold seen        ARGV[2] total seen
-- ARGV[3]  new sold         ARGV[4] new total
--
-- Returns 1 written (or nothing to write), 0 changed since the view, -1 not loaded.

if redis.call('EXISTS', KEYS[1]) == 0 then
    return -1
end
local p = redis.call('HMGET', KEYS[1], 'sold', 'total')
if (tonumber(p[1]) or 0) ~= tonumber(ARGV[1]) or (tonumber(p[2]) or 0) ~= tonumber(ARGV[2]) then
    return 0
end
redis.call('HSET', KEYS[1], 'sold', ARGV[3], 'total', ARGV[4])
return 1
