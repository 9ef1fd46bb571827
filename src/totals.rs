//! Where a buyer's units of a product without stock buckets are kept in Redis, the same rule
//! as `lua/lib/totals.lua` (which the scripts that read and write them share).
//!
//! A buyer whose user id is a whole number (digits only, no leading zero) below the product's
//! `ids_below` keeps the total in the product's totals array ([`crate::keys::Keys::totals`]),
//! a string holding a `u16` per id: a batch of purchases raises all its buyers' totals with one
//! `BITFIELD` and takes back only the refused ones, where a hash costs a lookup and a write of a
//! field per buyer among possibly millions (see scripts/bench/README.md). Every other buyer's
//! total is a field of the bought hash. `hot` stamps `ids_below` on each product from
//! `redis.numeric_user_ids_below` (0 on a product with buckets, whose totals live in them, and
//! on one whose per-buyer limit is above [`TOTAL_MAX`]), so every process reads the one value
//! its product was preheated with.

/// The product hash field holding the bound (missing or 0: every total in the bought hash).
pub const IDS_BELOW_FIELD: &str = "ids_below";
/// Largest `redis.numeric_user_ids_below`: the array of a product then takes at most 32 MiB.
pub const MAX_IDS_BELOW: u64 = 1 << 24;
/// The BITFIELD type of one total.
pub const TOTAL_TYPE: &str = "u16";
/// Largest total the array holds; a purchase that would pass it is refused as over the limit.
pub const TOTAL_MAX: u64 = u16::MAX as u64;

/// The index of `user`'s total in the array of a product stamped with `ids_below`, or `None`
/// when it lives in the bought hash.
pub fn array_index(user: &str, ids_below: u64) -> Option<u64> {
    let bytes = user.as_bytes();
    if ids_below == 0
        || bytes.is_empty()
        || bytes.len() > 8
        || bytes[0] == b'0'
        || !bytes.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let id: u64 = user.parse().ok()?;
    (id < ids_below).then_some(id)
}

/// `user`'s BITFIELD offset (`#<index>`) in the array of a product stamped with `ids_below`.
pub fn array_offset(user: &str, ids_below: u64) -> Option<String> {
    array_index(user, ids_below).map(|id| format!("#{id}"))
}

/// Every non-zero total in a product's array (the string as `GET` returns it), as (user id,
/// units).
pub fn decode(array: &[u8]) -> impl Iterator<Item = (String, i64)> + '_ {
    array.chunks_exact(2).enumerate().filter_map(|(id, pair)| {
        let units = u16::from_be_bytes([pair[0], pair[1]]);
        (units > 0).then(|| (id.to_string(), i64::from(units)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_canonical_numbers_below_the_bound_live_in_the_array() {
        assert_eq!(array_index("1", 10), Some(1));
        assert_eq!(array_index("9", 10), Some(9));
        assert_eq!(array_index("10", 10), None, "the bound itself is outside");
        assert_eq!(array_index("7", 0), None, "0: no array");
        for user in [
            "0",
            "07",
            "-1",
            "+1",
            "1.0",
            "1e3",
            " 1",
            "1 ",
            "alice",
            "",
            "123456789",
        ] {
            assert_eq!(array_index(user, MAX_IDS_BELOW), None, "{user:?}");
        }
        assert_eq!(array_index("16777215", MAX_IDS_BELOW), Some(16_777_215));
        assert_eq!(array_offset("42", 100).as_deref(), Some("#42"));
    }

    #[test]
    fn decode_reads_big_endian_u16_per_id_and_skips_zeros() {
        let mut array = vec![0u8; 8];
        array[2..4].copy_from_slice(&3u16.to_be_bytes());
        array[6..8].copy_from_slice(&300u16.to_be_bytes());
        let got: Vec<(String, i64)> = decode(&array).collect();
        assert_eq!(got, vec![("1".to_string(), 3), ("3".to_string(), 300)]);
        assert_eq!(decode(&[0, 5, 9]).count(), 1, "a trailing odd byte is not a total");
    }
}
