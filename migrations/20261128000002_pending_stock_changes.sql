-- Live stock changes (`stock add`, `stock sold-out`) are written to MySQL first as a
-- `pending` ledger row, then applied in Redis, then marked `done`; a change whose process
-- died midway stays `pending` until `seckill reconcile --fix` settles it (`done`, or
-- `undone` with its MySQL part reverted). `delta` widens so that any amount `total_stock`
-- (INT UNSIGNED) can take fits in one row.
ALTER TABLE stock_ledger
    MODIFY delta BIGINT NOT NULL,
    ADD COLUMN state VARCHAR(16) NOT NULL DEFAULT 'done',
    ADD CONSTRAINT stock_ledger_state CHECK (state IN ('pending', 'done', 'undone')),
    ADD KEY stock_ledger_activity_state (activity_id, state);
