-- What MySQL expects Redis to hold of each preheated activity, so that a Redis that lost
-- state (restarted empty, restored from an older snapshot, a lagging replica promoted) is
-- noticed before it sells units MySQL already counts as sold (src/lost_state.rs).
--   epoch        stamped by `hot` into MySQL, then into the Redis activity hash
--   persist_seq  raised in Redis before each persisted batch, recorded here after its commit:
--                Redis's value is never below this one unless Redis lost writes
CREATE TABLE redis_watermarks (
    activity_id BIGINT UNSIGNED NOT NULL,
    epoch       VARCHAR(32)     NOT NULL,
    persist_seq BIGINT UNSIGNED NOT NULL DEFAULT 0,
    stamped_at  DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (activity_id),
    CONSTRAINT redis_watermarks_activity_fk FOREIGN KEY (activity_id) REFERENCES activities (id) ON DELETE CASCADE
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
