//! End-to-end tests: the real `portcullis` binary against the real demo upstream process
//! (`examples/demo-upstream/upstream.py`), both on loopback, each test in its own temporary
//! directory with its own config, store, upstream and gateway.
//!
//! Every test asserts two sides: what the upstream received (from its `/__requests`
//! record) and what the agent received (the raw HTTP response, searched for the secret in
//! every spelling).
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers (process start-up, the HTTP client, the checks) fail the test loudly, like the tests"
)]

mod harness;
mod http;

mod fixtures;

mod adversarial;
mod approvals;
mod audit;
mod bad_input;
mod browser;
mod checkpoints;
mod cli;
mod crash;
mod credentials;
mod egress;
mod hostile;
mod intents;
mod mcp;
mod oauth2;
mod observability;
mod openapi;
mod operations;
mod otlp;
mod progress;
mod provenance;
mod quotas;
mod redaction;
mod redirects;
mod rotation;
mod scale;
mod smtp;
mod smuggling;
mod upgrade;
mod vault;
