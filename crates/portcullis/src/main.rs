//! `portcullis`: the gateway and its operator commands.

mod approvals_cmd;
mod audit_cmd;
mod catalog_cmd;
mod checkpoint_cmd;
mod cli;
mod eval_cmd;
mod keys;
mod logging;
mod mcp_cmd;
mod progress;
mod serve;
mod telemetry;

use std::process::ExitCode;

use clap::Parser as _;

/// mimalloc instead of glibc's malloc: an intent allocates and frees thousands of small
/// values across the runtime's threads, and glibc's allocator was about a sixth of the CPU
/// an intent cost (see docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    // `serve` starts logging once it has read the configuration (format, level, traces).
    if !matches!(cli.command, cli::Command::Serve { .. }) {
        logging::init(cli.verbose);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
