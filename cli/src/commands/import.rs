//! `rpger-store import-legacy`.

use crate::args::{Cli, ImportArgs};
use crate::output;
use crate::progress::Bar;
use anyhow::Result;
use rpger_engine::backup::{self, BackupOptions, SourceInput, SourceSpec};
use rpger_engine::legacy;
use serde_json::json;
use std::process::ExitCode;

pub fn run(cli: &Cli, a: &ImportArgs) -> Result<ExitCode> {
    let store = super::open_store(cli)?;
    let folders = legacy::find(&a.paths)?;
    let existing = store.list_snapshots()?;
    let bar = Bar::new(cli.json);
    let mut done = vec![];
    for f in folders {
        if existing.contains(&f.name) {
            if !cli.json {
                println!("{}: already imported, skipped", f.name);
            }
            done.push(json!({"folder": f.path, "snapshot": f.name, "skipped": true}));
            continue;
        }
        let sources = f.sources.iter().map(|s| SourceSpec { name: s.clone(), input: SourceInput::Path(f.path.join(s)) }).collect();
        let opts = BackupOptions {
            time_unix_ns: Some(f.time_unix_ns),
            labels: vec![("imported_from".into(), f.path.display().to_string())],
            ..BackupOptions::new(sources)
        };
        let r = backup::backup(&store, opts, &bar).map_err(|e| e.context(format!("importing {}", f.path.display())))?;
        if !cli.json {
            println!(
                "{} -> snapshot {} ({}: {} read, {} new stored)",
                f.path.display(),
                r.snapshot.name,
                f.sources.join(","),
                output::bytes(r.bytes_read),
                output::bytes(r.snapshot.new_stored_bytes)
            );
        }
        done.push(json!({"folder": f.path, "snapshot": r.snapshot.name, "skipped": false, "bytes_read": r.bytes_read, "new_stored_bytes": r.snapshot.new_stored_bytes}));
    }
    if cli.json {
        output::print_json(json!({"command": "import-legacy", "imported": done}));
    }
    Ok(ExitCode::SUCCESS)
}
