-- Stock sharding of one hot product: `hot` splits its remaining stock over `shards` buckets,
-- each in its own Redis Cluster slot (README "Stock sharding"). 1: one counter, as before.
ALTER TABLE products ADD COLUMN shards SMALLINT UNSIGNED NOT NULL DEFAULT 1 AFTER max_per_order,
    ADD CONSTRAINT products_shards CHECK (shards BETWEEN 1 AND 1024);
