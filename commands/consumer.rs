//! `seckill consumer`.

use clap::{Args, Subcommand};
use seckill::consumer::{self, ConsumerOptions};
use seckill::reservation::dlq;

use crate::context::Context;
use crate::exit::{CliError, CliResult};
use crate::output::{self, OutputArgs};

/// Arguments of `seckill consumer`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ConsumerArgs {
    #[command(subcommand)]
    command: Option<DlqCommand>,
    /// Consumer name in the group (unique per running consumer) [default: hostname-pid].
    #[arg(long)]
    name: Option<String>,
    /// Entries per batch (one MySQL transaction), 1 to 100000 [default: consumer.batch].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch: Option<u64>,
    /// Drain everything pending (new, own and other consumers' unacked entries) and exit.
    #[arg(long)]
    once: bool,
    /// Serve Prometheus metrics on ADDR (`GET /metrics`), e.g. 127.0.0.1:9101.
    #[arg(long, value_name = "ADDR")]
    metrics_bind: Option<String>,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Inspect and replay the dead-letter streams.
    #[command(subcommand)]
    Dlq(Dlq),
}

#[derive(Debug, Subcommand)]
enum Dlq {
    /// List dead-lettered entries (of one activity, or of all preheated ones).
    List {
        /// Activity id.
        activity: Option<u64>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Persist dead-lettered entries again under their original order numbers (idempotent).
    Replay {
        /// Activity id.
        activity: u64,
        /// Only this entry (dead-letter id or original entry id).
        #[arg(long)]
        id: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
}

pub async fn run(ctx: &Context, args: ConsumerArgs) -> CliResult {
    match args.command {
        Some(DlqCommand::Dlq(cmd)) => return dlq(ctx, cmd).await,
        None => {}
    }
    let opts = ConsumerOptions {
        name: args.name.unwrap_or_else(ConsumerOptions::default_name),
        batch: args.batch.map_or(ctx.config.consumer.batch, |b| b as usize).max(1),
        once: args.once,
    };
    let metrics = match &args.metrics_bind {
        Some(bind) => Some(
            consumer::metrics_endpoint::serve(bind)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {bind}: {e}"))?,
        ),
        None => None,
    };
    let report = consumer::run_with_metrics(&ctx.config, opts, metrics, seckill::shutdown::signal()).await?;
    if args.output.json {
        output::json(&report)?;
        return Ok(());
    }
    let rate = if report.seconds > 0.0 {
        report.persisted as f64 / report.seconds
    } else {
        0.0
    };
    println!(
        "consumer {}: {} orders persisted in {} batches ({:.0}/s over {:.2}s), {} duplicates, {} reclaimed, \
         {} dead-lettered, {} retries, {} left pending",
        report.name,
        report.persisted,
        report.batches,
        rate,
        report.seconds,
        report.duplicates,
        report.reclaimed,
        report.dead_lettered,
        report.retries,
        report.left_pending
    );
    Ok(())
}

async fn dlq(ctx: &Context, cmd: Dlq) -> CliResult {
    let redis = ctx.redis().await?;
    match cmd {
        Dlq::List { activity, output: out } => {
            let letters = dlq::list(&redis, activity).await?;
            if out.json {
                output::json(&letters)?;
                return Ok(());
            }
            output::table(
                &["activity", "dlq id", "order no", "deliveries", "error"],
                letters.iter().map(|d| {
                    vec![
                        d.activity_id.to_string(),
                        d.dlq_id.clone(),
                        d.order_no.clone(),
                        d.deliveries.to_string(),
                        d.error.clone(),
                    ]
                }),
            );
        }
        Dlq::Replay {
            activity,
            id,
            output: out,
        } => {
            let db = ctx.db().await?;
            let replayed = dlq::replay(&db, &redis, activity, id.as_deref()).await?;
            if out.json {
                output::json(&replayed)?;
            } else {
                output::table(
                    &["dlq id", "order no", "outcome", "error"],
                    replayed.iter().map(|r| {
                        vec![
                            r.dlq_id.clone(),
                            r.order_no.clone(),
                            r.outcome.clone(),
                            output::opt(r.error.clone()),
                        ]
                    }),
                );
            }
            if replayed.iter().any(|r| r.outcome == "failed") {
                return Err(CliError::failed(
                    "some dead letters still fail; they stay in the dead-letter stream",
                ));
            }
        }
    }
    Ok(())
}
