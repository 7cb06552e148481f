//! Issue 5 sources: a dump command's output streamed into the store, gated on its exit status.

use crate::common::*;
use std::fs;

#[test]
fn a_command_that_fails_half_way_commits_nothing_and_the_next_run_dedups() {
    let t = tempfile::tempdir().unwrap();
    let store = init_store(t.path());
    let dump = t.path().join("dump.bin");
    fs::write(&dump, noise(4, 6 << 20)).unwrap();
    let good = format!("cmd:cat {}", dump.display());
    let first = ok(&store, &["--json", "backup", "--source", &format!("db={good}"), "--stdin-name", "db.dump"]).json();
    assert_eq!(first["bytes_read"], 6 << 20);
    // half the dump, an error message, a failing exit status
    let bad = format!("cmd:head -c 3000000 {}; echo 'dump: connection lost' >&2; exit 3", dump.display());
    let r = fails(&store, &["backup", "--source", &format!("db={bad}")], 2);
    assert!(
        r.stderr.contains("exited with status 3") && r.stderr.contains("connection lost") && r.stderr.contains("source db"),
        "{}",
        r.stderr
    );
    assert_eq!(ok(&store, &["--json", "snapshots"]).json()["snapshots"].as_array().unwrap().len(), 1);
    // killed by a signal, and no output at all
    let r = fails(&store, &["backup", "--source", "db=cmd:kill -9 $$"], 2);
    assert!(r.stderr.contains("killed by a signal") || r.stderr.contains("empty stream"), "{}", r.stderr);
    let r = fails(&store, &["backup", "--source", "db=cmd:true"], 2);
    assert!(r.stderr.contains("gave no data"), "{}", r.stderr);
    let r = fails(&store, &["backup", "--source", "db=cmd:"], 2);
    assert!(r.stderr.contains("empty command"), "{}", r.stderr);
    assert_eq!(ok(&store, &["--json", "snapshots"]).json()["snapshots"].as_array().unwrap().len(), 1);
    // A successful run of a slightly changed dump dedups against the first snapshot.
    let mut changed = fs::read(&dump).unwrap();
    changed.splice(1_000_000..1_000_000, *b"inserted");
    fs::write(&dump, &changed).unwrap();
    let next = ok(&store, &["--json", "backup", "--source", &format!("db={good}"), "--stdin-name", "db.dump"]).json();
    assert!(next["new_raw_bytes"].as_u64().unwrap() < 4 * 65536, "{next}");
    let target = t.path().join("r");
    ok(&store, &["restore", "latest", target.to_str().unwrap()]);
    assert_eq!(fs::read(target.join("db/db.dump")).unwrap(), changed);
}

#[test]
fn import_legacy_turns_dated_folders_into_snapshots_with_their_dates() {
    let t = tempfile::tempdir().unwrap();
    let store = init_store(t.path());
    let legacy = t.path().join("backups");
    let mut data = rpger_engine::demo::Dataset::new(8, 2_000_000);
    let names = ["2026-11-18_02-00-03", "2026-11-19_02-00-01", "2026-11-20_02-00-07"];
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            data.advance();
        }
        data.write(&legacy.join(n)).unwrap();
    }
    fs::create_dir(legacy.join("not-a-backup")).unwrap();
    let r = ok(&store, &["--json", "import-legacy", legacy.to_str().unwrap()]).json();
    let got: Vec<&str> = r["imported"].as_array().unwrap().iter().map(|x| x["snapshot"].as_str().unwrap()).collect();
    assert_eq!(got, names);
    let list = ok(&store, &["--json", "snapshots"]).json();
    let listed: Vec<&str> = list["snapshots"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(listed, names);
    assert_eq!(list["snapshots"][1]["time"], "2026-11-19T02:00:01Z");
    for n in names {
        let target = t.path().join(format!("r-{n}"));
        ok(&store, &["restore", n, target.to_str().unwrap()]);
        for src in ["chroma", "mongodb", "redis"] {
            assert_same_tree(&legacy.join(n).join(src), &target.join(src));
        }
    }
    // Running it again imports nothing twice.
    let again = ok(&store, &["--json", "import-legacy", legacy.join(names[0]).to_str().unwrap(), legacy.to_str().unwrap()]).json();
    assert!(again["imported"].as_array().unwrap().iter().all(|x| x["skipped"] == true));
    let r = fails(&store, &["import-legacy", legacy.join("not-a-backup").to_str().unwrap()], 2);
    assert!(r.stderr.contains("neither a legacy backup folder"), "{}", r.stderr);
}

#[test]
fn configured_nightly_runs_log_apply_retention_and_fail_cleanly() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let logs = t.path().join("logs");
    let chroma = t.path().join("chroma");
    fs::create_dir(&chroma).unwrap();
    fs::write(chroma.join("chroma.sqlite3"), noise(1, 300_000)).unwrap();
    let dump = t.path().join("dump.archive");
    fs::write(&dump, noise(2, 200_000)).unwrap();
    let cfg = t.path().join("config.toml");
    let write_cfg = |command: &str| {
        fs::write(
            &cfg,
            format!(
                "store = {store:?}\nlog_dir = {logs:?}\n[retention]\nkeep_last = 2\nprune = true\n\n\
                 [[source]]\nname = \"mongodb\"\ncommand = {command:?}\nfile_name = \"mongodb.archive\"\n\n\
                 [[source]]\nname = \"chroma\"\npath = {chroma:?}\n"
            ),
        )
        .unwrap();
    };
    write_cfg(&format!("cat {}", dump.display()));
    let c = cfg.to_str().unwrap();
    let out = bin().args(["--config", c, "init"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for _ in 0..3 {
        let out = bin().args(["--config", c, "--json", "backup"]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let list = |args: &[&str]| -> serde_json::Value {
        let out = bin().args(["--config", c, "--json"]).args(args).output().unwrap();
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let snaps = list(&["snapshots"]);
    assert_eq!(snaps["snapshots"].as_array().unwrap().len(), 2, "[retention] keep_last = 2 after each run: {snaps}");
    let names: Vec<&str> = snaps["snapshots"][0]["sources"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["chroma", "mongodb"]);
    let log = fs::read_to_string(logs.join("backup.log")).unwrap();
    assert_eq!(log.matches("backup start").count(), 3, "{log}");
    assert!(
        log.contains("backup source mongodb: 200000 bytes") && log.contains("backup ok snapshot=") && log.contains("retention forgot 1"),
        "{log}"
    );
    // --only: one configured source, its own retention group
    let out = bin().args(["--config", c, "backup", "--only", "chroma"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(list(&["snapshots"])["snapshots"].as_array().unwrap().len(), 3);
    let out = bin().args(["--config", c, "backup", "--only", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such configured source"));
    // A failing dump: exit 2, the log says why, nothing committed, retention not run.
    write_cfg("echo partial; exit 7");
    let out = bin().args(["--config", c, "backup"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exited with status 7"));
    assert_eq!(list(&["snapshots"])["snapshots"].as_array().unwrap().len(), 3);
    let log = fs::read_to_string(logs.join("backup.log")).unwrap();
    assert!(log.lines().last().unwrap().contains("backup FAILED") && log.contains("exited with status 7"), "{log}");
    // A config with a typo is a clear error.
    fs::write(&cfg, "stroe = \"/x\"\n").unwrap();
    let out = bin().args(["--config", c, "snapshots"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("config file"), "{}", String::from_utf8_lossy(&out.stderr));
    // config init writes the commented example, refuses to overwrite without --force
    let ex = t.path().join("etc/rpger-store/config.toml");
    let e = ex.to_str().unwrap();
    assert!(bin().args(["--config", e, "config", "init"]).status().unwrap().success());
    assert!(fs::read_to_string(&ex).unwrap().contains("[[source]]"));
    assert_eq!(bin().args(["--config", e, "config", "init"]).output().unwrap().status.code(), Some(2));
    assert!(bin().args(["--config", e, "config", "init", "--force"]).status().unwrap().success());
}

/// Counts the BSON documents of a .bson file (each is length-prefixed and NUL-terminated).
fn bson_docs(bytes: &[u8]) -> usize {
    let (mut pos, mut n) = (0, 0);
    while pos < bytes.len() {
        let len = i32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        assert_eq!(bytes[pos + len - 1], 0);
        pos += len;
        n += 1;
    }
    assert_eq!(pos, bytes.len());
    n
}

#[test]
fn a_real_mongodump_archive_is_stored_as_mongodumps_directory_layout() {
    let t = tempfile::tempdir().unwrap();
    let store = init_store(t.path());
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mongodump");
    let archive = fixtures.join("dump-w-oplog.archive");
    let r = ok(&store, &["--json", "backup", "--source", &format!("mongodb=mongodump:cat {}", archive.display())]).json();
    let snap = r["snapshot"].as_str().unwrap().to_string();
    let target = t.path().join("r");
    ok(&store, &["restore", &snap, target.to_str().unwrap()]);
    let dump = target.join("mongodb/mongodb_backup");
    assert_eq!(bson_docs(&fs::read(dump.join("test/foo.bson")).unwrap()), 25);
    assert!(dump.join("test/foo.metadata.json").is_file());
    assert!(fs::read_to_string(dump.join("admin/system.version.metadata.json")).unwrap().contains("\"indexes\""));
    assert!(dump.join("admin/system.version.bson").is_file() && dump.join("oplog.bson").is_file());
    let labels = &ok(&store, &["--json", "snapshots"]).json()["snapshots"][0]["labels"];
    assert_eq!(labels["mongodb.archive.server_version"], "4.0.2");
    assert_eq!(labels["mongodb.archive.namespaces"], "3");
    // The archive re-assembled for mongorestore --archive demultiplexes (every CRC re-checked) to
    // the same collections.
    let exported = t.path().join("exported.archive");
    ok(&store, &["mongodb-archive", &snap, "-o", exported.to_str().unwrap()]);
    assert_eq!(&fs::read(&exported).unwrap()[..4], &[0x6d, 0xe2, 0x99, 0x81]);
    let again = ok(&store, &["--json", "backup", "--source", &format!("mongodb=mongodump:cat {}", exported.display())]).json();
    assert_eq!(again["new_chunks"], 0, "the round trip changed the collections: {again}");
    let target2 = t.path().join("r2");
    ok(&store, &["restore", again["snapshot"].as_str().unwrap(), target2.to_str().unwrap()]);
    // (directories of a stream source carry each backup's own time: compare paths and contents)
    let (a, b) = (tree(&dump), tree(&target2.join("mongodb/mongodb_backup")));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (k, n) in &a {
        assert_eq!((n.kind, n.content), (b[k].kind, b[k].content), "{}", String::from_utf8_lossy(k));
    }
    let list = ok(&store, &["--json", "snapshots"]).json();
    let l2 = &list["snapshots"][1]["labels"];
    assert_eq!(
        (&l2["mongodb.archive.server_version"], &l2["mongodb.archive.tool_version"]),
        (&labels["mongodb.archive.server_version"], &labels["mongodb.archive.tool_version"])
    );
    // to stdout as well
    let out = bin().args(["--store", store.to_str().unwrap(), "mongodb-archive", &snap]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, fs::read(&exported).unwrap());
    // A corrupted document fails the CRC check; a cut stream and a failing mongodump fail too.
    let mut bad = fs::read(fixtures.join("test.bar.archive")).unwrap();
    let at = bad.len() - 60;
    bad[at] ^= 1;
    let badf = t.path().join("bad.archive");
    fs::write(&badf, &bad).unwrap();
    let e = fails(&store, &["backup", "--source", &format!("mongodb=mongodump:cat {}", badf.display())], 2);
    assert!(e.stderr.contains("CRC") || e.stderr.contains("mongodump archive"), "{}", e.stderr);
    let e = fails(&store, &["backup", "--source", &format!("mongodb=mongodump:head -c 700 {}", archive.display())], 2);
    assert!(e.stderr.contains("cut short") || e.stderr.contains("ended"), "{}", e.stderr);
    let e = fails(&store, &["backup", "--source", &format!("mongodb=mongodump:cat {}; exit 1", archive.display())], 2);
    assert!(e.stderr.contains("exited with status 1"), "{}", e.stderr);
    assert_eq!(ok(&store, &["--json", "snapshots"]).json()["snapshots"].as_array().unwrap().len(), 2);
}

/// Whether this process ignores SIGINT (`SigIgn` in /proc/self/status: signal N is bit N - 1).
fn sigint_ignored() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:")).expect("SigIgn in /proc/self/status");
    u64::from_str_radix(mask.trim(), 16).unwrap() & (1 << (rustix::process::Signal::INT.as_raw() - 1)) != 0
}

#[test]
fn a_frozen_source_stops_its_writer_while_read_and_always_resumes_it() {
    use rpger_engine::sources::freeze::process_state;
    use std::time::{Duration, Instant};
    let t = tempfile::tempdir().unwrap();
    let store = init_store(t.path());
    let dir = t.path().join("chroma");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("chroma.sqlite3"), noise(11, 200 << 20)).unwrap();
    let mut writer = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("while :; do echo x >> {}/writer.log; sleep 0.005; done", dir.display()))
        .spawn()
        .unwrap();
    let pid = writer.id() as i32;
    let running = |pid: i32| {
        let t0 = Instant::now();
        while process_state(pid) == Some('T') {
            if t0.elapsed() > Duration::from_secs(5) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    };
    let spec = format!("chroma=frozen:{}?pid={pid}", dir.display());
    let spawn_backup = || {
        bin()
            .args(["--store", store.to_str().unwrap(), "--threads", "1", "backup", "--source", &spec])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // 1. a normal run: stopped while read, running afterwards, the data restores
    let mut child = spawn_backup();
    let t0 = Instant::now();
    let mut seen_stopped = false;
    while t0.elapsed() < Duration::from_secs(20) && child.try_wait().unwrap().is_none() {
        seen_stopped |= process_state(pid) == Some('T');
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(child.wait().unwrap().success());
    assert!(seen_stopped, "the writer was never seen stopped during the backup");
    assert!(running(pid), "the writer was left stopped after a successful backup");
    // 2. rpger-store killed (SIGKILL), stopped by a service manager (SIGTERM) and interrupted
    // (Ctrl-C) while the writer is stopped. Each run gets data the store does not have:
    // deduplicated, the read took a fraction of a second, and on a loaded machine the backup
    // could finish before the signal landed (a signal to an exited, unreaped process is ignored).
    use rustix::process::Signal;
    let mut signals = vec![(12, Signal::KILL), (13, Signal::TERM)];
    // A shell that starts a command in the background makes it ignore SIGINT, and so every
    // process it starts: then Ctrl-C cannot reach rpger-store at all, and there is nothing to test.
    if sigint_ignored() {
        eprintln!("NOTE: SIGINT is ignored in this test process (started in the background?): the Ctrl-C case is not run");
    } else {
        signals.push((14, Signal::INT));
    }
    for (seed, sig) in signals {
        fs::write(dir.join("chroma.sqlite3"), noise(seed, 200 << 20)).unwrap();
        let mut child = spawn_backup();
        let t0 = Instant::now();
        while process_state(pid) != Some('T') && t0.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(process_state(pid), Some('T'), "never saw the writer stopped");
        let backup = child.id() as i32;
        assert_ne!(process_state(backup), Some('Z'), "the backup ended before it could be signalled");
        rustix::process::kill_process(rustix::process::Pid::from_raw(backup).unwrap(), sig).unwrap();
        assert!(!child.wait().unwrap().success(), "the backup succeeded although it got {sig:?} while reading");
        assert!(running(pid), "the writer stayed stopped after rpger-store got {sig:?}");
    }
    // 3. no such process: a clear error, nothing committed
    let r = fails(&store, &["backup", "--source", &format!("chroma=frozen:{}?pid=999999", dir.display())], 2);
    assert!(r.stderr.contains("cannot signal process 999999"), "{}", r.stderr);
    assert_eq!(ok(&store, &["--json", "snapshots"]).json()["snapshots"].as_array().unwrap().len(), 1);
    let _ = writer.kill();
    let _ = writer.wait();
}

#[test]
fn allow_partial_commits_what_succeeded_marks_it_and_exits_1() {
    let t = tempfile::tempdir().unwrap();
    let store = init_store(t.path());
    let good = t.path().join("good");
    fs::create_dir(&good).unwrap();
    fs::write(good.join("f"), b"fine").unwrap();
    let args = |extra: &[&str]| {
        let mut a = vec!["--json".to_string(), "backup".into(), "--source".into(), format!("chroma={}", good.display())];
        a.extend(["--source".to_string(), "mongodb=cmd:echo half; exit 4".to_string()]);
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    // by default nothing is committed
    let r = run(&store, &args(&[]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(snapshot_names(&store).is_empty());
    // with --allow-partial the good source is committed, the snapshot says what failed, exit 1
    let r = run(&store, &args(&["--allow-partial"]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("exited with status 4") && r.stderr.contains("PARTIAL"), "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["partial"], true);
    let snaps = ok(&store, &["--json", "snapshots"]).json();
    let s = &snaps["snapshots"][0];
    assert_eq!(s["sources"].as_array().unwrap().len(), 1);
    assert!(s["labels"]["partial"].as_str().unwrap().contains("mongodb"), "{s}");
    let target = t.path().join("r");
    ok(&store, &["restore", "latest", target.to_str().unwrap()]);
    assert_eq!(fs::read(target.join("chroma/f")).unwrap(), b"fine");
    // a later complete run supersedes the partial one in retention (same intended sources)
    let r = run(&store, &["backup", "--source", &format!("chroma={}", good.display()), "--source", "mongodb=cmd:echo whole"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let f = ok(&store, &["--json", "forget", "--keep-last", "1"]).json();
    assert_eq!(f["removed"].as_array().unwrap().len(), 1, "{f}");
    assert_eq!(snapshot_names(&store).len(), 1);
    // every source failing is still a plain failure
    let r = fails(&store, &["backup", "--allow-partial", "--source", "mongodb=cmd:exit 3"], 2);
    assert!(r.stderr.contains("every source failed"), "{}", r.stderr);
}
