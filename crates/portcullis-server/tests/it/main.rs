//! Integration tests of the HTTP adapters: the real router over a real gateway (SQLite store
//! in a temporary directory) and a real upstream on loopback, driven in-process.

// `cfg(test)` makes clippy treat the helpers as test code (unwrap allowed, as in every test).
#![cfg(test)]

mod mcp;
mod metrics;
mod readiness;
mod ui;
