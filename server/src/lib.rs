//! The cardbridge server: lets a bank's server read smart cards at any PC through the browser.
//!
//! # Layout
//!
//! - [`app`]: the [`Application`] — builds the state, binds, serves, runs the background tasks
//!   under the [`supervisor`] and stops them all at shutdown.
//! - [`http`]: axum routes (login, admin, agent enrolment and pairing, the data query, static
//!   pages) and the two WebSockets, `/ws/agent` and `/ws/page`.
//! - [`clock`]: the injectable wall clock every time decision reads (`AppState::clock`).
//! - [`hub`]: connected agents and pages, command signing and reply correlation.
//! - [`reader`]: the receiver module (Q-S1) — permission and consent checks, the EMV read through
//!   the agent, and delivery of the number to the page.
//! - [`data`]: the data service (Q-S5) with its disclosure rules.
//! - [`store`]: the sqlx store facade (SQLite or PostgreSQL) and the hash-chained audit log.
//! - [`checkpoint`]: signed checkpoints of the audit log's head, and `audit-verify`'s check.
//! - [`monitor`]: run-state monitoring (R3.8) — terminals, bank link and hub watched, alarms with
//!   hold times raised, acknowledged and cleared, pushed to `/ws/admin` and a signed webhook;
//!   [`metrics`]: the Prometheus registry behind `/metrics`.
//! - [`settlement`]: daily settlement and reconciliation (R3.7): bank statement, ledger and the
//!   cards' proofs, the report (CSV, XLSX, SVG), the scheduled job.
//! - [`keys`]: the issuer key store behind card authentication; [`throttle`]: rate limits.
//! - [`auth`], [`secrets`], [`config`], [`logging`], [`terminals`], [`seed`]: the rest of the plumbing.

pub mod app;
pub mod auth;
pub mod bank;
pub mod binding;
pub mod checkpoint;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod data;
pub mod http;
pub mod logging;
pub mod hub;
pub mod keys;
pub mod kiosk;
pub mod metrics;
pub mod monitor;
pub mod reader;
pub mod router;
pub mod secrets;
pub mod seed;
pub mod settlement;
pub mod state;
pub mod store;
pub mod supervisor;
pub mod terminals;
pub mod throttle;
pub mod topup;
pub mod util;

pub use config::Config;
pub use app::Application;
