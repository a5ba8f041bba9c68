//! The `mbmix` binary: parses the command line, installs the Ctrl-C handler and maps the
//! outcome to an exit code (0 done, 1 error, 130 interrupted after a checkpoint). The
//! commands live in `bench_suite::cli`.

use anyhow::Context;
use bench_suite::cli::{self, Cli, EXIT_INTERRUPTED};
use clap::Parser;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    // First Ctrl-C: finish the epoch, checkpoint, exit 130. Second: exit at once.
    if let Err(e) = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(i32::from(EXIT_INTERRUPTED));
        }
        eprintln!(
            "\nCtrl-C: stopping after this epoch (press again to abort without a checkpoint)"
        );
    }) {
        eprintln!("warning: Ctrl-C handler not installed: {e}");
    }
    let what = command_name(&cli);
    let result = cli::run(cli, &stop, &mut std::io::stdout().lock())
        .with_context(|| format!("mbmix {what} failed"));
    match result {
        Ok(exit) => ExitCode::from(exit.code()),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn command_name(cli: &Cli) -> &'static str {
    match cli.command {
        cli::Command::List => "list",
        cli::Command::Train(_) => "train",
        cli::Command::Eval(_) => "eval",
        cli::Command::Rollout(_) => "rollout",
        cli::Command::Render(_) => "render",
        cli::Command::Bench(_) => "bench",
        cli::Command::Report(_) => "report",
    }
}
