//! The Lua script registry: one script per file under `lua/`, embedded in the binary
//! and run with EVALSHA (loaded on first use, and again after a Redis restart).

use std::sync::LazyLock;

use redis::Script;

/// `lua/preheat.lua`: load an activity and its products unless the activity is online.
pub static PREHEAT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/preheat.lua")));

/// `lua/set_status.lua`: change a preheated activity's status and window.
pub static SET_STATUS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/set_status.lua")));

/// Every script, for `hot` to load ahead of the sale.
pub fn all() -> Vec<&'static Script> {
    vec![&PREHEAT, &SET_STATUS, &RESERVE]
}

/// `lua/reserve.lua`: decide a batch of purchases and queue the reservations.
pub static RESERVE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/reserve.lua")));

/// `lua/issue_token.lua`: register purchase tokens, one per user and activity.
pub static ISSUE_TOKEN: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/issue_token.lua")));
