//! Integration suite: the in-process server over real sockets, an in-process agent with the
//! virtual reader, and a fresh SQLite or PostgreSQL database per test.

mod agent_socket;
mod audit;
mod binding;
mod auth;
mod card_world;
mod background;
mod clock;
mod cluster;
mod demo;
mod console;
mod enrolment;
mod errors;
mod hardening;
mod kiosk;
mod main_path;
mod monitoring;
mod openapi;
mod pages;
mod permission;
mod topup;
mod settlement;
mod topup_rules;
mod transactions;
mod trust;
