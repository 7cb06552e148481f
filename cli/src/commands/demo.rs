//! `rpger-store demo`: a self-contained run of the main job on generated data.

use crate::args::{Cli, DemoArgs};
use crate::output;
use crate::progress::Bar;
use anyhow::{bail, Context, Result};
use rpger_engine::backup::{self, BackupOptions};
use rpger_engine::demo::{night_sources, Dataset};
use rpger_engine::restore::{self, RestoreOptions};
use rpger_engine::stats;
use rpger_engine::store::{InitOptions, Store};
use rpger_engine::verify::{self, Selection, VerifyOptions};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// BLAKE3 of every regular file under `dir`, by relative path.
fn tree_hashes(dir: &Path) -> Result<Vec<(String, String)>> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("read {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).with_context(|| format!("read {}", p.display()))?;
                out.push((p.strip_prefix(dir)?.display().to_string(), blake3::hash(&bytes).to_hex().to_string()));
            }
        }
    }
    out.sort();
    Ok(out)
}

pub fn run(cli: &Cli, a: &DemoArgs) -> Result<ExitCode> {
    let tmp;
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir().context("create a temporary directory")?;
            tmp.path().to_path_buf()
        }
    };
    let store_dir = dir.join("store");
    let store = Store::init(&store_dir, InitOptions::default())?;
    let mut data = Dataset::new(42, a.size);
    let bar = Bar::new(cli.json);
    let mut nights = vec![];
    let mut last = dir.clone();
    for night in 1..=a.nights.max(1) {
        if night > 1 {
            data.advance();
        }
        let nd = dir.join(format!("data/night-{night}"));
        let bytes = data.write(&nd)?;
        let t = Instant::now();
        let r = backup::backup(&store, BackupOptions::new(night_sources(&nd)), &bar)?;
        let secs = t.elapsed().as_secs_f64();
        if !cli.json {
            println!(
                "night {night}: backed up {} in {:.2}s ({:.0} MiB/s) as {}: {} new data stored",
                output::bytes(bytes),
                secs,
                bytes as f64 / 1048576.0 / secs.max(1e-9),
                r.snapshot.name,
                output::bytes(r.snapshot.new_stored_bytes)
            );
        }
        nights.push(json!({"night": night, "snapshot": r.snapshot.name, "bytes": bytes, "seconds": secs, "new_stored_bytes": r.snapshot.new_stored_bytes}));
        last = nd;
    }
    let v = verify::verify(
        &store,
        &VerifyOptions {
            selection: Selection::All,
            deep: true,
            files: false,
            subset: None,
            lock_wait: Duration::ZERO,
            dumps: true,
            scratch: Some(dir.clone()),
        },
        &bar,
    )?;
    if !v.is_sound() {
        bail!("verify --deep --dumps found damage: {}", v.summary());
    }
    if !cli.json {
        println!("{}", v.summary());
    }
    let target = dir.join("restore");
    let r = restore::restore(
        &store,
        &RestoreOptions { snapshot: "latest".into(), target: target.clone(), only: None, overwrite: false, lock_wait: Duration::ZERO },
        &bar,
    )?;
    if !r.failures.is_empty() {
        bail!("restore failed for {} entries: {}", r.failures.len(), r.failures.join("; "));
    }
    let identical = tree_hashes(&last)? == tree_hashes(&target)?;
    if !identical {
        bail!("restored tree {} differs from {}", target.display(), last.display());
    }
    let s = stats::stats(&store)?;
    if cli.json {
        output::print_json(json!({
            "command": "demo", "nights": nights, "restore_identical": identical, "verify": v.summary(),
            "logical_bytes": s.logical_bytes, "store_bytes": s.store_bytes,
            "dedup_ratio": s.dedup_ratio, "compression_ratio": s.compression_ratio, "total_ratio": s.total_ratio,
        }));
    } else {
        println!("restored the latest snapshot into {}: {} files, identical to the source", target.display(), r.files);
        println!(
            "{} logical in {} on disk: dedup {:.2}x x compression {:.2}x = {:.2}x overall",
            output::bytes(s.logical_bytes),
            output::bytes(s.store_bytes),
            s.dedup_ratio,
            s.compression_ratio,
            s.total_ratio
        );
    }
    Ok(ExitCode::SUCCESS)
}
