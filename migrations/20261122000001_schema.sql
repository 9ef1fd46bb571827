-- The seckill schema. Written for both MySQL 8 and MariaDB 10.11: no JSON defaults,
-- no expression defaults, CHECK constraints (enforced by MySQL >= 8.0.16 and MariaDB >= 10.2).

CREATE TABLE activities (
    id         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    name       VARCHAR(128)    NOT NULL,
    status     VARCHAR(16)     NOT NULL DEFAULT 'draft',
    start_at   DATETIME(3)     NOT NULL,
    end_at     DATETIME(3)     NOT NULL,
    created_at DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id),
    CONSTRAINT activities_status CHECK (status IN ('draft', 'online', 'paused', 'ended')),
    CONSTRAINT activities_window CHECK (start_at < end_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE products (
    id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    activity_id    BIGINT UNSIGNED NOT NULL,
    name           VARCHAR(128)    NOT NULL,
    price          DECIMAL(12, 2)  NOT NULL,
    total_stock    INT UNSIGNED    NOT NULL,
    per_user_limit INT UNSIGNED    NOT NULL DEFAULT 1,
    max_per_order  INT UNSIGNED    NOT NULL DEFAULT 1,
    sold           INT UNSIGNED    NOT NULL DEFAULT 0,
    version        BIGINT UNSIGNED NOT NULL DEFAULT 0,
    created_at     DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at     DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id),
    KEY products_activity (activity_id),
    CONSTRAINT products_activity_fk FOREIGN KEY (activity_id) REFERENCES activities (id),
    CONSTRAINT products_price CHECK (price >= 0),
    CONSTRAINT products_limits CHECK (per_user_limit >= 1 AND max_per_order >= 1),
    CONSTRAINT products_sold CHECK (sold <= total_stock)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE orders (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    order_no    VARCHAR(48)     NOT NULL,
    activity_id BIGINT UNSIGNED NOT NULL,
    product_id  BIGINT UNSIGNED NOT NULL,
    user_id     VARCHAR(64)     NOT NULL,
    quantity    INT UNSIGNED    NOT NULL,
    unit_price  DECIMAL(12, 2)  NOT NULL,
    amount      DECIMAL(14, 2)  NOT NULL,
    status      VARCHAR(16)     NOT NULL DEFAULT 'pending',
    reserved_at DATETIME(3)     NOT NULL,
    created_at  DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    updated_at  DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id),
    UNIQUE KEY orders_order_no (order_no),
    KEY orders_user (user_id, activity_id),
    KEY orders_product (product_id, status),
    KEY orders_activity_status (activity_id, status, reserved_at),
    CONSTRAINT orders_status CHECK (status IN ('pending', 'paid', 'cancelled', 'expired')),
    CONSTRAINT orders_quantity CHECK (quantity >= 1)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE stock_ledger (
    id          BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
    activity_id BIGINT UNSIGNED NOT NULL,
    product_id  BIGINT UNSIGNED NOT NULL,
    op          VARCHAR(16)     NOT NULL,
    delta       INT             NOT NULL,
    reason      VARCHAR(255)    NOT NULL DEFAULT '',
    ref         VARCHAR(64)     NULL,
    created_at  DATETIME(3)     NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (id),
    KEY stock_ledger_product (product_id, created_at),
    KEY stock_ledger_ref (ref),
    CONSTRAINT stock_ledger_op CHECK (op IN ('preheat', 'reserve', 'release', 'adjust', 'sold_out'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;

CREATE TABLE blacklist (
    user_id    VARCHAR(64)  NOT NULL,
    reason     VARCHAR(255) NOT NULL DEFAULT '',
    created_at DATETIME(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    PRIMARY KEY (user_id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
