//! The operations behind the subcommands. Each takes what it needs (database, Redis,
//! options) and returns data; printing is the command's job.

pub mod blacklist;
pub mod catalog;
pub mod degrade;
pub mod flush;
pub mod hot;
pub mod lifecycle;
pub mod scheduler;
pub mod status;
pub mod token;

pub use flush::flush;
pub use hot::hot;
pub use lifecycle::{start, stop};
pub use status::status;
pub mod order;
pub mod reconcile;
pub mod stock;
