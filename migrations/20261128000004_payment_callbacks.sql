-- The payment provider's callback (POST /api/v1/payments/callback, src/ops/order.rs `settle`):
--   orders.transaction_id  the provider's id of the payment that paid the order; unique, so one
--                          payment never pays two orders (NULL for orders paid by hand)
--   payment_events         every authenticated callback and what it did, including the refused
--                          ones (wrong amount, order expired or cancelled) the provider must refund
ALTER TABLE orders ADD COLUMN transaction_id VARCHAR(128) NULL AFTER status,
    ADD UNIQUE KEY orders_transaction_id (transaction_id);

CREATE TABLE payment_events (
    id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    order_no       VARCHAR(48)     NOT NULL,
    transaction_id VARCHAR(128)    NOT NULL,
    amount         DECIMAL(14, 2)  NOT NULL,
    outcome        VARCHAR(24)     NOT NULL,
    received_at    DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id),
    KEY payment_events_order (order_no),
    KEY payment_events_transaction (transaction_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
