//! Integration tests of `seckill` against a real Redis and MariaDB (see `scripts/setup.sh`).
//!
//! One test binary (as in zero-to-production's `tests/api/`), one module per area. Every test
//! builds its own [`helpers::TestApp`] (`spawn_app()` or `TestApp::builder()`): a fresh database
//! and Redis key prefix, so tests run in parallel. Add a module here for each new area.

mod bench;
mod browser;
mod bucket_batch;
mod bucket_moves;
mod bucket_ops;
mod bucket_quota;
mod buckets;
mod buy;
mod catalog;
mod chromium;
mod client_addr;
mod cluster;
mod connectivity;
mod consumer_handover;
mod durability;
mod exit_codes;
mod flush;
mod flush_lost_state;
mod funnel_limits;
mod group_commit;
mod hardening_http;
mod helpers;
mod hot;
mod http_threads;
mod identity;
mod inherited_env;
mod input;
mod lifecycle;
mod locks;
mod lost_state;
mod lost_state_hot;
mod metrics;
mod migrate;
mod nginx;
mod numeric_totals;
mod ops_paths;
mod page;
mod payment_window;
mod payments;
mod pipeline;
mod progress;
mod reconcile_all;
mod reconcile_live;
mod redis_servers;
mod reservation;
mod router;
mod sale_controls;
mod scheduled_hot;
mod scheduler;
mod sentinel;
mod stock_live;
mod validation;
