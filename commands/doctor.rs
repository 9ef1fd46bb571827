//! `seckill doctor`.

use clap::Args;
use seckill::doctor::{self, Verdict};

use crate::context::Context;
use crate::exit::{CliError, CliResult};
use crate::output::{self, OutputArgs};

/// Arguments of `seckill doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    output: OutputArgs,
}

/// Exit 0 when every check passes (warnings allowed), 1 otherwise.
pub async fn run(ctx: &Context, args: DoctorArgs) -> CliResult {
    let diagnosis = doctor::diagnose(&ctx.config).await;
    if args.output.json {
        output::json(&diagnosis)?;
    } else {
        output::table(
            &["check", "result", "detail"],
            diagnosis.checks.iter().map(|c| {
                let verdict = match c.verdict {
                    Verdict::Pass => "ok",
                    Verdict::Warn => "warn",
                    Verdict::Fail => "FAIL",
                };
                vec![c.name.to_string(), verdict.to_string(), c.detail.clone()]
            }),
        );
    }
    if !diagnosis.passed {
        return Err(CliError::failed("doctor: some checks failed"));
    }
    Ok(())
}
