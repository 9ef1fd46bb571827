//! `seckill`: a flash-sale (秒杀) toolkit.
//!
//! Redis decides every purchase atomically (one Lua script deducts stock and queues the
//! reservation in a stream in the same step); consumers persist reservations into MySQL
//! idempotently; reconcile checks the two against each other. This crate is the shared core;
//! the `seckill` binary (under `commands/`) only parses arguments and calls [`ops`].

pub mod bench;
pub mod buckets;
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
pub mod ticks;
pub mod token;
pub mod totals;
pub mod user_id;

pub use config::Config;
pub use db::Db;
pub use error::{Error, Result};
pub use redis_client::RedisClient;

#[cfg(test)]
mod layout {
    use std::path::Path;

    /// README's Layout names every module of the library (`config`, `ops/`) and every file of
    /// the binary (`main.rs`), so none is added without saying what it holds.
    #[test]
    fn the_readme_layout_names_every_module() {
        let readme = include_str!("../README.md");
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for (dir, keep_extension) in [("src/", false), ("commands/", true)] {
            let row = readme
                .lines()
                .find(|line| line.starts_with(&format!("| `{dir}` |")))
                .unwrap_or_else(|| panic!("README's Layout has no `{dir}` row"));
            for entry in std::fs::read_dir(root.join(dir)).unwrap() {
                let entry = entry.unwrap();
                let file = entry.file_name().into_string().unwrap();
                let named = if entry.file_type().unwrap().is_dir() {
                    format!("`{file}/`")
                } else if file == "lib.rs" || !file.ends_with(".rs") {
                    continue;
                } else if keep_extension {
                    format!("`{file}`")
                } else {
                    format!("`{}`", file.trim_end_matches(".rs"))
                };
                assert!(row.contains(&named), "README's Layout row {dir} does not name {named}");
            }
        }
    }
}
