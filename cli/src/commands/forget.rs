//! `rpger-store forget [--prune]`.

use crate::args::{parse_duration, Cli, ForgetArgs};
use crate::output;
use anyhow::{anyhow, Result};
use rpger_engine::retention::{self, policy};
use serde_json::json;
use std::process::ExitCode;

pub fn run(cli: &Cli, a: &ForgetArgs) -> Result<ExitCode> {
    let store = super::open_store(cli)?;
    let mut p = policy::Policy {
        keep_last: a.keep_last.unwrap_or(0),
        keep_daily: a.keep_daily.unwrap_or(0),
        keep_weekly: a.keep_weekly.unwrap_or(0),
        keep_monthly: a.keep_monthly.unwrap_or(0),
        keep_within_secs: a.keep_within.as_deref().map(policy::parse_within).transpose().map_err(|e| anyhow!("--keep-within: {e}"))?,
    };
    let explicit =
        a.keep_last.is_some() || a.keep_daily.is_some() || a.keep_weekly.is_some() || a.keep_monthly.is_some() || a.keep_within.is_some();
    if !explicit {
        p = policy::Policy::DEFAULT;
    }
    let wait = parse_duration(&a.lock_wait).map_err(|e| anyhow!("--lock-wait: {e}"))?;
    let decisions = retention::forget(&store, &p, a.dry_run, wait)?;
    let pruned = if a.prune && !a.dry_run {
        Some(super::prune::execute(&store, &super::prune::options(false, a.max_repack_ratio, &a.lock_wait)?)?)
    } else if a.prune {
        Some(super::prune::execute(&store, &super::prune::options(true, a.max_repack_ratio, &a.lock_wait)?)?)
    } else {
        None
    };
    let removed = decisions.iter().filter(|d| !d.keep).count();
    if cli.json {
        output::print_json(json!({
            "command": "forget", "dry_run": a.dry_run,
            "kept": decisions.iter().filter(|d| d.keep).map(|d| json!({"name": d.name, "group": d.group, "reasons": d.reasons})).collect::<Vec<_>>(),
            "removed": decisions.iter().filter(|d| !d.keep).map(|d| json!({"name": d.name, "group": d.group})).collect::<Vec<_>>(),
            "prune": pruned.as_ref().map(super::prune::to_json),
        }));
    } else {
        let mut group = "";
        for d in &decisions {
            if d.group != group {
                group = &d.group;
                println!("sources {group}:");
            }
            if d.keep {
                println!("  keep    {}  ({})", d.name, d.reasons.join(", "));
            } else {
                println!("  {}  {}", if a.dry_run { "would remove" } else { "remove" }, d.name);
            }
        }
        println!(
            "{} snapshot(s) kept, {removed} {}",
            decisions.len() - removed,
            if a.dry_run { "would be removed (dry run)" } else { "removed" }
        );
        if let Some(r) = &pruned {
            super::prune::print_human(r);
        }
    }
    Ok(ExitCode::SUCCESS)
}
