-- `seckill stock remove PRODUCT N` takes N units off sale (never reserved ones): a ledger row
-- of its own kind, `remove`, written `pending` with the units asked (delta -N) before Redis
-- withdraws them, `done` with the units Redis withdrew (`total_stock` shrinks by as many).
ALTER TABLE stock_ledger
    DROP CONSTRAINT stock_ledger_op,
    ADD CONSTRAINT stock_ledger_op CHECK (op IN ('preheat', 'reserve', 'release', 'adjust', 'sold_out', 'remove'));
