//! Issue 4: forget policies, prune reclaiming space, crash safety at every step of prune, and
//! backups running against prune.

use crate::common::*;
use rpger_engine::demo::Dataset;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;

fn day(n: u32) -> String {
    let t = chrono::DateTime::from_timestamp(1_772_330_400, 0).unwrap() + chrono::Duration::days(n as i64); // 2026-03-01 02:00 UTC
    t.format("%Y-%m-%d_%H-%M-%S").to_string()
}

fn backup_night(store: &Path, night: &Path, time: &str) -> String {
    let mut args = vec!["--json".to_string(), "backup".into(), "--time".into(), time.into()];
    for s in ["mongodb", "redis", "chroma"] {
        args.extend(["--source".to_string(), format!("{s}={}", night.join(s).display())]);
    }
    ok(store, &args).json()["snapshot"].as_str().unwrap().to_string()
}

fn store_bytes(store: &Path) -> u64 {
    ok(store, &["--json", "stats"]).json()["store_bytes"].as_u64().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp").arg("-a").arg(from).arg(to).status().unwrap();
    assert!(st.success());
}

#[test]
fn forget_keeps_the_newest_of_each_of_the_last_7_days_and_dry_run_changes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let store = init_store(t.path());
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    // 20 days, two backups on some days, none on days 15 and 16
    let mut names = vec![];
    for d in 0..20u32 {
        if d == 15 || d == 16 {
            continue;
        }
        names.push(
            ok(&store, &["--json", "backup", "--time", &day(d), "--source", &format!("db={}", src.display())]).json()["snapshot"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        if d % 3 == 0 {
            let later = day(d).replace("_02-00-00", "_14-30-00");
            names.push(
                ok(&store, &["--json", "backup", "--time", &later, "--source", &format!("db={}", src.display())]).json()["snapshot"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
    }
    // a manual redis-only backup must not push nightly ones out
    let manual = ok(
        &store,
        &["--json", "backup", "--time", &day(19).replace("02-00-00", "20-00-00"), "--source", &format!("redis={}", src.display())],
    )
    .json();
    let before = fs::read_dir(store.join("snapshots")).unwrap().count();
    let dry = ok(&store, &["--json", "forget", "--dry-run"]).json();
    assert_eq!(fs::read_dir(store.join("snapshots")).unwrap().count(), before, "dry run removed snapshots");
    let kept: Vec<String> =
        dry["kept"].as_array().unwrap().iter().filter(|k| k["group"] == "db").map(|k| k["name"].as_str().unwrap().to_string()).collect();
    // newest of each of the last 7 days with a snapshot: 19, 18 (14:30), 17, 14, 13, 12 (14:30), 11
    let expect: Vec<String> = [(19, false), (18, true), (17, false), (14, false), (13, false), (12, true), (11, false)]
        .iter()
        .map(|&(d, late)| if late { day(d).replace("_02-00-00", "_14-30-00") } else { day(d) })
        .collect();
    assert_eq!(kept, expect);
    assert!(
        dry["kept"].as_array().unwrap().iter().any(|k| k["name"] == manual["snapshot"]),
        "the manual backup is the newest of its group"
    );
    let real = ok(&store, &["--json", "forget"]).json();
    assert_eq!(real["kept"], dry["kept"]);
    assert_eq!(snapshot_names(&store).len(), 8);
    // combinations: --keep-last 2 --keep-weekly 2 on what is left
    let r = ok(&store, &["--json", "forget", "--keep-last", "2", "--keep-weekly", "2", "--dry-run"]).json();
    let reasons: Vec<String> = r["kept"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|k| k["reasons"].as_array().unwrap().iter().map(|x| x.as_str().unwrap().to_string()))
        .collect();
    assert!(reasons.iter().any(|x| x.starts_with("last")) && reasons.iter().any(|x| x.starts_with("weekly")), "{reasons:?}");
    // human output lists what is kept and why
    let h = ok(&store, &["forget", "--dry-run", "--keep-daily", "2"]);
    assert!(h.stdout.contains("keep") && h.stdout.contains("daily") && h.stdout.contains("would remove"), "{}", h.stdout);
}

#[test]
fn fourteen_nights_with_nightly_forget_and_prune_stay_bounded_and_restorable() {
    let t = tempfile::tempdir().unwrap();
    let store = init_store(t.path());
    let mut data = Dataset::new(21, 4_000_000);
    let mut nights: Vec<(String, PathBuf)> = vec![];
    let mut size_after_7 = 0;
    let mut sizes = vec![];
    let mut unused_left = 0;
    for n in 0..14u32 {
        if n > 0 {
            data.advance();
        }
        let dir = t.path().join(format!("night-{n}"));
        data.write(&dir).unwrap();
        let name = backup_night(&store, &dir, &day(n));
        nights.push((name, dir));
        let r = ok(&store, &["--json", "forget", "--keep-daily", "7", "--prune"]).json();
        assert!(r["prune"]["bytes_after"].as_u64().unwrap() > 0);
        unused_left = r["prune"]["unused_left"].as_u64().unwrap();
        sizes.push(store_bytes(&store));
        if n == 6 {
            size_after_7 = store_bytes(&store);
        }
    }
    let last = store_bytes(&store);
    // The dumps grow ~1%/day (like the real ones), so the kept week itself grows: compare with a
    // fresh store holding exactly the kept nights, which is what pruning can reach.
    let ideal_store = t.path().join("ideal");
    ok(&ideal_store, &["init"]);
    for (n, (_, dir)) in nights.iter().enumerate().skip(7) {
        backup_night(&ideal_store, dir, &day(n as u32));
    }
    let ideal = store_bytes(&ideal_store);
    // Chunks of forgotten nights that kept deltas are built on stay (a fresh store has the kept
    // nights' content whole instead); everything else forgotten must be reclaimed.
    let bases = base_only_bytes(&store);
    eprintln!(
        "RETENTION REPORT: store after 7 nights {size_after_7} bytes; after 14 nights {last} bytes = {:.3}x that, {:.3}x a fresh store of the 7 kept nights ({ideal} bytes), of which {bases} bytes are old chunks kept as delta bases and {unused_left} bytes unused in kept packs; per night {sizes:?}",
        last as f64 / size_after_7 as f64,
        last as f64 / ideal as f64
    );
    // Prune leaves at most --max-repack-ratio (0.1) of the live bytes unused in kept packs; the
    // live data itself may exceed a fresh store's a little, because kept deltas lean on whole
    // chunks older than the kept nights (bases only deltas use are re-based by prune).
    let live = last - unused_left;
    assert!(unused_left as f64 <= live as f64 * 0.1 + 65536.0, "{unused_left} bytes unused in kept packs for {live} live");
    assert!(
        live as f64 <= ideal as f64 * 1.10 + bases as f64,
        "store after 14 nights holds {live} live bytes, more than 10% over the {ideal} bytes the kept nights need plus the {bases} bytes of delta bases"
    );
    let kept = snapshot_names(&store);
    let expect: Vec<String> = nights[7..].iter().map(|n| n.0.clone()).collect();
    assert_eq!(kept, expect);
    let v = ok(&store, &["--json", "verify", "--deep", "--all", "--log-dir", t.path().join("logs").to_str().unwrap()]).json();
    assert_eq!(v["ok"], true);
    for (name, dir) in &nights[7..] {
        restores_exactly(&store, t.path(), name, dir);
    }
}

/// Makes a store with 10 nights and forgets all but 3, so prune has packs to delete and repack.
fn store_to_prune(t: &Path) -> (PathBuf, Vec<(String, PathBuf)>) {
    let store = init_store(t);
    let mut data = Dataset::new(33, 3_000_000);
    let mut nights = vec![];
    for n in 0..10u32 {
        if n > 0 {
            data.advance();
        }
        let dir = t.join(format!("night-{n}"));
        data.write(&dir).unwrap();
        nights.push((backup_night(&store, &dir, &day(n)), dir));
    }
    ok(&store, &["forget", "--keep-daily", "3"]);
    let kept = nights.split_off(7);
    (store, kept)
}

#[test]
fn sigkill_at_every_step_of_prune_leaves_a_sound_store_and_a_rerun_finishes() {
    let t = tempfile::tempdir().unwrap();
    let (pristine, kept) = store_to_prune(t.path());
    let reference = t.path().join("reference");
    copy_dir(&pristine, &reference);
    let r = ok(&reference, &["--json", "prune", "--max-repack-ratio", "0"]).json();
    let reference_size = store_bytes(&reference);
    assert!(r["packs_deleted"].as_u64().unwrap() + r["packs_repacked"].as_u64().unwrap() > 0, "{r}");
    let logs = t.path().join("logs");
    let mut crashed = 0;
    for step in 1..200u32 {
        let store = t.path().join(format!("crash-{step}"));
        copy_dir(&pristine, &store);
        let out = bin()
            .args(["--store", store.to_str().unwrap(), "prune", "--max-repack-ratio", "0"])
            .env("RPGER_STORE_TEST_CRASH_AFTER", step.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        let finished = out.success();
        // every kept snapshot verifies and restores exactly
        let v = run(&store, &["--json", "verify", "--deep", "--all", "--log-dir", logs.to_str().unwrap()]);
        assert_eq!(v.code, 0, "after a crash at step {step}: {}", v.stdout);
        for (name, dir) in &kept {
            restores_exactly(&store, t.path(), name, dir);
        }
        // the next prune finishes the job
        ok(&store, &["prune", "--max-repack-ratio", "0"]);
        let size = store_bytes(&store);
        assert!(
            size <= reference_size + reference_size / 100,
            "after a crash at step {step} and a rerun the store is {size} bytes, not {reference_size}"
        );
        ok(&store, &["verify", "--deep", "--all", "--log-dir", logs.to_str().unwrap()]);
        fs::remove_dir_all(&store).unwrap();
        if finished {
            break;
        }
        crashed += 1;
    }
    eprintln!("PRUNE CRASH REPORT: prune killed at each of its {crashed} steps; every time the store verified, the 3 kept snapshots restored exactly and a rerun finished");
    assert!(crashed >= 4, "prune had only {crashed} steps");
}

#[test]
fn a_backup_during_prune_waits_or_fails_cleanly() {
    let t = tempfile::tempdir().unwrap();
    let (store, kept) = store_to_prune(t.path());
    let night = &kept[2].1;
    let args = |wait: &str| -> Vec<String> {
        let mut a =
            vec!["--store".to_string(), store.display().to_string(), "--json".into(), "backup".into(), "--lock-wait".into(), wait.into()];
        for s in ["mongodb", "redis", "chroma"] {
            a.extend(["--source".to_string(), format!("{s}={}", night.join(s).display())]);
        }
        a
    };
    // While something holds the exclusive lock, a backup without --lock-wait fails at once,
    // naming the holder, and writes nothing.
    let lock = fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(store.join("locks/lock")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    fs::write(store.join("locks/testhost-4242-0.info"), "pid=4242\nhost=testhost\ncommand=prune\nmode=exclusive\nsince=now\n").unwrap();
    let packs_before = count_files(&store.join("packs"));
    let out = bin().args(args("0s")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("locked") && stderr.contains("pid 4242") && stderr.contains("prune"), "{stderr}");
    assert_eq!(count_files(&store.join("packs")), packs_before);
    // With --lock-wait it waits for the lock and then succeeds.
    let child = bin().args(args("30s")).stdout(Stdio::piped()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    fs::remove_file(store.join("locks/testhost-4242-0.info")).unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::Unlock).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    // Real prunes and backups racing: each waits for the other; nothing is ever corrupt.
    let mut handles = vec![];
    for i in 0..4 {
        let prune = ["--store", store.to_str().unwrap(), "prune", "--lock-wait", "60s", "--max-repack-ratio", "0"];
        handles.push(bin().args(prune).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap());
        let mut a = args("60s");
        a.extend(["--time".into(), day(20 + i)]);
        handles.push(bin().args(a).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap());
    }
    for h in handles {
        let out = h.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    ok(&store, &["verify", "--deep", "--all", "--log-dir", t.path().join("logs").to_str().unwrap()]);
    for name in snapshot_names(&store).iter().filter(|n| n.starts_with("2026-03-2")) {
        restores_exactly(&store, t.path(), name, night);
    }
}
