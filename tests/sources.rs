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
