//! Rows of the MySQL tables and the states they move through.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use sqlx::FromRow;

use crate::error::Error;

/// The state of an activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivityStatus {
    /// Being set up; not on sale.
    Draft,
    /// On sale (within its window).
    Online,
    /// Sale paused by an operator; `start` resumes it.
    Paused,
    /// Over for good.
    Ended,
}

impl ActivityStatus {
    /// The name stored in MySQL and Redis.
    pub fn as_str(self) -> &'static str {
        match self {
            ActivityStatus::Draft => "draft",
            ActivityStatus::Online => "online",
            ActivityStatus::Paused => "paused",
            ActivityStatus::Ended => "ended",
        }
    }
}

impl fmt::Display for ActivityStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ActivityStatus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "draft" => ActivityStatus::Draft,
            "online" => ActivityStatus::Online,
            "paused" => ActivityStatus::Paused,
            "ended" => ActivityStatus::Ended,
            other => return Err(Error::Internal(format!("unknown activity status {other:?}"))),
        })
    }
}

/// The state of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    /// Persisted, waiting for payment; its units are held.
    Pending,
    /// Paid: its units are sold for good.
    Paid,
    /// Cancelled: its units went back on sale.
    Cancelled,
    /// Not paid in time: its units went back on sale.
    Expired,
}

impl OrderStatus {
    /// The name stored in MySQL.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Pending => "pending",
            OrderStatus::Paid => "paid",
            OrderStatus::Cancelled => "cancelled",
            OrderStatus::Expired => "expired",
        }
    }
}

impl fmt::Display for OrderStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OrderStatus {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s {
            "pending" => OrderStatus::Pending,
            "paid" => OrderStatus::Paid,
            "cancelled" => OrderStatus::Cancelled,
            "expired" => OrderStatus::Expired,
            other => {
                return Err(Error::invalid(format!(
                    "unknown order status {other:?} (pending, paid, cancelled, expired)"
                )))
            }
        })
    }
}

/// Reads and writes a status as the VARCHAR column holds it (sqlx's derived `Type` would
/// expect a MySQL ENUM column). A name that is none of the variants fails the read: a
/// status this build does not know is never taken for another.
macro_rules! status_column {
    ($status:ty) => {
        impl sqlx::Type<sqlx::MySql> for $status {
            fn type_info() -> sqlx::mysql::MySqlTypeInfo {
                <str as sqlx::Type<sqlx::MySql>>::type_info()
            }

            fn compatible(ty: &sqlx::mysql::MySqlTypeInfo) -> bool {
                <str as sqlx::Type<sqlx::MySql>>::compatible(ty)
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::MySql> for $status {
            fn decode(value: sqlx::mysql::MySqlValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
                let name = <&str as sqlx::Decode<sqlx::MySql>>::decode(value)?;
                Ok(name.parse()?)
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::MySql> for $status {
            fn encode_by_ref(&self, buf: &mut Vec<u8>) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::MySql>>::encode_by_ref(&self.as_str(), buf)
            }
        }
    };
}

status_column!(ActivityStatus);
status_column!(OrderStatus);

/// A row of `activities`.
#[derive(Debug, Clone, FromRow, Serialize, PartialEq)]
pub struct Activity {
    /// Primary key.
    pub id: u64,
    /// Shown to operators.
    pub name: String,
    /// Its state; a name MySQL holds that is none of these fails the read.
    pub status: ActivityStatus,
    /// When buying opens.
    pub start_at: DateTime<Utc>,
    /// When buying closes.
    pub end_at: DateTime<Utc>,
    /// When `seckill scheduler` preheats it (`hot`); `None`: not scheduled.
    pub hot_at: Option<DateTime<Utc>>,
    /// Row creation.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A row of `products`: one item on sale in an activity.
#[derive(Debug, Clone, FromRow, Serialize, PartialEq)]
pub struct Product {
    /// Primary key.
    pub id: u64,
    /// The activity selling it.
    pub activity_id: u64,
    /// Shown to buyers.
    pub name: String,
    /// Unit price, exact.
    #[serde(with = "rust_decimal::serde::str")]
    pub price: Decimal,
    /// Units put on sale.
    pub total_stock: u32,
    /// Most units one user may hold.
    pub per_user_limit: u32,
    /// Most units in one order.
    pub max_per_order: u32,
    /// Stock buckets in Redis (1: one counter; see [`crate::buckets`]).
    pub shards: u16,
    /// Units held by persisted pending or paid orders.
    pub sold: u32,
    /// Optimistic-locking counter, bumped by every change of `sold`.
    pub version: u64,
    /// Row creation.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// A row of `orders`.
#[derive(Debug, Clone, FromRow, Serialize, PartialEq)]
pub struct Order {
    /// Primary key.
    pub id: u64,
    /// Unique order number (activity id and stream entry id).
    pub order_no: String,
    /// The activity.
    pub activity_id: u64,
    /// The product.
    pub product_id: u64,
    /// The buyer.
    pub user_id: String,
    /// Units.
    pub quantity: u32,
    /// Price per unit when reserved.
    #[serde(with = "rust_decimal::serde::str")]
    pub unit_price: Decimal,
    /// quantity × unit_price.
    #[serde(with = "rust_decimal::serde::str")]
    pub amount: Decimal,
    /// Pending, paid, cancelled or expired.
    pub status: OrderStatus,
    /// When Redis reserved the units.
    pub reserved_at: DateTime<Utc>,
    /// Row creation.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}
