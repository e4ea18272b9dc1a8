//! portknock: a port-knocking firewall for Linux on nftables.
//!
//! The library holds all logic; `main.rs` only hands the command line to [`cli::run`].
//! Pure logic (configuration, one-time passwords, the knock engine) is kept apart from
//! I/O so that it is tested without root. See ARCHITECTURE.md for the map.

pub mod admin;
pub mod capture;
pub mod cli;
pub mod client;
pub mod config;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod engine;
pub mod firewall;
pub mod metrics;
pub mod netns;
pub mod otp;
pub mod pidfile;
pub mod port;
pub mod report;
pub mod state;
pub mod statedir;
pub mod trial;
