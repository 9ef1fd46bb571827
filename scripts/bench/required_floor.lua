-- required_floor.lua: the Redis commands the buy path must run for every purchase, and
-- nothing else, 30 purchases per call as in a group-commit batch: check the user's token,
-- add to the user's total, append the reservation to the order stream. What Redis spends
-- per purchase here is the floor under any implementation of issue 3's purchase.
--
-- KEYS[1]  order stream        KEYS[2]  token key prefix (tokens at KEYS[2] .. 1..30,
-- KEYS[3]  per-user totals              each holding 'tok' .. i)
-- Returns 1, or 0 when a token is missing.
--
-- for i in $(seq 30); do redis-cli set floor:t$i tok$i; done
-- SHA=$(redis-cli script load "$(cat scripts/bench/required_floor.lua)")
-- redis-cli info cpu     # used_cpu_sys + used_cpu_user, before and after:
-- redis-benchmark -c 10 -n 20000 -q EVALSHA $SHA 3 floor:s floor:t floor:b
-- # (after - before) / 600000 purchases = Redis CPU per purchase
for i = 1, 30 do
    if redis.call('GET', KEYS[2] .. i) ~= 'tok' .. i then
        return 0
    end
    redis.call('HINCRBY', KEYS[3], 'user' .. i, 1)
    redis.call('XADD', KEYS[1], '*', 'activity', '7', 'product', '3', 'user', 'user' .. i,
        'quantity', '1', 'price', '100', 'reserved_ms', '1763800000000')
end
return 1
