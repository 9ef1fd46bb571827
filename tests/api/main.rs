//! HTTP API integration tests: real Redis, real MariaDB, real HTTP.

mod buy;
mod buy_support;
