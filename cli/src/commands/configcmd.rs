//! `rpger-store config init`.

use crate::args::{Cli, ConfigCommand};
use crate::config::{DEFAULT_PATH, EXAMPLE};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;

pub fn run(cli: &Cli, c: &ConfigCommand) -> Result<ExitCode> {
    let ConfigCommand::Init { force, stdout } = c;
    if *stdout {
        print!("{EXAMPLE}");
        return Ok(ExitCode::SUCCESS);
    }
    let path = cli.config.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_PATH));
    if path.exists() && !force {
        bail!("{} already exists; pass --force to replace it", path.display());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    std::fs::write(&path, EXAMPLE).with_context(|| format!("write {}", path.display()))?;
    println!("wrote an example config to {}; edit its [[source]] entries for this host", path.display());
    Ok(ExitCode::SUCCESS)
}
