//! What one entry of a reservation stream holds: the fields `lua/reserve.lua` writes with
//! XADD, and their decoding into a [`Reservation`].

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::keys;

/// The field names of a reservation entry, exactly as `lua/reserve.lua` writes them.
pub mod field {
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
    /// `<activity>-<entry id>`.
    pub order_no: String,
    /// The stream entry id.
    pub entry_id: String,
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

/// Decodes an entry of the stream of activity `activity`; the error says what is wrong with it.
pub fn decode(activity: u64, entry: &Entry) -> std::result::Result<Reservation, String> {
    let value = |name: &str| entry.get(name).ok_or_else(|| format!("missing field {name:?}"));
    let number = |name: &str| -> std::result::Result<u64, String> {
        value(name)?
            .parse()
            .map_err(|_| format!("field {name:?} is not a whole number"))
    };
    if number(field::ACTIVITY)? != activity {
        return Err(format!(
            "field \"activity\" does not match stream of activity {activity}"
        ));
    }
    let quantity = number(field::QUANTITY)?;
    let quantity = u32::try_from(quantity)
        .ok()
        .filter(|q| *q >= 1)
        .ok_or("field \"quantity\" out of range")?;
    let price: Decimal = value(field::PRICE)?
        .parse()
        .map_err(|_| "field \"price\" is not a decimal".to_string())?;
    if price.is_sign_negative() {
        return Err("field \"price\" is negative".into());
    }
    let user_id = value(field::USER)?.to_string();
    crate::user_id::check_storable(&user_id).map_err(|e| format!("field \"user\": {e}"))?;
    let ms = i64::try_from(number(field::RESERVED_MS)?).map_err(|_| "field \"reserved_ms\" out of range")?;
    let reserved_at = DateTime::from_timestamp_millis(ms).ok_or("field \"reserved_ms\" out of range")?;
    Ok(Reservation {
        order_no: keys::order_no(activity, &entry.id),
        entry_id: entry.id.clone(),
        activity_id: activity,
        product_id: number(field::PRODUCT)?,
        user_id,
        quantity,
        price,
        reserved_at,
    })
}
