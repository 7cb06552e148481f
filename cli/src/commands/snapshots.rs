//! `rpger-store snapshots`.

use crate::args::Cli;
use crate::output;
use anyhow::Result;
use rpger_engine::stats;
use serde_json::json;
use std::process::ExitCode;

pub fn run(cli: &Cli) -> Result<ExitCode> {
    let store = super::open_store(cli)?;
    let snaps = stats::list_snapshots(&store)?;
    if cli.json {
        let list: Vec<_> = snaps
            .iter()
            .map(|s| {
                json!({
                    "name": s.name, "time": output::time(s.time_unix_ns), "hostname": s.hostname,
                    "sources": s.sources.iter().map(|x| json!({"name": x.name, "logical_bytes": x.logical_bytes, "entries": x.entries})).collect::<Vec<_>>(),
                    "logical_bytes": s.logical_bytes(), "new_stored_bytes": s.new_stored_bytes, "new_raw_bytes": s.new_raw_bytes,
                    "labels": s.labels.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect();
        output::print_json(json!({"command": "snapshots", "snapshots": list}));
    } else if snaps.is_empty() {
        println!("no snapshots in {}", store.root().display());
    } else {
        println!("{:<24} {:<21} {:>11} {:>11}  sources", "name", "time (UTC)", "logical", "new stored");
        for s in &snaps {
            let names: Vec<_> = s.sources.iter().map(|x| x.name.as_str()).collect();
            println!(
                "{:<24} {:<21} {:>11} {:>11}  {}",
                s.name,
                output::time(s.time_unix_ns),
                output::bytes(s.logical_bytes()),
                output::bytes(s.new_stored_bytes),
                names.join(",")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
