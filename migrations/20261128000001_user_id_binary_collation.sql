-- User ids compare byte for byte, as Redis compares them (blacklist sets, token and
-- per-user keys). With the default case-insensitive collation `blacklist remove mallory`
-- deleted the row of `Mallory` while the sale kept refusing Mallory, and `hot` summed the
-- holdings of `Bob` and `bob` as one user's.
--
-- The id rule (src/user_id.rs) counts bytes of UTF-8, at most 64; the columns check the
-- same, so a row can never hold an id that the entry points would refuse.
ALTER TABLE orders
    MODIFY user_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    ADD CONSTRAINT orders_user_id_bytes CHECK (OCTET_LENGTH(user_id) BETWEEN 1 AND 64);

ALTER TABLE blacklist
    MODIFY user_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    ADD CONSTRAINT blacklist_user_id_bytes CHECK (OCTET_LENGTH(user_id) BETWEEN 1 AND 64);
