//! `rpger-store test-restore`.

use crate::args::{parse_duration, Cli, TestRestoreArgs};
use crate::output;
use crate::progress::Bar;
use anyhow::{anyhow, bail, Result};
use rpger_engine::testrestore::{self, Outcome, TestRestoreOptions};
use serde_json::json;
use std::process::ExitCode;

pub fn run(cli: &Cli, a: &TestRestoreArgs) -> Result<ExitCode> {
    let opts = TestRestoreOptions {
        snapshot: a.snapshot.clone(),
        only: a.only.clone(),
        redis_server: a.redis_server.clone(),
        redis_image: a.redis_image.clone(),
        scratch: a.scratch_dir.clone(),
        timeout: parse_duration(&a.timeout).map_err(|e| anyhow!("--timeout: {e}"))?,
        lock_wait: parse_duration(&a.lock_wait).map_err(|e| anyhow!("--lock-wait: {e}"))?,
    };
    let log_dir = super::log_dir(cli, &a.log_dir)?;
    let store = super::open_store(cli)?;
    let (snapshot, results) = match testrestore::test_restore(&store, &opts, &Bar::new(cli.json)) {
        Ok(r) => r,
        Err(e) => {
            super::log_line(&log_dir, "backup-verify.log", &format!("test-restore snapshot={} result=error: {e:#}", a.snapshot));
            return Err(e.into());
        }
    };
    let failed = results.iter().filter(|r| matches!(r.outcome, Outcome::Failed(_))).count();
    let passed = results.iter().filter(|r| matches!(r.outcome, Outcome::Passed(_))).count();
    let result = match (failed, passed) {
        (0, 0) => "nothing tested".to_string(),
        (0, p) => format!("ok: {p} source(s) loaded"),
        (f, _) => format!("FAILED: {f} source(s)"),
    };
    super::log_line(&log_dir, "backup-verify.log", &format!("test-restore snapshot={snapshot} result={result}"));
    if cli.json {
        output::print_json(json!({
            "command": "test-restore", "ok": failed == 0 && passed > 0, "snapshot": snapshot,
            "sources": results.iter().map(|r| {
                let (w, text) = word_of(&r.outcome);
                json!({"source": r.source, "result": w, "what": text})
            }).collect::<Vec<_>>(),
        }));
    } else {
        for r in &results {
            let (w, text) = word_of(&r.outcome);
            println!("test-restore {w}: {snapshot} {}: {text}", r.source);
        }
    }
    if failed > 0 {
        return Ok(ExitCode::from(1));
    }
    if passed == 0 {
        bail!("test-restore of {snapshot}: no source could be loaded by this build (see above)");
    }
    Ok(ExitCode::SUCCESS)
}

fn word_of(o: &Outcome) -> (&'static str, &str) {
    match o {
        Outcome::Passed(w) => ("ok", w),
        Outcome::Failed(w) => ("FAILED", w),
        Outcome::NotTested(w) => ("not tested", w),
    }
}
