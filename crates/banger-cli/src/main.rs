//! `banger`: the CLI. It talks JSON-RPC to `bangerd` over a unix socket, starting the daemon
//! on demand. stdout carries data only (tables, `--json`); progress, logs and errors go to
//! stderr. Errors print as `banger: <message> (op <id>)` with an optional `hint:` line.

mod cli;
mod commands;
mod connect;
mod doctor;
mod output;
mod stages;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            output::print_error(&anyhow::Error::new(e).context("cannot start the async runtime"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(err) => {
            output::print_error(&err);
            ExitCode::FAILURE
        }
    }
}
