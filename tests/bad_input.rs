//! Issue 2, must-show 5: bad input gives a clear one-line error and a non-zero exit, no panic.

use crate::common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

fn one_line(r: &Run) {
    assert_eq!(r.stderr.trim_end().lines().count(), 1, "expected a one-line error, got:\n{}", r.stderr);
}

#[test]
fn missing_source_path() {
    let t = tempfile::tempdir().unwrap();
    let store = init_store(t.path());
    let r = fails(&store, &["backup", "--source", "db=/no/such/dir"], 2);
    one_line(&r);
    assert!(r.stderr.contains("/no/such/dir") && r.stderr.contains("source db"), "{}", r.stderr);
    assert_eq!(count_files(&store.join("snapshots")), 0);
}

#[test]
fn unreadable_file_fails_the_backup_and_names_it() {
    let t = tempfile::tempdir().unwrap();
    let store = init_store(t.path());
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("ok"), b"fine").unwrap();
    fs::write(src.join("secret"), b"no").unwrap();
    fs::set_permissions(src.join("secret"), fs::Permissions::from_mode(0o000)).unwrap();
    let mut cmd = bin();
    cmd.args(["--store", store.to_str().unwrap(), "backup", "--source", &format!("s={}", src.display())]);
    if is_root() {
        // root reads anything: run as nobody, with a store nobody may write to.
        for p in [t.path(), &store] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o777)).unwrap();
        }
        for d in fs::read_dir(&store).unwrap().flatten() {
            fs::set_permissions(d.path(), fs::Permissions::from_mode(0o777)).unwrap();
        }
        fs::write(store.join("locks/lock"), b"").unwrap();
        fs::set_permissions(store.join("locks/lock"), fs::Permissions::from_mode(0o666)).unwrap();
        cmd.uid(65534).gid(65534);
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("secret") && stderr.contains("ermission denied"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert_eq!(count_files(&store.join("snapshots")), 0);
}

#[test]
fn a_directory_that_is_not_a_store() {
    let t = tempfile::tempdir().unwrap();
    let r = fails(t.path(), &["snapshots"], 2);
    one_line(&r);
    assert!(r.stderr.contains("not an rpger-store store"), "{}", r.stderr);
    let r = fails(&t.path().join("nope"), &["stats"], 2);
    assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
    fs::write(t.path().join("some-file"), b"x").unwrap();
    let r = fails(t.path(), &["init"], 2);
    assert!(r.stderr.contains("not empty"), "{}", r.stderr);
}

#[test]
fn a_second_init_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let store = init_store(t.path());
    let before = fs::read(store.join("config")).unwrap();
    let r = fails(&store, &["init"], 2);
    one_line(&r);
    assert!(r.stderr.contains("already holds"), "{}", r.stderr);
    assert_eq!(fs::read(store.join("config")).unwrap(), before, "init touched an existing store");
}

#[test]
fn a_truncated_pack_is_reported_by_name() {
    let t = tempfile::tempdir().unwrap();
    let store = init_store(t.path());
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a.bin"), noise(1, 3 << 20)).unwrap();
    ok(&store, &["backup", "--source", &format!("s={}", src.display())]);
    let pack = find_one_pack(&store.join("packs"));
    let len = fs::metadata(&pack).unwrap().len();
    fs::OpenOptions::new().write(true).open(&pack).unwrap().set_len(len / 2).unwrap();
    let target = t.path().join("r");
    let r = fails(&store, &["restore", "latest", target.to_str().unwrap()], 1);
    let pack_name = pack.file_name().unwrap().to_string_lossy()[..8].to_string();
    assert!(r.stderr.contains("a.bin") && r.stderr.contains(&pack_name), "{}", r.stderr);
    // the store still answers
    ok(&store, &["snapshots"]);
}

fn find_one_pack(dir: &Path) -> std::path::PathBuf {
    let sub = fs::read_dir(dir).unwrap().flatten().next().expect("a pack directory");
    fs::read_dir(sub.path()).unwrap().flatten().next().expect("a pack").path()
}

#[test]
fn other_bad_requests() {
    let t = tempfile::tempdir().unwrap();
    let store = init_store(t.path());
    // empty stdin is refused (a failed dump piped in must not become a snapshot)
    let r = fails(&store, &["backup", "--source", "db=-"], 2);
    one_line(&r);
    assert!(r.stderr.contains("empty stream"), "{}", r.stderr);
    for bad in ["../x=/tmp", "=/tmp", "a/b=/tmp", "noequals"] {
        let r = fails(&store, &["backup", "--source", bad], 2);
        one_line(&r);
    }
    let r = fails(&store, &["restore", "2020-01-01_00-00-00", t.path().join("r").to_str().unwrap()], 2);
    assert!(r.stderr.contains("no snapshot named"), "{}", r.stderr);
    let r = fails(&store, &["restore", "latest", t.path().join("r").to_str().unwrap()], 2);
    assert!(r.stderr.contains("no snapshots yet"), "{}", r.stderr);
    assert_eq!(count_files(&store.join("snapshots")), 0);
}

#[test]
fn a_reader_that_closes_stdout_early_is_not_an_error() {
    // `rpger-store snapshots | head -1`: the reader leaves before the listing is printed.
    let t = tempfile::tempdir().unwrap();
    let store = init_store(&t.path().join("s"));
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), b"data").unwrap();
    ok(&store, &["backup", "--source", &format!("db={}", src.display())]);
    for args in [&["snapshots"][..], &["stats"][..], &["--json", "stats"][..]] {
        let mut child = bin()
            .arg("--store")
            .arg(&store)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
