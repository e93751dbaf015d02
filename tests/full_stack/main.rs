//! End-to-end tests of the full stack (examples/full_stack) over real loopback sockets:
//! each test starts the frontend, the gateway and the ETL service on ephemeral ports
//! with a temporary data folder, exactly as `cargo run --example full_stack` does.
//! One test binary, one module per concern, one shared harness.
//!
//! Every wait is a poll with a deadline; nothing sleeps to assert.

#[allow(dead_code, unreachable_pub, unused_imports)]
#[path = "../../examples/full_stack/stack/mod.rs"]
mod stack;

mod harness;

mod contract;
mod openapi;

mod accounts;
mod admin;
mod auth;
mod chaos;
mod cli;
mod deployment;
mod frontend;
mod headers;
mod jobs;
mod listeners;
mod login;
mod outage;
mod pg_restart;
mod postgres;
mod prometheus;
mod retry_after;
mod rotation;
mod scale_out;
mod sessions;
mod tls;
mod upstream_faults;
