//! Run with: cargo run --release --example full_stack
//!
//! The whole Pulse stack in one command: the dashboard on http://127.0.0.1:3000, the
//! API gateway on :8000 and the internal ETL job service on :8001, each on its own
//! listener and talking to the others over real HTTP. `-- frontend`, `-- backend` or
//! `-- etl` runs one service alone; `-- --help` lists every flag and variable.

// A binary: `pub` marks what the integration tests (which include `stack`) use.
#[allow(unreachable_pub)]
mod stack;

use clap::Parser;

fn main() -> anyhow::Result<()> {
    let cli = stack::config::Cli::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(stack::run(cli))
}
