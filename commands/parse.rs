//! Value parsers for flags whose values clap cannot check by type alone. A value they
//! refuse is a usage error (exit 2) whose message names the flag (clap adds it) and the
//! allowed range; nothing has been read or changed yet.

use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use seckill::ops::catalog;

/// An RFC 3339 time within [`catalog::WINDOW_RANGE`].
pub fn time(text: &str) -> Result<DateTime<Utc>, String> {
    let t = DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!(
                "{e}; expected RFC 3339 such as 2026-11-11T00:00:00+08:00, {}",
                catalog::WINDOW_RANGE
            )
        })?;
    catalog::check_time(t).map_err(message)?;
    Ok(t)
}

/// The message of a library error without its kind ("invalid input: "), which clap's own
/// "invalid value" already says.
fn message(e: seckill::Error) -> String {
    match e {
        seckill::Error::Invalid(message) => message,
        other => other.to_string(),
    }
}

/// Largest price: DECIMAL(12,2).
const MAX_PRICE: &str = "9999999999.99";

/// A price written as a plain decimal: digits, optionally a point and one or two more
/// digits; 0 to 9999999999.99. No sign, exponent, spaces or thousands separators, so
/// `1e3` is not quietly 1000.
pub fn price(text: &str) -> Result<Decimal, String> {
    let range = format!("a plain decimal from 0 to {MAX_PRICE} with at most two decimals, such as 99.90");
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !digits(whole) || !digits(fraction) || (text.contains('.') && fraction.is_empty()) {
        return Err(format!("{text:?} is not {range}"));
    }
    if fraction.len() > 2 {
        return Err(format!("{text:?} has more than two decimals; expected {range}"));
    }
    let value: Decimal = text.parse().map_err(|_| format!("{text:?} is not {range}"))?;
    if value > MAX_PRICE.parse::<Decimal>().expect("a decimal") {
        return Err(format!("{text} is too large; expected {range}"));
    }
    Ok(value)
}

/// A user id, by the one rule of [`seckill::user_id`].
pub fn user_id(text: &str) -> Result<String, String> {
    seckill::user_id::validate(text).map_err(|e| e.to_string())?;
    Ok(text.to_string())
}

/// `FIRST-LAST` for `token --range`.
pub fn user_range(text: &str) -> Result<seckill::ops::token::UserRange, String> {
    seckill::ops::token::parse_range(text).map_err(message)
}

/// A token lifetime in seconds within [`seckill::ops::token::TTL_SECS`].
pub fn ttl_secs(text: &str) -> Result<u64, String> {
    let range = seckill::ops::token::TTL_SECS;
    let allowed = format!("{}..={} (seconds, at most a year)", range.start(), range.end());
    match text.parse::<u64>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(format!("{text} is not in {allowed}")),
    }
}

/// A duration (`500ms`, `15m`, `2h`, `7d`) within `min..=max`, `allowed` saying so in words.
fn duration_within(text: &str, min: Duration, max: Duration, allowed: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| format!("{e}; expected {allowed}"))?;
    if d < min || d > max {
        return Err(format!("{text} is out of range; expected {allowed}"));
    }
    Ok(d)
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// `order expire --older-than`: 0s to 3650 days.
pub fn order_age(text: &str) -> Result<Duration, String> {
    duration_within(
        text,
        Duration::ZERO,
        DAY * 3650,
        "a duration from 0s to 3650d, such as 15m",
    )
}

/// `status --interval`: 100ms to 1h, so `--watch` neither keeps MySQL and Redis busy with
/// its queries nor looks frozen.
pub fn refresh_interval(text: &str) -> Result<Duration, String> {
    duration_within(
        text,
        Duration::from_millis(100),
        Duration::from_secs(3600),
        "a duration from 100ms to 1h, such as 1s",
    )
}

/// `bench --drain-timeout`: 1s to 1d.
pub fn drain_timeout(text: &str) -> Result<Duration, String> {
    duration_within(
        text,
        Duration::from_secs(1),
        DAY,
        "a duration from 1s to 1d, such as 60s",
    )
}

/// `bench --url`: `http://host:port`, optionally with a path (the load generator speaks
/// plain HTTP/1.1 only).
pub fn http_url(text: &str) -> Result<String, String> {
    seckill::bench::authority_of(text).map_err(message)?;
    Ok(text.to_string())
}

/// A configuration file that exists. Without `--config` a missing `./config.yaml` means
/// the built-in defaults; a file named on purpose and missing is a mistake.
pub fn existing_file(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => Ok(path),
        Ok(_) => Err("not a file".into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("no such file".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// `pending`, `paid`, `cancelled` or `expired`.
pub fn order_status(text: &str) -> Result<seckill::model::OrderStatus, String> {
    text.parse().map_err(message)
}
