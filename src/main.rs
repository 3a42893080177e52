//! `authgate`: parse the command line and run it.

use clap::Parser;

fn main() -> std::process::ExitCode {
    authgate::cli::run(authgate::cli::Cli::parse())
}
