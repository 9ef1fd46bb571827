//! The reservation stream of each activity (`P:{a:A}:orders`, see [`crate::keys`]): every purchase
//! Redis accepts is one entry there, written by `lua/reserve.lua` in the same step that deducts
//! the stock, until a consumer persists it into MySQL (see [`crate::persist`]) and acknowledges it.
//!
//! This module owns the stream: what an entry holds and its decoding ([`entry`]), the consumer
//! group and its backlog ([`group`]), reading, claiming and acknowledging entries, finding one by
//! order number and listing those not yet in MySQL ([`stream`]), and the dead-letter stream
//! beside it ([`dlq`]).

pub mod dlq;
pub mod entry;
pub mod group;
mod reply;
pub mod stream;

pub(crate) use reply::{items, pairs, text};

pub use entry::{decode, decode_all, decode_at, field, purchase_count, purchases, Entry, Reservation};
pub use group::{backlog, backlog_of, delivered, ensure_group, restore_group, unacked_from, Backlog, Delivered};
pub use stream::{cmp_ids, decode_entries, lookup, parse_id, read_all, read_from, unpersisted, ReadError};
