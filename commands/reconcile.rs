//! `seckill reconcile`.

use std::time::Duration;

use clap::Args;
use seckill::ops::reconcile::{self, Finding};

use crate::context::Context;
use crate::exit::{CliError, CliResult};
use crate::output::{self, opt, OutputArgs};

/// Arguments of `seckill reconcile`.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Activity id.
    activity: u64,
    /// Repair what is safe to repair (without it, only show what would be done).
    #[arg(long)]
    fix: bool,
    /// Also write the result as a node-exporter textfile (e.g. /var/lib/node_exporter/seckill_reconcile_A.prom;
    /// one file per activity), atomically.
    #[arg(long, value_name = "PATH")]
    metrics_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    output: OutputArgs,
}

fn findings_table(findings: &[Finding]) {
    output::table(
        &["class", "product", "subject", "detail", "fix"],
        findings.iter().map(|f| {
            vec![
                f.class.as_str().into(),
                opt(f.product_id),
                f.subject.clone(),
                f.detail.clone(),
                opt(f.fix.clone()),
            ]
        }),
    );
}

/// Exit 0 consistent, 1 drift found (or left after `--fix`), 2 could not check.
pub async fn run(ctx: &Context, args: ReconcileArgs) -> CliResult {
    let checked = async {
        let (db, redis) = (ctx.db().await?, ctx.redis().await?);
        let grace = Duration::from_secs(ctx.config.orders.in_flight_grace_secs);
        Ok::<_, anyhow::Error>(reconcile::reconcile(&db, &redis, ctx.group(), args.activity, grace, args.fix).await?)
    };
    let report = checked.await.map_err(CliError::could_not_check)?;
    if let Some(path) = &args.metrics_file {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let text = reconcile::textfile::render(&report, args.fix, now);
        seckill::metrics::write_atomically(path, &text)
            .map_err(|e| CliError::could_not_check(anyhow::anyhow!("cannot write {}: {e}", path.display())))?;
    }
    if args.output.json {
        output::json(&report)?;
    } else {
        output::table(
            &[
                "product",
                "redis stock/sold/total",
                "mysql total",
                "mysql sold",
                "orders units",
                "queued",
                "unreleased",
                "dead-lettered",
                "ledger net",
                "orders",
            ],
            report.products.iter().map(|p| {
                vec![
                    p.product_id.to_string(),
                    p.redis
                        .map(|(a, b, c)| format!("{a}/{b}/{c}"))
                        .unwrap_or_else(|| "-".into()),
                    p.mysql_total.to_string(),
                    p.mysql_sold.to_string(),
                    p.order_units.to_string(),
                    p.unpersisted_units.to_string(),
                    p.unreleased_units.to_string(),
                    p.dead_lettered_units.to_string(),
                    p.ledger_net.to_string(),
                    p.orders
                        .iter()
                        .map(|(k, v)| format!("{k}:{v}"))
                        .collect::<Vec<_>>()
                        .join(" "),
                ]
            }),
        );
        if !report.findings.is_empty() {
            findings_table(&report.findings);
        }
        for r in &report.repairs {
            println!("repaired: {r}");
        }
        if args.fix && !report.remaining.is_empty() {
            println!("left after repairs:");
            findings_table(&report.remaining);
        }
        if report.dead_letters > 0 {
            println!(
                "{} dead-lettered entries: see `seckill consumer dlq list {}`",
                report.dead_letters, report.activity_id
            );
        }
        println!(
            "{}",
            if report.consistent {
                "consistent"
            } else if args.fix {
                "drift remains"
            } else {
                "drift found (run with --fix to repair)"
            }
        );
    }
    if report.consistent {
        Ok(())
    } else {
        Err(CliError::drift())
    }
}
