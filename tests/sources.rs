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
