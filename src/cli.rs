//! The command line: argument definitions and dispatch. Each command's work lives in the module
//! named after what it does; this file only parses, calls, and maps results to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Exit status for success.
pub const EXIT_OK: u8 = 0;
/// Exit status for a failure at run time.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status for bad usage or a bad configuration.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "portknock",
    version,
    about = "Port-knocking firewall for Linux on nftables: server daemon and client in one binary",
    after_help = "Examples:\n  portknock check --config-dir /etc/portknock\n  portknock knock server.example 7000 8000 9000 --verify 22\n  portknock otp server.example 2000 --secret-file ~/.portknock-secret --verify 22"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Where the configuration lives.
#[derive(Debug, Args)]
pub struct ConfigDirArg {
    /// Configuration directory holding portknock.conf and the two door lists.
    #[arg(long, env = "PORTKNOCK_CONFIG_DIR", default_value = "/etc/portknock")]
    pub config_dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate the configuration and print every problem and a summary of the doors.
    #[command(after_help = "Exit status: 0 when valid (warnings may remain), 2 on errors.\n\nExample:\n  portknock check --config-dir examples")]
    Check(ConfigDirArg),
}

/// Parses the process arguments, runs the command and returns its exit status.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check(args) => crate::config::check_command(&args.config_dir),
    };
    ExitCode::from(code)
}
