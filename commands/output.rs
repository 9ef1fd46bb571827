//! Printing results: tables for people, JSON for scripts.

use clap::Args;
use serde::Serialize;
use tabled::builder::Builder;
use tabled::settings::Style;

/// `--json` switch shared by commands that print data.
#[derive(Debug, Args, Clone, Copy)]
pub struct OutputArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Prints `value` as pretty JSON on stdout.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints a table with `headers` and `rows` on stdout.
pub fn table(headers: &[&str], rows: impl IntoIterator<Item = Vec<String>>) {
    let mut builder = Builder::default();
    builder.push_record(headers.iter().map(|h| h.to_string()));
    for row in rows {
        builder.push_record(row);
    }
    let mut table = builder.build();
    table.with(Style::sharp());
    println!("{table}");
}

/// Formats an optional value, `-` when absent.
pub fn opt<T: ToString>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

/// Prints `items` as JSON (a lone item as an object, several as an array) or as a table
/// with `headers`, one row per item built by `row`.
pub fn rows<T: Serialize>(
    items: &[T],
    output: OutputArgs,
    headers: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    if output.json {
        return match items {
            [one] => json(one),
            many => json(&many),
        };
    }
    table(headers, items.iter().map(row));
    Ok(())
}
