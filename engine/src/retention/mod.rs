//! Retention: which snapshots to keep ([`policy`], pure), forgetting the others ([`forget`]) and
//! reclaiming the space they held ([`prune`]).

pub mod policy;
pub mod prune;

use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use crate::store::lock::{self, LockMode};
use crate::store::Store;
use policy::{Decision, Policy, SnapInfo};
use std::time::Duration;

/// Applies `policy` to every snapshot and, unless `dry_run`, deletes the snapshot files it does
/// not keep. Returns every decision (kept with reasons, or forgotten).
///
/// # Errors
/// An unreadable snapshot (nothing is deleted then: a policy over a partial list could remove
/// the wrong ones), a held lock, or an I/O error naming the file.
pub fn forget(store: &Store, policy: &Policy, dry_run: bool, lock_wait: Duration) -> Result<Vec<Decision>> {
    let _lock = lock::acquire(&store.locks_dir(), LockMode::Exclusive, "forget", lock_wait)?;
    let mut infos = vec![];
    for name in store.list_snapshots()? {
        let s = store.read_snapshot(&name).map_err(|e| e.context("forget refuses to run while a snapshot is unreadable"))?;
        let partial = s.labels.iter().any(|(k, _)| k == "partial");
        // A partial snapshot belongs to the group of the sources it was meant to have, so a newer
        // complete one supersedes it.
        let failed = s.labels.iter().filter_map(|(k, _)| k.strip_suffix(".error")).map(String::from);
        let mut sources: Vec<String> = s.sources.iter().map(|x| x.name.clone()).chain(failed).collect();
        sources.sort();
        sources.dedup();
        infos.push(SnapInfo { name, time: chrono::DateTime::from_timestamp_nanos(s.time_unix_ns), sources, partial });
    }
    let decisions = policy::plan(&infos, policy);
    if !dry_run {
        let dir = store.root().join("snapshots");
        for d in decisions.iter().filter(|d| !d.keep) {
            let p = store.snapshot_path(&d.name);
            std::fs::remove_file(&p).at("remove snapshot", &p)?;
        }
        if decisions.iter().any(|d| !d.keep) {
            fsutil::fsync_dir(&dir).map_err(|e: Error| e.context("forget"))?;
        }
    }
    Ok(decisions)
}
