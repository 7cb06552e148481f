//! `rpger-store verify`.

use crate::args::{parse_duration, parse_subset, Cli, VerifyArgs};
use crate::output;
use crate::progress::Bar;
use anyhow::{anyhow, Result};
use rpger_engine::verify::{self, Selection, VerifyOptions, VerifyReport};
use serde_json::json;
use std::process::ExitCode;

pub fn run(cli: &Cli, a: &VerifyArgs) -> Result<ExitCode> {
    let selection = match (&a.snapshot, a.all) {
        (_, true) => Selection::All,
        (Some(s), false) if s != "latest" => Selection::Named(s.clone()),
        _ => Selection::Latest,
    };
    let opts = VerifyOptions {
        selection,
        deep: a.deep,
        files: a.files,
        subset: a.read_data_subset.as_deref().map(parse_subset).transpose().map_err(|e| anyhow!(e))?,
        lock_wait: parse_duration(&a.lock_wait).map_err(|e| anyhow!("--lock-wait: {e}"))?,
        dumps: a.dumps,
        scratch: a.scratch_dir.clone(),
    };
    let mode = match (a.deep, &a.read_data_subset) {
        (true, Some(s)) => format!("deep subset {s}"),
        (true, None) if a.files => "deep+files".to_string(),
        (true, None) => "deep".to_string(),
        _ => "quick".to_string(),
    };
    let mode = if a.dumps { format!("{mode}+dumps") } else { mode };
    let log_dir = super::log_dir(cli, &a.log_dir)?;
    let result = super::open_store(cli).and_then(|store| Ok(verify::verify(&store, &opts, &Bar::new(cli.json))?));
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            super::log_line(&log_dir, "backup-verify.log", &format!("verify snapshots=- mode={mode} bytes=0 result=error: {e:#}"));
            return Err(e);
        }
    };
    let result = if r.is_sound() {
        "ok".to_string()
    } else {
        format!("damage: {} object(s), {} file(s), {} dump(s)", r.problems.len(), r.affected.len(), r.unsound_dumps())
    };
    super::log_line(
        &log_dir,
        "backup-verify.log",
        &format!("verify snapshots={} mode={mode} bytes={} result={result}", r.snapshots.join(","), r.bytes_checked),
    );
    if cli.json {
        print_json(&r, &mode);
    } else {
        print_human(&r);
    }
    Ok(if r.is_sound() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn print_human(r: &VerifyReport) {
    for p in &r.problems {
        println!("damaged: {}: {}", p.object, p.what);
        for d in &p.dependents {
            println!("    used by {d}");
        }
    }
    for f in &r.affected {
        if f.unreadable > 0 {
            println!("lost: {} {}/{}: {} of {} chunks unreadable ({})", f.snapshot, f.source, f.path, f.unreadable, f.chunks, f.reason);
        } else {
            println!("lost: {} {}/{}: {}", f.snapshot, f.source, f.path, f.reason);
        }
    }
    for d in &r.dumps {
        match &d.outcome {
            Ok(what) => println!("dump ok: {} {}/{} ({}): {what}", d.snapshot, d.source, d.path, d.kind),
            Err(why) => println!("dump BAD: {} {}/{} ({}): {why}", d.snapshot, d.source, d.path, d.kind),
        }
    }
    for n in &r.notes {
        println!("note: {n}");
    }
    println!("{}", r.summary());
}

fn print_json(r: &VerifyReport, mode: &str) {
    output::print_json(json!({
        "command": "verify", "ok": r.is_sound(), "mode": mode, "snapshots": r.snapshots,
        "packs_checked": r.packs_checked, "packs_read": r.packs_read.iter().map(|p| p.to_hex()).collect::<Vec<_>>(),
        "chunks_checked": r.chunks_checked, "files_checked": r.files_checked, "bytes_checked": r.bytes_checked,
        "problems": r.problems.iter().map(|p| json!({"object": p.object, "what": p.what, "dependents": p.dependents})).collect::<Vec<_>>(),
        "affected": r.affected.iter().map(|f| json!({
            "snapshot": f.snapshot, "source": f.source, "path": f.path, "unreadable_chunks": f.unreadable, "chunks": f.chunks, "reason": f.reason,
        })).collect::<Vec<_>>(),
        "dumps": r.dumps.iter().map(|d| json!({
            "snapshot": d.snapshot, "source": d.source, "path": d.path, "kind": d.kind,
            "ok": d.outcome.is_ok(), "what": match &d.outcome { Ok(s) | Err(s) => s },
        })).collect::<Vec<_>>(),
        "notes": r.notes, "summary": r.summary(),
    }));
}
