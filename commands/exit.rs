//! How a command ends, and the one place that turns that into the process's exit code (as
//! cargo's `CliError` does):
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success; `reconcile`: consistent |
//! | 1 | failed or refused ([`seckill::Error::exit_code`]); `bench`, `doctor`, `consumer dlq replay`: a check did not pass ([`CliError::failed`]); `reconcile`: drift found ([`CliError::drift`]; `--all`: [`CliError::failed`], naming the activities) |
//! | 2 | usage error: a flag value clap rejects (clap exits by itself), a configuration that cannot work ([`seckill::Error::Config`]); `reconcile`: could not check ([`CliError::could_not_check`]) |
//!
//! A command that ends only in success or an error returns `anyhow::Result<()>`, which `?`
//! in `main::run` turns into a [`CliError`]; a command with outcomes of its own (`reconcile`,
//! `bench`, `doctor`, `consumer`) returns [`CliResult`].

use std::fmt::Display;
use std::process::ExitCode;

use seckill::error::{EXIT_FAILED, EXIT_USAGE};

/// What a command returns: `Ok` is exit 0.
pub type CliResult = Result<(), CliError>;

/// A command that did not succeed: what to print on stderr, and the exit code.
#[derive(Debug)]
pub struct CliError {
    /// Printed with its causes; `None` when the command's own report already said it.
    error: Option<anyhow::Error>,
    code: u8,
}

impl CliError {
    /// A check the command ran did not pass (its report is printed already): exit 1 with
    /// `why` on stderr.
    pub fn failed(why: impl Display) -> Self {
        CliError {
            error: Some(anyhow::anyhow!("{why}")),
            code: EXIT_FAILED,
        }
    }

    /// `reconcile` found drift, which its report says: exit 1.
    pub fn drift() -> Self {
        CliError {
            error: None,
            code: EXIT_FAILED,
        }
    }

    /// `reconcile` could not check (a backend failed, the activity is unknown, the metrics
    /// file could not be written): exit 2, whatever the error, so monitoring can tell
    /// "unknown" from "drift".
    pub fn could_not_check(error: impl Into<anyhow::Error>) -> Self {
        CliError {
            error: Some(error.into()),
            code: EXIT_USAGE,
        }
    }

    /// Prints the error with its chain of causes, and returns the exit code.
    pub fn report(self) -> ExitCode {
        if let Some(err) = &self.error {
            let mut message = format!("error: {err}");
            for cause in err.chain().skip(1) {
                let cause = cause.to_string();
                if !message.contains(&cause) {
                    message.push_str(&format!("\n  caused by: {cause}"));
                }
            }
            eprintln!("{message}");
        }
        ExitCode::from(self.code)
    }
}

/// Any error: a library error decides by its kind ([`seckill::Error::exit_code`]), anything
/// else (I/O on stdout, a file named on the command line) is a failure, exit 1.
impl<E: Into<anyhow::Error>> From<E> for CliError {
    fn from(error: E) -> Self {
        let error = error.into();
        let code = error
            .downcast_ref::<seckill::Error>()
            .map_or(EXIT_FAILED, seckill::Error::exit_code);
        CliError {
            error: Some(error),
            code,
        }
    }
}
