//! The ceiling of a consumer: the rows it wrote, inserted again by nothing but multi-row
//! INSERTs, in several shapes, so the best a client can do on this server is measured rather
//! than assumed (statement size, bound parameters or SQL text, rows per transaction, one or
//! two connections in flight).

use rust_decimal::Decimal;
use seckill::Db;
use sqlx::{MySql, QueryBuilder, Row};

/// One order row, as the consumer wrote it.
pub struct Row9 {
    order_no: String,
    activity_id: u64,
    product_id: u64,
    user_id: String,
    quantity: u32,
    unit_price: Decimal,
    amount: Decimal,
    status: String,
    reserved_at: chrono::NaiveDateTime,
}

const COLUMNS: &str = "order_no, activity_id, product_id, user_id, quantity, unit_price, amount, status, reserved_at";

/// Every order of the database, in insertion order.
pub async fn read_orders(db: &Db) -> anyhow::Result<Vec<Row9>> {
    let rows = sqlx::query(&format!("SELECT {COLUMNS} FROM orders ORDER BY id"))
        .fetch_all(db.pool())
        .await?;
    rows.into_iter()
        .map(|r| {
            Ok(Row9 {
                order_no: r.try_get(0)?,
                activity_id: r.try_get(1)?,
                product_id: r.try_get(2)?,
                user_id: String::from_utf8(r.try_get::<Vec<u8>, _>(3)?)?,
                quantity: r.try_get(4)?,
                unit_price: r.try_get(5)?,
                amount: r.try_get(6)?,
                status: r.try_get(7)?,
                reserved_at: r.try_get(8)?,
            })
        })
        .collect()
}

/// How the rows are sent.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Shape {
    /// What it is, for the printed table.
    pub name: &'static str,
    /// Bound parameters (the binary protocol, as the consumer sends them) or SQL text.
    pub prepared: bool,
    /// Rows per INSERT statement.
    pub chunk: usize,
    /// Rows per transaction; 0: the consumer's average batch.
    pub per_tx: usize,
    /// Connections inserting at once (1 or 2), each its own share of the rows.
    pub connections: usize,
}

/// The shapes measured: the consumer's own first (2,000 rows per statement, its batches as
/// transactions, one connection), then one change each.
pub const SHAPES: [Shape; 5] = [
    Shape {
        name: "bound, as the consumer",
        prepared: true,
        chunk: 2000,
        per_tx: 0,
        connections: 1,
    },
    Shape {
        name: "SQL text",
        prepared: false,
        chunk: 2000,
        per_tx: 0,
        connections: 1,
    },
    Shape {
        // 9 placeholders a row: 7,000 rows stay under MySQL's 65,535.
        name: "bound, 7000 rows/INSERT",
        prepared: true,
        chunk: 7000,
        per_tx: 0,
        connections: 1,
    },
    Shape {
        name: "bound, 1 tx per INSERT",
        prepared: true,
        chunk: 2000,
        per_tx: 2000,
        connections: 1,
    },
    Shape {
        name: "bound, 2 connections",
        prepared: true,
        chunk: 2000,
        per_tx: 0,
        connections: 2,
    },
];

/// A string literal for MySQL's text protocol (the rows are our own, but quote them anyway).
fn quoted(s: &str, out: &mut String) {
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

/// Inserts `rows` into the fresh database's orders table as `shape` says (`per_tx` 0 taken
/// as `batch_rows`); with two connections each inserts one half, both at once.
pub async fn bare_insert(db: &Db, rows: &[Row9], shape: Shape, batch_rows: usize) -> anyhow::Result<()> {
    let per_tx = if shape.per_tx == 0 { batch_rows } else { shape.per_tx };
    if shape.connections < 2 {
        return insert_part(db, rows, shape, per_tx).await;
    }
    let (a, b) = rows.split_at(rows.len() / 2);
    tokio::try_join!(insert_part(db, a, shape, per_tx), insert_part(db, b, shape, per_tx))?;
    Ok(())
}

async fn insert_part(db: &Db, rows: &[Row9], shape: Shape, per_tx: usize) -> anyhow::Result<()> {
    use std::fmt::Write;
    for tx_rows in rows.chunks(per_tx.max(1)) {
        let mut tx = db.pool().begin().await?;
        for chunk in tx_rows.chunks(shape.chunk) {
            if shape.prepared {
                let mut q = QueryBuilder::<MySql>::new(format!("INSERT INTO orders ({COLUMNS}) "));
                q.push_values(chunk, |mut b, r| {
                    b.push_bind(&r.order_no)
                        .push_bind(r.activity_id)
                        .push_bind(r.product_id)
                        .push_bind(&r.user_id)
                        .push_bind(r.quantity)
                        .push_bind(r.unit_price)
                        .push_bind(r.amount)
                        .push_bind(&r.status)
                        .push_bind(r.reserved_at);
                });
                q.build().execute(&mut *tx).await?;
            } else {
                let mut sql = format!("INSERT INTO orders ({COLUMNS}) VALUES ");
                for (i, r) in chunk.iter().enumerate() {
                    sql.push_str(if i == 0 { "(" } else { ",(" });
                    quoted(&r.order_no, &mut sql);
                    write!(sql, ",{},{},", r.activity_id, r.product_id)?;
                    quoted(&r.user_id, &mut sql);
                    write!(sql, ",{},{},{},", r.quantity, r.unit_price, r.amount)?;
                    quoted(&r.status, &mut sql);
                    write!(sql, ",'{}')", r.reserved_at.format("%Y-%m-%d %H:%M:%S%.3f"))?;
                }
                sqlx::raw_sql(&sql).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
    }
    Ok(())
}
