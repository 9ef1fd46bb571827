//! `seckill`: a flash-sale (秒杀) toolkit.
//!
//! Redis decides every purchase atomically (one Lua script deducts stock and queues the
//! reservation in a stream in the same step); consumers persist reservations into MySQL
//! idempotently; reconcile checks the two against each other. This crate is the shared core;
//! the `seckill` binary (under `commands/`) only parses arguments and calls [`ops`].

pub mod bench;
pub mod buy;
pub mod config;
pub mod consumer;
pub mod db;
pub mod doctor;
pub mod durability;
pub mod error;
pub mod keys;
pub mod lost_state;
pub mod metrics;
pub mod model;
pub mod ops;
pub mod persist;
pub mod progress;
pub mod redis_client;
pub mod reservation;
pub mod scripts;
pub mod server;
pub mod shutdown;
pub mod token;
pub mod user_id;

pub use config::Config;
pub use db::Db;
pub use error::{Error, Result};
pub use redis_client::RedisClient;
