//! Issue 2, must-show 4: a restore never writes outside TARGET, whatever the store contains, and
//! refuses a non-empty TARGET unless --overwrite (which never follows a symlink it finds).

use crate::common::*;
use rpger_engine::store::Store;
use rpger_engine::{Entry, EntryKind, Id, Manifest, Snapshot, SourceRef};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

fn entry(path: &[u8], kind: EntryKind) -> Entry {
    Entry { path: path.to_vec(), mode: 0o755, uid: 0, gid: 0, mtime_sec: 0, mtime_nsec: 0, kind }
}

fn empty_file() -> EntryKind {
    EntryKind::File { size: 0, chunks: vec![], hash: Id::of(b""), sparse: false }
}

/// Writes a hostile manifest straight into a store, as a tampered store would hold it.
fn plant(store_dir: &Path, name: &str, entries: Vec<Entry>) {
    let store = Store::open(store_dir).unwrap();
    let manifest = store.write_manifest(&Manifest { entries }).unwrap();
    store
        .commit_snapshot(Snapshot {
            name: name.into(),
            time_unix_ns: 0,
            hostname: "evil".into(),
            tool_version: "0".into(),
            sources: vec![SourceRef { name: "src".into(), manifest, logical_bytes: 0, entries: 0 }],
            new_stored_bytes: 0,
            new_raw_bytes: 0,
            labels: vec![],
        })
        .unwrap();
}

#[test]
fn dotdot_and_absolute_paths_in_a_manifest_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let store = init_store(t.path());
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    for (i, evil) in [&b"../../outside/passwd"[..], b"../outside/x", b"/tmp/rpger-evil", b"a/../../outside/y"].iter().enumerate() {
        let name = format!("2000-01-01_00-00-0{i}");
        plant(&store, &name, vec![entry(b"", EntryKind::Dir), entry(evil, empty_file())]);
        let target = t.path().join(format!("target{i}"));
        let r = fails(&store, &["restore", &name, target.to_str().unwrap()], 1);
        assert!(r.stderr.contains("not allowed") || r.stderr.contains("absolute"), "{}", r.stderr);
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "restore wrote outside its target");
    }
    assert!(!Path::new("/tmp/rpger-evil").exists());
}

#[test]
fn symlinks_already_in_target_are_replaced_never_followed() {
    let t = tempfile::tempdir().unwrap();
    let store = init_store(t.path());
    let src = t.path().join("src");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("sub/file"), b"inside").unwrap();
    fs::write(src.join("top"), b"top file").unwrap();
    ok(&store, &["backup", "--source", &format!("tree={}", src.display())]);
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("precious"), b"do not touch").unwrap();

    let target = t.path().join("target");
    fs::create_dir_all(target.join("tree")).unwrap();
    symlink(&outside, target.join("tree/sub")).unwrap();
    symlink(outside.join("precious"), target.join("tree/top")).unwrap();
    let r = fails(&store, &["restore", "latest", target.to_str().unwrap()], 2);
    assert!(r.stderr.contains("not empty") && r.stderr.contains("--overwrite"), "{}", r.stderr);
    ok(&store, &["restore", "latest", target.to_str().unwrap(), "--overwrite"]);
    assert_eq!(fs::read(outside.join("precious")).unwrap(), b"do not touch");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1, "restore wrote into the symlinked directory");
    assert!(fs::symlink_metadata(target.join("tree/sub")).unwrap().is_dir());
    assert_same_tree(&src, &target.join("tree"));

    // The source directory itself replaced by a symlink to elsewhere.
    let target2 = t.path().join("target2");
    fs::create_dir(&target2).unwrap();
    symlink(&outside, target2.join("tree")).unwrap();
    ok(&store, &["restore", "latest", target2.to_str().unwrap(), "--overwrite"]);
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
    assert_same_tree(&src, &target2.join("tree"));
}

#[test]
fn a_symlink_restored_in_the_same_run_is_never_followed() {
    let t = tempfile::tempdir().unwrap();
    let store = init_store(t.path());
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let o = outside.to_str().unwrap().as_bytes().to_vec();
    plant(
        &store,
        "2000-01-01_00-00-00",
        vec![
            entry(b"", EntryKind::Dir),
            entry(b"a", EntryKind::Symlink { target: o.clone() }),
            entry(b"a/x", empty_file()),
            entry(b"b", EntryKind::Symlink { target: o.clone() }),
            entry(b"b/c", EntryKind::Dir),
            entry(b"b/c/d", empty_file()),
            entry(b"ok", empty_file()),
        ],
    );
    let target = t.path().join("target");
    for overwrite in [false, true] {
        let mut args = vec!["restore", "2000-01-01_00-00-00", target.to_str().unwrap()];
        if overwrite {
            args.push("--overwrite");
        }
        let r = fails(&store, &args, 1);
        assert!(r.stderr.contains("a/x") && r.stderr.contains("b/c"), "{}", r.stderr);
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0, "restore wrote through a symlink it restored");
        assert!(target.join("src/ok").is_file(), "the sound entries must still be restored");
    }
}
