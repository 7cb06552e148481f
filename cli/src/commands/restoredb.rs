//! `rpger-store restore-db`: a snapshot back into the live databases, source by source, after
//! showing the plan; nothing is touched without `--yes` or when any source cannot be put back.

use crate::args::{parse_duration, Cli, RestoreDbArgs};
use crate::output;
use crate::progress::Bar;
use anyhow::{anyhow, bail, Result};
use rpger_engine::dbrestore::{self, DbRestoreOptions, DbTarget};
use serde_json::json;
use std::path::PathBuf;
use std::process::ExitCode;

/// Where replaced data is kept when neither `--keep-dir` nor anything else says.
const DEFAULT_KEEP_DIR: &str = "/data2/rpger/before-restore";

pub fn run(cli: &Cli, a: &RestoreDbArgs) -> Result<ExitCode> {
    let stop_grace = parse_duration(&a.stop_timeout).map_err(|e| anyhow!("--stop-timeout: {e}"))?;
    let timeout = parse_duration(&a.timeout).map_err(|e| anyhow!("--timeout: {e}"))?;
    let lock_wait = parse_duration(&a.lock_wait).map_err(|e| anyhow!("--lock-wait: {e}"))?;
    let log_dir = super::log_dir(cli, &a.log_dir)?;
    let store = super::open_store(cli)?;
    let specs = if a.sources.is_empty() {
        super::backup::config_sources(&super::config(cli)?, &a.only)?
    } else {
        let specs = super::backup::parse_source_args(&a.sources, "stdin")?;
        for o in &a.only {
            if !specs.iter().any(|s| &s.name == o) {
                bail!("--only {o}: no --source of that name");
            }
        }
        specs.into_iter().filter(|s| a.only.is_empty() || a.only.contains(&s.name)).collect()
    };
    if specs.is_empty() {
        bail!("no sources to restore: give --source NAME=SPEC (as for backup) or [[source]] entries in the config");
    }
    let snap = store.read_snapshot(&a.snapshot)?;
    // Every source is checked before any database is touched.
    let mut plan = vec![];
    let mut refused = vec![];
    for s in &specs {
        if !snap.sources.iter().any(|x| x.name == s.name) {
            let held: Vec<_> = snap.sources.iter().map(|x| x.name.as_str()).collect();
            refused.push(format!("snapshot {} has no source {} (it holds {})", snap.name, s.name, held.join(", ")));
            continue;
        }
        let checked = |t: DbTarget| t.check().map(|()| t).map_err(|e| e.context(format!("source {}", s.name)));
        match DbTarget::for_source(&s.name, &s.input).and_then(checked) {
            Ok(t) => plan.push((s.name.clone(), t)),
            Err(e) => refused.push(e.to_string()),
        }
    }
    if !refused.is_empty() {
        bail!("nothing was touched: {}", refused.join("; "));
    }
    if !cli.json {
        println!("restore-db: snapshot {} into the live databases:", snap.name);
        for (name, t) in &plan {
            println!("  {name}: {}", t.describe());
        }
    }
    if !a.yes {
        if cli.json {
            output::print_json(json!({
                "command": "restore-db", "ok": false, "snapshot": snap.name, "done": false,
                "plan": plan.iter().map(|(n, t)| json!({"source": n, "what": t.describe()})).collect::<Vec<_>>(),
            }));
        }
        bail!("this replaces live data: nothing was touched; run again with --yes to do it");
    }
    let keep_dir = a.keep_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_KEEP_DIR));
    let bar = Bar::new(cli.json);
    let mut results = vec![];
    for (name, target) in plan {
        let opts = DbRestoreOptions {
            snapshot: snap.name.clone(),
            source: name.clone(),
            target,
            scratch: a.scratch_dir.clone(),
            keep_dir: keep_dir.clone(),
            stop_grace,
            timeout,
            lock_wait,
        };
        let r = dbrestore::restore_into(&store, &opts, &bar);
        let line = match &r {
            Ok(rep) => format!("restore-db snapshot={} source={name} result=ok: {}", snap.name, rep.done),
            Err(e) => format!("restore-db snapshot={} source={name} result=FAILED: {e:#}", snap.name),
        };
        super::log_line(&log_dir, "restore.log", &line);
        if !cli.json {
            match &r {
                Ok(rep) => {
                    println!("restored {name}: {}", rep.done);
                    if let Some(k) = &rep.kept {
                        println!("  what it replaced is kept in {}", k.display());
                    }
                    for w in &rep.warnings {
                        println!("  note: {w}");
                    }
                }
                Err(e) => eprintln!("rpger-store: FAILED {name}: {e:#}"),
            }
        }
        results.push((name, r));
    }
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    if cli.json {
        output::print_json(json!({
            "command": "restore-db", "ok": failed == 0, "snapshot": snap.name, "done": true,
            "sources": results.iter().map(|(n, r)| match r {
                Ok(rep) => json!({"source": n, "result": "ok", "what": rep.done, "kept": rep.kept, "warnings": rep.warnings}),
                Err(e) => json!({"source": n, "result": "failed", "error": format!("{e:#}")}),
            }).collect::<Vec<_>>(),
        }));
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}
