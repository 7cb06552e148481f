//! Issue 2, must-show 3: SIGKILL at many points of a backup never damages the store: every
//! earlier snapshot restores exactly and the next backup succeeds.

use crate::common::*;
use rpger_engine::demo::Dataset;
use std::path::Path;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn sources(dir: &Path) -> Vec<String> {
    ["mongodb", "redis", "chroma"].iter().flat_map(|s| ["--source".to_string(), format!("{s}={}", dir.join(s).display())]).collect()
}

/// Restores `names` and compares each with the night it was taken from.
fn check(store: &Path, t: &Path, names: &[(String, PathBuf)]) {
    for (name, night) in names {
        restores_exactly(store, t, name, night);
    }
}

#[test]
fn sigkill_at_many_points_of_a_backup_leaves_a_sound_store() {
    let t = tempfile::tempdir().unwrap();
    let store = init_store(t.path());
    let mut data = Dataset::new(11, 16_000_000);
    let args = |dir: &Path| {
        let mut a = vec!["--threads".to_string(), "1".into(), "backup".into()];
        a.extend(sources(dir));
        a
    };
    let night = t.path().join("night-0");
    data.write(&night).unwrap();
    ok(&store, &args(&night));
    let mut committed: Vec<(String, PathBuf)> = vec![(snapshot_names(&store)[0].clone(), night)];
    // How long does an undisturbed incremental night take (median of 3)? Kill points are
    // spread over it.
    let mut times = vec![];
    for k in 1..=3 {
        data.advance();
        let night = t.path().join(format!("night-{k}"));
        data.write(&night).unwrap();
        let start = Instant::now();
        ok(&store, &args(&night));
        times.push(start.elapsed());
        committed.push((snapshot_names(&store).pop().unwrap(), night));
    }
    times.sort();
    // The kill points are fractions of an undisturbed run. Its length is re-learnt from every
    // run that ends before its kill point, because other tests share the machine and a
    // calibration taken under their load can be twice what a later run needs.
    let mut full = times[1];
    let (mut finished, mut killed, mut i) = (0, 0, 0u32);
    while i < 16 || (killed < 8 && i < 48) {
        // A new night each time, so every run writes new packs, index and manifests.
        data.advance();
        let night = t.path().join(format!("night-k{i}"));
        data.write(&night).unwrap();
        let before = snapshot_names(&store);
        let mut child = bin().arg("--store").arg(&store).args(args(&night)).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        // 0 to 1.25 x the undisturbed time: from start-up through the commit to a finished run.
        let kill_at = full * (i % 16) / 12;
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                full = start.elapsed();
                break status;
            }
            if start.elapsed() >= kill_at {
                let _ = child.kill(); // SIGKILL
                break child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        i += 1;
        let after = snapshot_names(&store);
        let new: Vec<_> = after.iter().filter(|n| !before.contains(n)).cloned().collect();
        assert!(new.len() <= 1, "one run committed {} snapshots", new.len());
        if status.success() {
            finished += 1;
            assert_eq!(new.len(), 1);
        } else {
            killed += 1;
        }
        if let Some(n) = new.into_iter().next() {
            committed.push((n, night.clone()));
        }
        // The first and the newest snapshot restore exactly after every kill...
        check(&store, t.path(), &[committed[0].clone(), committed[committed.len() - 1].clone()]);
        // ...and the next backup succeeds and restores exactly.
        ok(&store, &args(&night));
        committed.push((snapshot_names(&store).pop().unwrap(), night));
        check(&store, t.path(), &[committed[committed.len() - 1].clone()]);
    }
    eprintln!(
        "CRASH REPORT: undisturbed backup {:?} at first, {full:?} at last; {killed} of {i} runs killed mid-way, {finished} finished before the kill",
        times[1]
    );
    assert!(killed >= 8, "only {killed} runs were killed mid-way; the kill points missed the backup");
    // Every snapshot ever committed still restores exactly.
    check(&store, t.path(), &committed);
}
