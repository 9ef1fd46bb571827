//! A batch in hand: the entries read, and their decoding into the reservations to persist.

use std::collections::HashMap;

use crate::reservation::{self, Entry, Reservation};

/// One entry in hand: its activity, stream, the entry and how often it was delivered.
pub(super) struct Held {
    pub(super) activity: u64,
    pub(super) stream: String,
    pub(super) entry: Entry,
    pub(super) deliveries: u64,
}

/// Why (part of) an entry cannot be persisted.
pub(super) struct Reject {
    /// The purchase's place within the entry; `None`: the entry as a whole is unreadable.
    pub(super) index: Option<u32>,
    pub(super) why: String,
}

/// A batch in hand, decoded: the reservations (purchases of the entries) to persist, and why
/// the others cannot be.
pub(super) struct Decoded {
    pub(super) reservations: Vec<Reservation>,
    /// Where each reservation's entry is in the batch, by the reservation's place.
    pub(super) entry_of: Vec<usize>,
    /// What of an entry cannot be persisted, by the entry's place in the batch.
    pub(super) rejected: HashMap<usize, Vec<Reject>>,
}

/// Decodes every entry of `held`; an entry that cannot be read as a whole, or a purchase of
/// it, is set aside with the reason instead of failing the batch.
pub(super) fn decode_batch(held: &[Held]) -> Decoded {
    let mut decoded = Decoded {
        reservations: Vec::with_capacity(held.len()),
        entry_of: Vec::with_capacity(held.len()),
        rejected: HashMap::new(),
    };
    for (i, h) in held.iter().enumerate() {
        match reservation::decode_all(h.activity, &h.entry) {
            Ok(all) => {
                for (index, one) in (0u32..).zip(all) {
                    match one {
                        Ok(r) => {
                            decoded.entry_of.push(i);
                            decoded.reservations.push(r);
                        }
                        Err(why) => decoded.rejected.entry(i).or_default().push(Reject {
                            index: Some(index),
                            why,
                        }),
                    }
                }
            }
            Err(why) => {
                decoded.rejected.insert(i, vec![Reject { index: None, why }]);
            }
        }
    }
    decoded
}

/// A batch read, with its decoding.
pub(super) struct Batch {
    pub(super) held: Vec<Held>,
    pub(super) decoded: Decoded,
}

impl Batch {
    pub(super) fn new(held: Vec<Held>) -> Batch {
        let decoded = decode_batch(&held);
        Batch { held, decoded }
    }
}
