//! The `seckill` binary: parses the command line, sets up logging and configuration,
//! and hands each subcommand to its module. Which exit code a command ends with is decided
//! in [`exit`].

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod activity;
mod bench;
mod blacklist;
mod consumer;
mod context;
mod degrade;
mod doctor;
mod exit;
mod flush;
mod hot;
mod lifecycle;
mod migrate;
mod order;
mod output;
mod parse;
mod product;
mod reconcile;
mod scheduler;
mod serve;
mod status;
mod stock;
mod token;

use context::{Context, GlobalArgs};
use exit::{CliError, CliResult};

// Buffers are allocated on one runtime worker and freed on another (the batcher, the
// connection tasks), which glibc's per-thread arenas handle slowly; mimalloc frees across
// threads cheaply (measured in the README's Benchmarks section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Flash-sale (秒杀) toolkit: define activities, preheat Redis, sell atomically, persist orders.
#[derive(Debug, Parser)]
#[command(name = "seckill", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the database if missing and apply migrations (safe to run twice).
    Migrate(migrate::MigrateArgs),
    /// Check Redis (persistence, eviction, replicas), MySQL, the token secret and the clocks before a sale.
    Doctor(doctor::DoctorArgs),
    /// Create, change, list, show and delete activities.
    #[command(subcommand)]
    Activity(activity::ActivityCommand),
    /// Add, change, list, show and delete an activity's products.
    #[command(subcommand)]
    Product(product::ProductCommand),
    /// Preheat an activity's stock, rules and scripts into Redis.
    Hot(hot::HotArgs),
    /// Open (or resume) the sale of a preheated activity.
    Start(lifecycle::StartArgs),
    /// Pause the sale (`start` resumes it), or end it with --end.
    Stop(lifecycle::StopArgs),
    /// Open each preheated activity at its start and end it at its end, until ctrl-c or SIGTERM (daemon).
    Scheduler(scheduler::SchedulerArgs),
    /// Show an activity's stock in Redis and orders in MySQL.
    Status(status::StatusArgs),
    /// Remove every Redis key of an activity.
    Flush(flush::FlushArgs),
    /// Issue purchase tokens (CSV `user_id,token`), or revoke one.
    Token(token::TokenArgs),
    /// Bar users from buying, let them buy again, list them.
    #[command(subcommand)]
    Blacklist(blacklist::BlacklistCommand),
    /// Answer an activity's buys `503 degraded` on every server (on/off/status).
    Degrade(degrade::DegradeArgs),
    /// Serve the buyer-facing HTTP API and the buyer page (`/`, `/sale/ID`) until ctrl-c or SIGTERM.
    Serve(serve::ServeArgs),
    /// Persist reservations from the order streams into MySQL (daemon, or --once).
    Consumer(consumer::ConsumerArgs),
    /// Show, list, pay, cancel and expire orders.
    #[command(subcommand)]
    Order(order::OrderCommand),
    /// Change live stock: top up, or withdraw when the source sold out.
    #[command(subcommand)]
    Stock(stock::StockCommand),
    /// Compare Redis with MySQL and classify every difference (exit 0 consistent, 1 drift, 2 could not check).
    Reconcile(reconcile::ReconcileArgs),
    /// Rehearse a flash sale on a throwaway activity and check the promises (exit 1 when one fails).
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    context::init_logging(&cli.global);
    let ctx = match Context::new(&cli.global) {
        Ok(ctx) => ctx,
        Err(e) => return CliError::from(e).report(),
    };
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Command::Serve(args) = &cli.command {
        if let Some(workers) = serve::runtime_workers(&ctx, args) {
            runtime.worker_threads(workers);
        }
    }
    let runtime = match runtime.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return CliError::from(e).report(),
    };
    match runtime.block_on(run(cli, ctx)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

async fn run(cli: Cli, ctx: Context) -> CliResult {
    match cli.command {
        Command::Migrate(args) => migrate::run(&ctx, args).await?,
        Command::Doctor(args) => doctor::run(&ctx, args).await?,
        Command::Activity(cmd) => activity::run(&ctx, cmd).await?,
        Command::Product(cmd) => product::run(&ctx, cmd).await?,
        Command::Hot(args) => hot::run(&ctx, args).await?,
        Command::Start(args) => lifecycle::start(&ctx, args).await?,
        Command::Stop(args) => lifecycle::stop(&ctx, args).await?,
        Command::Scheduler(args) => scheduler::run(&ctx, args).await?,
        Command::Status(args) => status::run(&ctx, args).await?,
        Command::Flush(args) => flush::run(&ctx, args).await?,
        Command::Token(args) => token::run(&ctx, args).await?,
        Command::Blacklist(cmd) => blacklist::run(&ctx, cmd).await?,
        Command::Degrade(args) => degrade::run(&ctx, args).await?,
        Command::Serve(args) => serve::run(&ctx, args).await?,
        Command::Consumer(args) => consumer::run(&ctx, args).await?,
        Command::Order(cmd) => order::run(&ctx, cmd).await?,
        Command::Stock(cmd) => stock::run(&ctx, cmd).await?,
        Command::Reconcile(args) => reconcile::run(&ctx, args).await?,
        Command::Bench(args) => bench::run(&ctx, args).await?,
    }
    Ok(())
}
