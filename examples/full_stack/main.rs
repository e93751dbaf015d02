//! Run with: cargo run --release --example full_stack
//!
//! The whole Pulse stack in one command: the dashboard on http://127.0.0.1:3000, the
//! API gateway on :8000 and the internal ETL job service on :8001, each on its own
//! listener and talking to the others over real HTTP. `-- frontend`, `-- backend` or
//! `-- etl` runs one service alone; `-- --help` lists every flag and variable.

// A binary: `pub` marks what the integration tests (which include `stack`) use.
#[allow(unreachable_pub)]
mod stack;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: fewer instructions per allocation and free than glibc's allocator, and a
/// request through the gateway makes about 60 of each.
#[cfg(not(pulse_system_alloc))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = stack::config::Cli::parse();
    let done = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(stack::run(cli)));
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The causes, one line: what went wrong is the message, not a backtrace.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
