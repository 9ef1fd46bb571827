-- A scheduled preheat: `seckill scheduler` runs `hot` for a `draft` activity once its
-- `hot_at` has passed (src/ops/scheduler.rs). NULL: not scheduled (run `seckill hot` by hand).
-- Preheating after the start would leave the sale closed until then, so it is at or before it.
ALTER TABLE activities ADD COLUMN hot_at DATETIME(3) NULL AFTER end_at,
    ADD CONSTRAINT activities_hot_at CHECK (hot_at IS NULL OR hot_at <= start_at);
