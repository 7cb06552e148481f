//! `rpger-store restore`.

use crate::args::{parse_duration, Cli, RestoreArgs};
use crate::output;
use crate::progress::Bar;
use anyhow::{anyhow, Result};
use rpger_engine::restore::{self, RestoreOptions};
use serde_json::json;
use std::process::ExitCode;

pub fn run(cli: &Cli, a: &RestoreArgs) -> Result<ExitCode> {
    let store = super::open_store(cli)?;
    let opts = RestoreOptions {
        snapshot: a.snapshot.clone(),
        target: a.target.clone(),
        only: a.only.clone(),
        overwrite: a.overwrite,
        lock_wait: parse_duration(&a.lock_wait).map_err(|e| anyhow!("--lock-wait: {e}"))?,
    };
    let bar = Bar::new(cli.json);
    let r = restore::restore(&store, &opts, &bar)?;
    let ok = r.failures.is_empty();
    if cli.json {
        output::print_json(json!({
            "command": "restore", "ok": ok, "failures": r.failures, "snapshot": r.snapshot, "target": a.target, "sources": r.sources,
            "files": r.files, "dirs": r.dirs, "symlinks": r.symlinks, "hardlinks": r.hardlinks, "bytes": r.bytes,
            "owners_restored": r.owners_restored,
        }));
    } else {
        println!(
            "restored {} ({}) into {}: {} files, {} dirs, {} symlinks, {} hard links, {}",
            r.snapshot,
            r.sources.join(","),
            a.target.display(),
            r.files,
            r.dirs,
            r.symlinks,
            r.hardlinks,
            output::bytes(r.bytes)
        );
        for f in &r.failures {
            eprintln!("rpger-store: error: could not restore {f}");
        }
        if !ok {
            eprintln!(
                "rpger-store: error: {} entries of {} could not be restored (see above); everything else was",
                r.failures.len(),
                r.snapshot
            );
        }
        if !r.owners_restored {
            eprintln!("rpger-store: note: not running as root, so file owners (uid/gid) were not restored");
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
