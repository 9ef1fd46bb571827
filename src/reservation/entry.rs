//! What one entry of a reservation stream holds: the fields `lua/reserve.lua` writes with
//! XADD, and their decoding into [`Reservation`]s.
//!
//! One entry holds every purchase one script call accepted, in the order they were decided:
//! `activity` and `reserved_ms` once, then per run of consecutive purchases of one product
//! `product`, `price`, `buyers` (the user ids, space-separated: ids hold no whitespace) and
//! `quantities` (as many, same order). A run of numbered buyers whose totals went to the
//! totals array holds `buyer_numbers` instead of `buyers`: each id with a `#` in front, as the
//! script got it (see `lua/reserve.lua`'s ARGV). Entries written by earlier versions still read, since
//! a sale can span an upgrade: `product`, `user`, `quantity`, `price` once per purchase (the
//! k-th purchase is the k-th occurrence of each), and before that one purchase per entry with
//! the same six fields, which reads as an entry of one purchase under its old order number.
//! A stock bucket's stream (see [`crate::buckets`]) gets entries of the same format from
//! `lua/bucket_buy.lua` and `lua/bucket_reserve.lua`, one per call for the purchases it
//! filled (earlier versions wrote the per-purchase format there).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::keys;

/// The field names of a reservation entry, exactly as `lua/reserve.lua` writes them.
pub mod field {
    /// The fields repeated once per purchase, in the order they are written.
    pub const PER_PURCHASE: [&str; 4] = [PRODUCT, USER, QUANTITY, PRICE];
    /// The activity id; must be the activity whose stream holds the entry.
    pub const ACTIVITY: &str = "activity";
    /// The product id.
    pub const PRODUCT: &str = "product";
    /// The buyer's user id.
    pub const USER: &str = "user";
    /// Units reserved, at least 1.
    pub const QUANTITY: &str = "quantity";
    /// Unit price at reservation time, a decimal string.
    pub const PRICE: &str = "price";
    /// Redis's clock when the units were reserved, ms since the epoch.
    pub const RESERVED_MS: &str = "reserved_ms";
    /// A run's buyers, space-separated (the current format).
    pub const BUYERS: &str = "buyers";
    /// A run's buyers, space-separated, each user id with a `#` in front (the current format,
    /// for a batch of numbered buyers whose totals are in the totals array).
    pub const BUYER_NUMBERS: &str = "buyer_numbers";
    /// A run's quantities, space-separated, one per buyer (the current format).
    pub const QUANTITIES: &str = "quantities";
}

/// One stream entry as read: its id and its field/value pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Stream entry id (`ms-seq`).
    pub id: String,
    /// Fields in stream order.
    pub fields: Vec<(String, String)>,
}

impl Entry {
    /// The value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// One reservation decoded from its stream entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Reservation {
    /// `<activity>-<entry id>`, with `-<index>` after it past the first purchase
    /// ([`keys::purchase_order_no`]).
    pub order_no: String,
    /// The stream entry id.
    pub entry_id: String,
    /// The purchase's place within its entry, from 0.
    pub index: u32,
    /// The activity.
    pub activity_id: u64,
    /// The product.
    pub product_id: u64,
    /// The buyer.
    pub user_id: String,
    /// Units.
    pub quantity: u32,
    /// Unit price at reservation time.
    pub price: Decimal,
    /// When Redis reserved it.
    pub reserved_at: DateTime<Utc>,
}

/// Splits an entry into one entry per purchase, in order, each with the entry's id and the
/// six fields of a one-purchase entry. The error says why the entry as a whole is unreadable
/// (an entry-wide field missing or repeated, or the per-purchase fields not in whole groups).
pub fn purchases(entry: &Entry) -> std::result::Result<Vec<Entry>, String> {
    if is_runs(entry) {
        return runs(entry);
    }
    let c = columns(entry)?;
    Ok((0..c.count())
        .map(|k| {
            let mut fields = vec![(field::ACTIVITY.to_string(), c.activity.to_string())];
            fields.extend(
                field::PER_PURCHASE
                    .iter()
                    .zip(&c.per_purchase)
                    .map(|(name, column)| (name.to_string(), column[k].to_string())),
            );
            fields.push((field::RESERVED_MS.to_string(), c.reserved_ms.to_string()));
            Entry {
                id: entry.id.clone(),
                fields,
            }
        })
        .collect())
}

/// An entry's fields by name: the entry-wide ones, and each per-purchase field's values in
/// order (all of the same length, at least 1).
struct Columns<'a> {
    activity: &'a str,
    reserved_ms: &'a str,
    /// In the order of [`field::PER_PURCHASE`].
    per_purchase: [Vec<&'a str>; 4],
}

impl Columns<'_> {
    fn count(&self) -> usize {
        self.per_purchase[0].len()
    }
}

/// The entry's fields as [`Columns`]; the error says why the entry as a whole is unreadable.
fn columns(entry: &Entry) -> std::result::Result<Columns<'_>, String> {
    let mut activity = Vec::with_capacity(1);
    let mut reserved_ms = Vec::with_capacity(1);
    let mut per_purchase: [Vec<&str>; 4] = Default::default();
    for (k, v) in &entry.fields {
        let column = match k.as_str() {
            field::ACTIVITY => &mut activity,
            field::RESERVED_MS => &mut reserved_ms,
            name => match field::PER_PURCHASE.iter().position(|f| *f == name) {
                Some(i) => &mut per_purchase[i],
                None => continue,
            },
        };
        column.push(v.as_str());
    }
    let once = |name: &str, values: &[&'_ str]| -> std::result::Result<(), String> {
        match values.len() {
            1 => Ok(()),
            0 => Err(format!("missing field {name:?}")),
            _ => Err(format!("field {name:?} repeated")),
        }
    };
    once(field::ACTIVITY, &activity)?;
    once(field::RESERVED_MS, &reserved_ms)?;
    let count = per_purchase[0].len();
    if let Some((name, c)) = field::PER_PURCHASE
        .iter()
        .zip(&per_purchase)
        .find(|(_, c)| c.is_empty())
    {
        return Err(format!("missing field {name:?} ({} values)", c.len()));
    }
    if per_purchase.iter().any(|c| c.len() != count) {
        let counts: Vec<String> = field::PER_PURCHASE
            .iter()
            .zip(&per_purchase)
            .map(|(name, c)| format!("{name} x{}", c.len()))
            .collect();
        return Err(format!("per-purchase fields do not pair up: {}", counts.join(", ")));
    }
    Ok(Columns {
        activity: activity[0],
        reserved_ms: reserved_ms[0],
        per_purchase,
    })
}

/// How many purchases an entry holds: as [`purchases`] would split it, without the copies
/// for the per-purchase format; 1 for an entry unreadable as a whole.
pub fn purchase_count(entry: &Entry) -> usize {
    if is_runs(entry) {
        return runs(entry).map_or(1, |all| all.len());
    }
    columns(entry).map_or(1, |c| c.count())
}

/// Whether `entry` is of the current format (runs of purchases).
fn is_runs(entry: &Entry) -> bool {
    entry
        .fields
        .iter()
        .any(|(k, _)| k == field::BUYERS || k == field::BUYER_NUMBERS)
}

/// [`purchases`] of an entry of the current format: runs of `product`, `price`, `buyers` (or
/// `buyer_numbers`), `quantities` after the entry-wide fields.
fn runs(entry: &Entry) -> std::result::Result<Vec<Entry>, String> {
    let once = |name: &str| -> std::result::Result<&str, String> {
        let mut values = entry.fields.iter().filter(|(k, _)| k == name);
        match (values.next(), values.next()) {
            (Some((_, v)), None) => Ok(v.as_str()),
            (None, _) => Err(format!("missing field {name:?}")),
            (Some(_), Some(_)) => Err(format!("field {name:?} repeated")),
        }
    };
    let (activity, reserved_ms) = (once(field::ACTIVITY)?, once(field::RESERVED_MS)?);
    let one = |product: &str, user: &str, quantity: &str, price: &str| Entry {
        id: entry.id.clone(),
        fields: [
            (field::ACTIVITY, activity),
            (field::PRODUCT, product),
            (field::USER, user),
            (field::QUANTITY, quantity),
            (field::PRICE, price),
            (field::RESERVED_MS, reserved_ms),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    };
    let mut out = Vec::new();
    let mut fields = entry
        .fields
        .iter()
        .filter(|(k, _)| k != field::ACTIVITY && k != field::RESERVED_MS);
    while let Some(first) = fields.next() {
        let mut next = || fields.next().ok_or("a run is cut short");
        let run = [first, next()?, next()?, next()?];
        let names: Vec<&str> = run.iter().map(|(k, _)| k.as_str()).collect();
        let numbered = match names[..] {
            [field::PRODUCT, field::PRICE, field::BUYERS, field::QUANTITIES] => false,
            [field::PRODUCT, field::PRICE, field::BUYER_NUMBERS, field::QUANTITIES] => true,
            _ => return Err(format!("a run's fields are {names:?}")),
        };
        let [(_, product), (_, price), (_, buyers), (_, quantities)] = run;
        let buyers: Vec<&str> = if numbered {
            buyers
                .split(' ')
                .map(|b| {
                    b.strip_prefix('#')
                        .ok_or_else(|| format!("a buyer number {b:?} without its '#'"))
                })
                .collect::<std::result::Result<_, _>>()?
        } else {
            buyers.split(' ').collect()
        };
        let quantities: Vec<&str> = quantities.split(' ').collect();
        if buyers.len() != quantities.len() {
            return Err(format!(
                "a run has {} buyers and {} quantities",
                buyers.len(),
                quantities.len()
            ));
        }
        out.extend(
            buyers
                .iter()
                .zip(&quantities)
                .map(|(user, quantity)| one(product, user, quantity, price)),
        );
    }
    if out.is_empty() {
        return Err("no purchases".into());
    }
    Ok(out)
}

/// Every purchase of an entry of the stream of activity `activity`, decoded, in order (the
/// k-th has index k); a purchase that cannot be decoded is the error saying why, and does not
/// stop the others. The outer error: the entry as a whole is unreadable (see [`purchases`]).
pub fn decode_all(
    activity: u64,
    entry: &Entry,
) -> std::result::Result<Vec<std::result::Result<Reservation, String>>, String> {
    if is_runs(entry) {
        return Ok(runs(entry)?
            .iter()
            .zip(0u32..)
            .map(|(one, index)| decode_at(activity, one, index))
            .collect());
    }
    let c = columns(entry)?;
    let [product, user, quantity, price] = &c.per_purchase;
    Ok((0..c.count())
        .map(|k| {
            let one = Values {
                activity: Some(c.activity),
                product: Some(product[k]),
                user: Some(user[k]),
                quantity: Some(quantity[k]),
                price: Some(price[k]),
                reserved_ms: Some(c.reserved_ms),
            };
            decode_values(activity, &entry.id, k as u32, one)
        })
        .collect())
}

/// Decodes an entry of one purchase (of any format, or one [`purchases`] made) of the stream
/// of activity `activity`; the error says what is wrong, or that the entry holds several.
pub fn decode(activity: u64, entry: &Entry) -> std::result::Result<Reservation, String> {
    if !is_runs(entry) {
        return decode_at(activity, entry, 0);
    }
    match purchases(entry)?.as_slice() {
        [one] => decode_at(activity, one, 0),
        all => Err(format!("{} purchases in one entry", all.len())),
    }
}

/// [`decode`] of the purchase that was at `index` of its entry (it names the order).
pub fn decode_at(activity: u64, entry: &Entry, index: u32) -> std::result::Result<Reservation, String> {
    let one = Values {
        activity: entry.get(field::ACTIVITY),
        product: entry.get(field::PRODUCT),
        user: entry.get(field::USER),
        quantity: entry.get(field::QUANTITY),
        price: entry.get(field::PRICE),
        reserved_ms: entry.get(field::RESERVED_MS),
    };
    decode_values(activity, &entry.id, index, one)
}

/// The six values of one purchase, `None` where its entry lacks the field.
struct Values<'a> {
    activity: Option<&'a str>,
    product: Option<&'a str>,
    user: Option<&'a str>,
    quantity: Option<&'a str>,
    price: Option<&'a str>,
    reserved_ms: Option<&'a str>,
}

fn decode_values(activity: u64, entry_id: &str, index: u32, v: Values<'_>) -> std::result::Result<Reservation, String> {
    let value = |name: &str, v: Option<&str>| v.ok_or_else(|| format!("missing field {name:?}")).map(str::to_string);
    let number = |name: &str, v: Option<&str>| -> std::result::Result<u64, String> {
        v.ok_or_else(|| format!("missing field {name:?}"))?
            .parse()
            .map_err(|_| format!("field {name:?} is not a whole number"))
    };
    if number(field::ACTIVITY, v.activity)? != activity {
        return Err(format!(
            "field \"activity\" does not match stream of activity {activity}"
        ));
    }
    let quantity = number(field::QUANTITY, v.quantity)?;
    let quantity = u32::try_from(quantity)
        .ok()
        .filter(|q| *q >= 1)
        .ok_or("field \"quantity\" out of range")?;
    let price: Decimal = v
        .price
        .ok_or_else(|| format!("missing field {:?}", field::PRICE))?
        .parse()
        .map_err(|_| "field \"price\" is not a decimal".to_string())?;
    if price.is_sign_negative() {
        return Err("field \"price\" is negative".into());
    }
    let user_id = value(field::USER, v.user)?;
    crate::user_id::check_storable(&user_id).map_err(|e| format!("field \"user\": {e}"))?;
    let ms =
        i64::try_from(number(field::RESERVED_MS, v.reserved_ms)?).map_err(|_| "field \"reserved_ms\" out of range")?;
    let reserved_at = DateTime::from_timestamp_millis(ms).ok_or("field \"reserved_ms\" out of range")?;
    Ok(Reservation {
        order_no: keys::purchase_order_no(activity, entry_id, index),
        entry_id: entry_id.to_string(),
        index,
        activity_id: activity,
        product_id: number(field::PRODUCT, v.product)?,
        user_id,
        quantity,
        price,
        reserved_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, &str)]) -> Entry {
        Entry {
            id: "1700000000000-4".into(),
            fields: fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn a_batched_entry_is_one_reservation_per_purchase_and_a_bad_one_spoils_only_itself() {
        let e = entry(&[
            ("activity", "7"),
            ("reserved_ms", "1700000000000"),
            ("product", "1"),
            ("user", "alice"),
            ("quantity", "2"),
            ("price", "9.50"),
            ("product", "3"),
            ("user", "bob"),
            ("quantity", "0"),
            ("price", "1"),
            ("product", "3"),
            ("user", "carol"),
            ("quantity", "1"),
            ("price", "1"),
        ]);
        let all = decode_all(7, &e).unwrap();
        assert_eq!(all.len(), 3);
        let first = all[0].as_ref().unwrap();
        assert_eq!(
            (first.order_no.as_str(), first.user_id.as_str(), first.quantity),
            ("7-1700000000000-4", "alice", 2)
        );
        assert!(all[1].as_ref().unwrap_err().contains("quantity"));
        let third = all[2].as_ref().unwrap();
        assert_eq!(
            (third.order_no.as_str(), third.index, third.product_id),
            ("7-1700000000000-4-2", 2, 3)
        );
    }

    #[test]
    fn an_entry_of_runs_is_one_reservation_per_buyer_in_order() {
        let e = entry(&[
            ("activity", "7"),
            ("reserved_ms", "1700000000000"),
            ("product", "1"),
            ("price", "9.50"),
            ("buyers", "alice bob"),
            ("quantities", "2 1"),
            ("product", "3"),
            ("price", "1"),
            ("buyers", "carol"),
            ("quantities", "1"),
        ]);
        let all: Vec<Reservation> = decode_all(7, &e).unwrap().into_iter().map(Result::unwrap).collect();
        let summary: Vec<(&str, u64, &str, u32, String)> = all
            .iter()
            .map(|r| {
                (
                    r.order_no.as_str(),
                    r.product_id,
                    r.user_id.as_str(),
                    r.quantity,
                    r.price.to_string(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("7-1700000000000-4", 1, "alice", 2, "9.50".to_string()),
                ("7-1700000000000-4-1", 1, "bob", 1, "9.50".to_string()),
                ("7-1700000000000-4-2", 3, "carol", 1, "1".to_string()),
            ]
        );
        assert_eq!(all[2].reserved_at.timestamp_millis(), 1_700_000_000_000);
        let short = entry(&[
            ("activity", "7"),
            ("reserved_ms", "1"),
            ("product", "1"),
            ("price", "1"),
            ("buyers", "alice bob"),
            ("quantities", "1"),
        ]);
        assert!(decode_all(7, &short).unwrap_err().contains("2 buyers and 1 quantities"));
        let cut = entry(&[
            ("activity", "7"),
            ("reserved_ms", "1"),
            ("product", "1"),
            ("buyers", "a"),
        ]);
        assert!(decode_all(7, &cut).is_err());
    }

    #[test]
    fn a_run_of_buyer_numbers_reads_each_id_without_its_hash_sign() {
        let numbered = |buyers: &str| {
            entry(&[
                ("activity", "7"),
                ("reserved_ms", "1700000000000"),
                ("product", "1"),
                ("price", "2"),
                ("buyer_numbers", buyers),
                ("quantities", "1 1"),
            ])
        };
        let e = numbered("#12 #3");
        let users: Vec<String> = decode_all(7, &e)
            .unwrap()
            .into_iter()
            .map(|r| r.unwrap().user_id)
            .collect();
        assert_eq!(users, ["12", "3"]);
        assert_eq!(purchase_count(&e), 2);
        let split: Vec<String> = purchases(&e)
            .unwrap()
            .iter()
            .map(|one| one.get(field::USER).unwrap().to_string())
            .collect();
        assert_eq!(split, ["12", "3"]);
        let mut alone = numbered("#8");
        alone.fields[5].1 = "1".into();
        assert_eq!(decode(7, &alone).unwrap().user_id, "8");
        let err = decode_all(7, &numbered("#12 3")).unwrap_err();
        assert!(err.contains("without its '#'"), "{err}");
        // A user literally named "#5" is a plain buyer of a `buyers` run, kept as named.
        let named = entry(&[
            ("activity", "7"),
            ("reserved_ms", "1"),
            ("product", "1"),
            ("price", "2"),
            ("buyers", "#5"),
            ("quantities", "1"),
        ]);
        assert_eq!(decode_all(7, &named).unwrap()[0].as_ref().unwrap().user_id, "#5");
    }

    #[test]
    fn an_entry_of_the_old_format_reads_as_one_purchase_under_its_old_number() {
        let e = entry(&[
            ("activity", "7"),
            ("product", "1"),
            ("user", "alice"),
            ("quantity", "1"),
            ("price", "2"),
            ("reserved_ms", "1700000000000"),
        ]);
        let all = decode_all(7, &e).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].as_ref().unwrap().order_no, "7-1700000000000-4");
        assert_eq!(all[0].as_ref().unwrap(), &decode(7, &e).unwrap());
    }

    #[test]
    fn an_entry_whose_groups_do_not_pair_up_is_unreadable_as_a_whole() {
        let e = entry(&[
            ("activity", "7"),
            ("reserved_ms", "1"),
            ("product", "1"),
            ("user", "alice"),
            ("quantity", "1"),
            ("price", "2"),
            ("product", "1"),
        ]);
        assert!(decode_all(7, &e).unwrap_err().contains("pair up"));
        assert!(decode_all(7, &entry(&[("activity", "7")]))
            .unwrap_err()
            .contains("reserved_ms"));
        assert!(decode_all(7, &entry(&[])).is_err());
    }
}
