//! API-level tests against a real Redis and a real MariaDB.

mod pipeline;
mod pipeline_support;
