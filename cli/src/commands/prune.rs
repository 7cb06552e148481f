//! `rpger-store prune`.

use crate::args::{parse_duration, Cli, PruneArgs};
use crate::output;
use anyhow::{anyhow, Result};
use rpger_engine::retention::prune::{self, PruneOptions, PruneReport};
use rpger_engine::store::Store;
use serde_json::{json, Value};
use std::process::ExitCode;

/// Test hook (crash-safety tests): abort prune after this many protocol steps.
const CRASH_ENV: &str = "RPGER_STORE_TEST_CRASH_AFTER";

pub fn options(dry_run: bool, max_repack_ratio: f64, lock_wait: &str) -> Result<PruneOptions> {
    Ok(PruneOptions {
        dry_run,
        max_repack_ratio,
        lock_wait: parse_duration(lock_wait).map_err(|e| anyhow!("--lock-wait: {e}"))?,
        crash_after_steps: std::env::var(CRASH_ENV).ok().and_then(|v| v.parse().ok()),
    })
}

pub fn execute(store: &Store, opts: &PruneOptions) -> Result<PruneReport> {
    Ok(prune::prune(store, opts)?)
}

pub fn to_json(r: &PruneReport) -> Value {
    json!({
        "dry_run": r.dry_run, "snapshots": r.snapshots, "live_chunks": r.live_chunks,
        "packs_deleted": r.packs_deleted, "packs_repacked": r.packs_repacked, "packs_written": r.packs_written, "packs_kept": r.packs_kept,
        "unused_bytes": r.unused_bytes, "repacked_bytes": r.repacked_bytes, "unused_left": r.unused_left, "rebased": r.rebased,
        "segments_replaced": r.segments_replaced, "bytes_before": r.bytes_before, "bytes_after": r.bytes_after, "reclaimed_bytes": r.reclaimed(),
    })
}

pub fn print_human(r: &PruneReport) {
    let verb = if r.dry_run { "would" } else { "did" };
    println!(
        "prune {verb}: delete {} pack(s) with nothing live, repack {} pack(s) ({} live copied into {} new), keep {}; {} of unused data{}",
        r.packs_deleted,
        r.packs_repacked,
        output::bytes(r.repacked_bytes),
        r.packs_written,
        r.packs_kept,
        output::bytes(r.unused_bytes),
        if r.unused_left > 0 { format!(", {} left unused in kept packs", output::bytes(r.unused_left)) } else { String::new() }
    );
    println!(
        "store: {} -> {}{} ({} reclaimed); {} live chunks in {} snapshot(s)",
        output::bytes(r.bytes_before),
        output::bytes(r.bytes_after),
        if r.dry_run { " (estimate)" } else { "" },
        output::bytes(r.reclaimed()),
        r.live_chunks,
        r.snapshots
    );
}

pub fn run(cli: &Cli, a: &PruneArgs) -> Result<ExitCode> {
    let store = super::open_store(cli)?;
    let r = execute(&store, &options(a.dry_run, a.max_repack_ratio, &a.lock_wait)?)?;
    if cli.json {
        let mut v = to_json(&r);
        v["command"] = json!("prune");
        output::print_json(v);
    } else {
        print_human(&r);
    }
    Ok(ExitCode::SUCCESS)
}
