//! `rpger-store backup`.

use crate::args::{parse_duration, parse_time, BackupArgs, Cli};
use crate::output;
use crate::progress::Bar;
use anyhow::{anyhow, bail, Result};
use rpger_engine::backup::{self, BackupOptions, SourceInput, SourceSpec};
use serde_json::json;
use std::process::ExitCode;

/// Splits `NAME=PATH`; `-` as PATH means stdin (allowed once), `cmd:COMMAND` a command's stdout.
fn parse_sources(a: &BackupArgs) -> Result<Vec<SourceSpec>> {
    let mut out = vec![];
    let mut stdin_used = false;
    for s in &a.sources {
        let (name, path) = s.split_once('=').ok_or_else(|| anyhow!("--source {s:?}: expected NAME=PATH or NAME=-"))?;
        let input = if path == "-" {
            if stdin_used {
                bail!("--source {s:?}: only one source can read stdin");
            }
            stdin_used = true;
            SourceInput::Stream { file_name: a.stdin_name.clone(), reader: Box::new(std::io::stdin()) }
        } else if path.starts_with("redis://") {
            SourceInput::Redis(rpger_engine::sources::redis::RedisSpec::parse(path)?)
        } else if let Some(command) = path.strip_prefix("cmd:") {
            if command.trim().is_empty() {
                bail!("--source {s:?}: empty command");
            }
            let file_name = if a.stdin_name == "stdin" { "stdout".to_string() } else { a.stdin_name.clone() };
            SourceInput::Command { file_name, command: command.to_string() }
        } else if path.is_empty() {
            bail!("--source {s:?}: empty path");
        } else {
            SourceInput::Path(path.into())
        };
        out.push(SourceSpec { name: name.to_string(), input });
    }
    Ok(out)
}

pub fn run(cli: &Cli, a: &BackupArgs) -> Result<ExitCode> {
    let store = super::open_store(cli)?;
    let labels = a
        .labels
        .iter()
        .map(|l| l.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| anyhow!("--label {l:?}: expected KEY=VALUE")))
        .collect::<Result<Vec<_>>>()?;
    let opts = BackupOptions {
        sources: parse_sources(a)?,
        local_time: a.local_time,
        time_unix_ns: a.time.as_deref().map(parse_time).transpose().map_err(|e| anyhow!("--time: {e}"))?,
        labels,
        lock_wait: parse_duration(&a.lock_wait).map_err(|e| anyhow!("--lock-wait: {e}"))?,
    };
    let bar = Bar::new(cli.json);
    let r = backup::backup(&store, opts, &bar)?;
    let s = &r.snapshot;
    if cli.json {
        output::print_json(json!({
            "command": "backup",
            "snapshot": s.name,
            "sources": s.sources.iter().map(|x| json!({"name": x.name, "logical_bytes": x.logical_bytes, "entries": x.entries, "manifest": x.manifest.to_hex()})).collect::<Vec<_>>(),
            "bytes_read": r.bytes_read, "chunks": r.chunks, "new_chunks": r.new_chunks,
            "new_raw_bytes": s.new_raw_bytes, "new_stored_bytes": s.new_stored_bytes, "packs": r.packs,
            "skipped": r.skipped,
        }));
    } else {
        for sk in &r.skipped {
            eprintln!("rpger-store: warning: skipped {sk}");
        }
        println!(
            "snapshot {} committed: {} read, {} of {} chunks new, {} new data stored ({} before compression)",
            s.name,
            output::bytes(r.bytes_read),
            r.new_chunks,
            r.chunks,
            output::bytes(s.new_stored_bytes),
            output::bytes(s.new_raw_bytes)
        );
    }
    Ok(ExitCode::SUCCESS)
}
