//! One module per subcommand; each returns the process exit code.

mod backup;
mod demo;
mod forget;
mod import;
mod init;
mod prune;
mod restore;
mod snapshots;
mod stats;
mod verify;

use crate::args::{Cli, Command};
use anyhow::Result;
use rpger_engine::store::Store;
use std::process::ExitCode;

/// Runs the chosen subcommand.
pub fn run(cli: &Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Init(a) => init::run(cli, a),
        Command::Backup(a) => backup::run(cli, a),
        Command::Snapshots => snapshots::run(cli),
        Command::Restore(a) => restore::run(cli, a),
        Command::Verify(a) => verify::run(cli, a),
        Command::Stats => stats::run(cli),
        Command::ImportLegacy(a) => import::run(cli, a),
        Command::Forget(a) => forget::run(cli, a),
        Command::Prune(a) => prune::run(cli, a),
        Command::Demo(a) => demo::run(cli, a),
    }
}

/// Opens the store named by `--store` / `$RPGER_STORE`.
fn open_store(cli: &Cli) -> Result<Store> {
    Ok(Store::open(&cli.store)?)
}
