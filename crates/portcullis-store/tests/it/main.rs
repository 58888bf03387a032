//! Drives the store against real databases: a SQLite file in a temporary directory and,
//! when `PORTCULLIS_TEST_DATABASE_URL` names one, a fresh database on a real PostgreSQL
//! server. Every test that doesn't depend on the backend runs on both (see `on_both!`).

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "helpers and test bodies outside #[test] functions fail the test on any error"
)]

#[macro_use]
mod support;

mod agents;
mod audit;
mod checkpoints;
mod holds;
mod intents;
mod limits;
mod provenance;
mod schema;
mod secrets;
