-- settle_stock_op.lua: reconcile's decision on a stock change left pending in MySQL (its
-- process died or lost Redis midway). If Redis applied it, say what it did; if not, mark it
-- void so that a late call of stock_add.lua / sold_out.lua for it refuses, and MySQL can be
-- reverted without a unit reaching sale that MySQL no longer counts.
--
-- KEYS[1]  stock ops hash   P:{a:A}:stock_ops
-- ARGV[1]  the ledger row id of the change
--
-- Returns what Redis holds for the change: units added / withdrawn, "not_loaded", or "void".

redis.call('HSETNX', KEYS[1], ARGV[1], 'void')
return redis.call('HGET', KEYS[1], ARGV[1])
