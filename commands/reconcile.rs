//! `seckill reconcile`.

use std::time::Duration;

use clap::Args;
use seckill::ops::reconcile::{self, Finding, ReconcileReport};
use serde::Serialize;

use crate::context::Context;
use crate::exit::{CliError, CliResult};
use crate::output::{self, opt, OutputArgs};

/// Arguments of `seckill reconcile`.
#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Activity id.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    activity: Option<u64>,
    /// Check every activity on sale and every one that ended within `orders.reconcile_window`;
    /// the exit code is the worst of theirs.
    #[arg(long)]
    all: bool,
    /// Repair what is safe to repair (without it, only show what would be done).
    #[arg(long)]
    fix: bool,
    /// Also write the result as a node-exporter textfile (e.g. /var/lib/node_exporter/seckill_reconcile.prom;
    /// one file per activity, or one for all with --all), atomically.
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

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn write_textfile(path: &std::path::Path, text: &str) -> CliResult {
    seckill::metrics::write_atomically(path, text)
        .map_err(|e| CliError::could_not_check(anyhow::anyhow!("cannot write {}: {e}", path.display())))
}

/// Exit 0 consistent, 1 drift found (or left after `--fix`), 2 could not check.
pub async fn run(ctx: &Context, args: ReconcileArgs) -> CliResult {
    let Some(activity) = args.activity else {
        return run_all(ctx, &args).await;
    };
    let checked = async {
        let (db, redis) = (ctx.db().await?, ctx.redis().await?);
        let grace = Duration::from_secs(ctx.config.orders.in_flight_grace_secs);
        Ok::<_, anyhow::Error>(reconcile::reconcile(&db, &redis, ctx.group(), activity, grace, args.fix).await?)
    };
    let report = checked.await.map_err(CliError::could_not_check)?;
    if let Some(path) = &args.metrics_file {
        write_textfile(path, &reconcile::textfile::render(&report, args.fix, unix_now()))?;
    }
    if args.output.json {
        output::json(&report)?;
    } else {
        print_report(&report, args.fix);
    }
    if report.consistent {
        Ok(())
    } else {
        Err(CliError::drift())
    }
}

/// One activity's outcome under `--all`, for `--json`.
#[derive(Debug, Serialize)]
struct Checked {
    activity_id: u64,
    /// `consistent`, `drift` or `could_not_check`.
    outcome: &'static str,
    report: Option<ReconcileReport>,
    error: Option<String>,
}

/// `--all`: each activity in turn (one that cannot be checked does not stop the others);
/// exit 2 when any could not be checked, else 1 when any drifted, else 0.
async fn run_all(ctx: &Context, args: &ReconcileArgs) -> CliResult {
    let (db, redis) = async { Ok::<_, anyhow::Error>((ctx.db().await?, ctx.redis().await?)) }
        .await
        .map_err(CliError::could_not_check)?;
    let grace = Duration::from_secs(ctx.config.orders.in_flight_grace_secs);
    let ids = reconcile::activities_to_check(&db, ctx.config.orders.reconcile_window)
        .await
        .map_err(CliError::could_not_check)?;
    let mut checked = Vec::new();
    let bar = seckill::progress::bar(ids.len() as u64, "activities");
    for id in ids {
        bar.inc(1);
        checked.push(
            match reconcile::reconcile(&db, &redis, ctx.group(), id, grace, args.fix).await {
                Ok(report) => Checked {
                    activity_id: id,
                    outcome: if report.consistent { "consistent" } else { "drift" },
                    report: Some(report),
                    error: None,
                },
                Err(e) => Checked {
                    activity_id: id,
                    outcome: "could_not_check",
                    report: None,
                    error: Some(e.to_string()),
                },
            },
        );
    }
    bar.finish_and_clear();
    if let Some(path) = &args.metrics_file {
        let reports: Vec<ReconcileReport> = checked.iter().filter_map(|c| c.report.clone()).collect();
        // A file that cannot be read (the first run) carries nothing over.
        let before = std::fs::read_to_string(path).unwrap_or_default();
        let carried: Vec<_> = checked
            .iter()
            .filter(|c| c.report.is_none())
            .filter_map(|c| reconcile::textfile::previous(&before, c.activity_id))
            .collect();
        let text = reconcile::textfile::render_all(&reports, &carried, args.fix, unix_now());
        write_textfile(path, &text)?;
    }
    if args.output.json {
        output::json(&checked)?;
    } else {
        if checked.is_empty() {
            println!(
                "no activity on sale or ended within {}",
                humantime::format_duration(ctx.config.orders.reconcile_window)
            );
        }
        for c in &checked {
            println!("== activity {}: {}", c.activity_id, c.outcome.replace('_', " "));
            match (&c.report, &c.error) {
                (Some(report), _) => print_report(report, args.fix),
                (None, Some(error)) => println!("{error}"),
                (None, None) => {}
            }
        }
    }
    let failed: Vec<String> = checked
        .iter()
        .filter(|c| c.report.is_none())
        .map(|c| c.activity_id.to_string())
        .collect();
    if !failed.is_empty() {
        return Err(CliError::could_not_check(anyhow::anyhow!(
            "could not check activity(ies) {}",
            failed.join(", ")
        )));
    }
    let drifted: Vec<String> = checked
        .iter()
        .filter(|c| c.report.as_ref().is_some_and(|r| !r.consistent))
        .map(|c| c.activity_id.to_string())
        .collect();
    if drifted.is_empty() {
        Ok(())
    } else {
        Err(CliError::failed(format!(
            "drift in activity(ies) {}",
            drifted.join(", ")
        )))
    }
}

fn print_report(report: &ReconcileReport, fix: bool) {
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
    if report.products.iter().any(|p| !p.buckets.is_empty()) {
        output::table(
            &["product", "bucket", "stock", "sold", "reserved by its stream"],
            report.products.iter().flat_map(|p| {
                p.buckets.iter().map(move |b| {
                    vec![
                        p.product_id.to_string(),
                        b.bucket.to_string(),
                        b.stock.to_string(),
                        b.sold.to_string(),
                        b.expected_sold.to_string(),
                    ]
                })
            }),
        );
    }
    if !report.findings.is_empty() {
        findings_table(&report.findings);
    }
    for r in &report.repairs {
        println!("repaired: {r}");
    }
    if fix && !report.remaining.is_empty() {
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
        } else if fix {
            "drift remains"
        } else {
            "drift found (run with --fix to repair)"
        }
    );
}
