//! One module per subcommand; each returns the process exit code.

mod backup;
mod configcmd;
mod demo;
mod forget;
mod import;
mod init;
mod mongoarchive;
mod prune;
mod restore;
mod restoredb;
mod snapshots;
mod stats;
mod testrestore;
mod verify;

use crate::args::{Cli, Command};
use crate::config::Config;
use anyhow::Result;
use rpger_engine::store::Store;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Runs the chosen subcommand.
pub fn run(cli: &Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Init(a) => init::run(cli, a),
        Command::Backup(a) => backup::run(cli, a),
        Command::Snapshots => snapshots::run(cli),
        Command::Restore(a) => restore::run(cli, a),
        Command::Verify(a) => verify::run(cli, a),
        Command::TestRestore(a) => testrestore::run(cli, a),
        Command::RestoreDb(a) => restoredb::run(cli, a),
        Command::Stats => stats::run(cli),
        Command::ImportLegacy(a) => import::run(cli, a),
        Command::MongodbArchive(a) => mongoarchive::run(cli, a),
        Command::Forget(a) => forget::run(cli, a),
        Command::Prune(a) => prune::run(cli, a),
        Command::Demo(a) => demo::run(cli, a),
        Command::Config(c) => configcmd::run(cli, c),
    }
}

/// The config file: `--config` (must exist) or the default path (used when it exists).
fn config(cli: &Cli) -> Result<Config> {
    match &cli.config {
        Some(p) => Config::load(p, true),
        None => Config::load(Path::new(crate::config::DEFAULT_PATH), false),
    }
}

/// `--store` / `$RPGER_STORE`, else the config's `store`, else the default.
fn store_path(cli: &Cli) -> Result<PathBuf> {
    Ok(match &cli.store {
        Some(s) => s.clone(),
        None => config(cli)?.store.unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_STORE)),
    })
}

/// `--log-dir`, else the config's `log_dir`, else the default.
fn log_dir(cli: &Cli, flag: &Option<PathBuf>) -> Result<PathBuf> {
    Ok(match flag {
        Some(d) => d.clone(),
        None => config(cli)?.log_dir.unwrap_or_else(|| PathBuf::from(crate::config::DEFAULT_LOG_DIR)),
    })
}

/// Appends `line` (prefixed with the UTC time) to `dir/file`; a log that cannot be written is a
/// warning on stderr, never a failed command.
fn log_line(dir: &Path, file: &str, line: &str) {
    use std::io::Write;
    let path = dir.join(file);
    let res = std::fs::create_dir_all(dir).and_then(|_| {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        writeln!(f, "{} {line}", chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"))
    });
    if let Err(e) = res {
        eprintln!("rpger-store: warning: cannot write the log {}: {e} (use --log-dir)", path.display());
    }
}

/// Opens the store named by `--store` / `$RPGER_STORE` / the config.
fn open_store(cli: &Cli) -> Result<Store> {
    Ok(Store::open(&store_path(cli)?)?)
}
