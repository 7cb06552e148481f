//! `verify --dumps`: dumps written by the real programs (redis-server, mongodump's archives,
//! SQLite through Python's sqlite3 module) check out after a trip through the store, and copies
//! damaged the way real dumps break (a flipped byte, a cut tail, a missing file) are named
//! with the reason while the store itself stays sound.

use crate::common::*;
use crate::redis::{cli, have_redis, start_with_aof};
use serde_json::Value;
use std::fs;
use std::path::Path;
use std::process::Command;

/// `verify --dumps --json` of `snapshot`; the expected exit code; the dumps by path.
fn check_dumps(store: &Path, snapshot: &str, scratch: &Path, code: i32) -> std::collections::BTreeMap<String, (bool, String)> {
    let r = verify(store, &["--json", "verify", snapshot, "--dumps", "--scratch-dir", scratch.to_str().unwrap()], code);
    let j = r.json();
    assert_eq!(j["problems"].as_array().unwrap().len(), 0, "the store itself is sound: {j}");
    j["dumps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let key = format!("{}/{}", d["source"].as_str().unwrap(), d["path"].as_str().unwrap());
            (key, (d["ok"].as_bool().unwrap(), format!("{} {}", d["kind"].as_str().unwrap(), d["what"].as_str().unwrap())))
        })
        .collect()
}

/// Runs verify with its log kept in the store's parent directory; checks the exit code.
fn verify(store: &Path, args: &[&str], code: i32) -> Run {
    let log = store.parent().unwrap().join("logs");
    let mut a = args.to_vec();
    a.extend_from_slice(&["--log-dir", log.to_str().unwrap()]);
    let r = run(store, &a);
    assert_eq!(r.code, code, "verify {args:?}: stdout {} stderr {}", r.stdout, r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    r
}

fn snapshot_of(r: &Run) -> String {
    r.json()["snapshot"].as_str().unwrap().to_string()
}

#[test]
fn redis_dumps_of_a_real_server_check_out_and_a_flipped_cut_or_incomplete_copy_is_named() {
    if !have_redis() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let server = start_with_aof(t.path());
    for i in 0..300 {
        cli(&server, &["SET", &format!("character:{i}"), &format!("{{\"hp\":{}}}", i * 7)]);
    }
    cli(&server, &["HSET", "campaign:1", "name", "The Dragon Keep"]);
    let store = init_store(t.path());
    let spec = format!("redis=redis://127.0.0.1:{}", server.port);
    let snap = snapshot_of(&ok(&store, &["--json", "backup", "--source", &spec]));
    let dumps = check_dumps(&store, &snap, t.path(), 0);
    let rdb = &dumps["redis/dump.rdb"];
    assert!(rdb.0 && rdb.1.starts_with("redis rdb RDB version") && rdb.1.contains("matches"), "{rdb:?}");
    let aofs: Vec<_> = dumps.iter().filter(|(p, _)| p.starts_with("redis/appendonlydir/")).collect();
    assert_eq!(aofs.len(), 3, "base RDB, incremental AOF and manifest: {dumps:?}");
    assert!(aofs.iter().all(|(_, (ok, _))| *ok), "{aofs:?}");
    let incr = aofs.iter().find(|(p, _)| p.ends_with(".incr.aof")).unwrap();
    assert!(incr.1 .1.contains(" commands"), "{incr:?}");

    // The same files damaged: one byte of dump.rdb flipped, the incremental AOF cut inside its
    // last command, and the base file the manifest names left out.
    let restored = t.path().join("restored");
    ok(&store, &["restore", &snap, restored.to_str().unwrap()]);
    let copy = restored.join("redis");
    let rdb_path = copy.join("dump.rdb");
    let mut b = fs::read(&rdb_path).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x20;
    fs::write(&rdb_path, &b).unwrap();
    let dir = copy.join("appendonlydir");
    for e in fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".incr.aof") {
            let a = fs::read(&p).unwrap();
            fs::write(&p, &a[..a.len() - 4]).unwrap();
        } else if name.ends_with(".base.rdb") {
            fs::remove_file(&p).unwrap();
        }
    }
    let bad = snapshot_of(&ok(&store, &["--json", "backup", "--source", &format!("redis={}", copy.display())]));
    // Without --dumps the store is sound: the damage is in what was backed up.
    verify(&store, &["verify", &bad, "--deep"], 0);
    let dumps = check_dumps(&store, &bad, t.path(), 1);
    let rdb = &dumps["redis/dump.rdb"];
    assert!(!rdb.0 && rdb.1.contains("CRC-64 mismatch"), "{rdb:?}");
    let incr = dumps.iter().find(|(p, _)| p.ends_with(".incr.aof")).unwrap().1;
    assert!(!incr.0 && incr.1.contains("cut short inside command"), "{incr:?}");
    let manifest = &dumps["redis/appendonlydir/appendonly.aof.manifest"];
    assert!(!manifest.0 && manifest.1.contains("which the snapshot does not hold"), "{manifest:?}");
    // The human report says which dumps would not load.
    let out = verify(&store, &["verify", &bad, "--dumps", "--scratch-dir", t.path().to_str().unwrap()], 1).stdout;
    assert!(out.contains("dump BAD: ") && out.contains("redis/dump.rdb (redis rdb): CRC-64 mismatch"), "{out}");
    assert!(out.contains("3 dump(s) would not load"), "{out}");
}

#[test]
fn mongodump_archives_and_their_directory_layout_check_out_and_a_cut_bson_is_named() {
    let t = tempfile::tempdir().unwrap();
    let store = init_store(t.path());
    let archive = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/mongodump/dump-w-oplog.archive");
    // The demultiplexed layout (.bson + .metadata.json per collection).
    let snap = snapshot_of(&ok(&store, &["--json", "backup", "--source", &format!("mongodb=mongodump:cat {}", archive.display())]));
    let dumps = check_dumps(&store, &snap, t.path(), 0);
    let bson: Vec<_> = dumps.iter().filter(|(p, _)| p.ends_with(".bson")).collect();
    assert!(!bson.is_empty() && bson.iter().all(|(_, (ok, what))| *ok && what.contains(" documents")), "{dumps:?}");
    assert!(dumps.iter().any(|(p, (ok, _))| p.ends_with(".metadata.json") && *ok), "{dumps:?}");
    // The archive kept whole, from stdin.
    let piped = Command::new(env!("CARGO_BIN_EXE_rpger-store"))
        .args(["--store", store.to_str().unwrap(), "--json", "backup", "--source", "mongodb=-", "--stdin-name", "mongodb.archive"])
        .stdin(fs::File::open(&archive).unwrap())
        .output()
        .unwrap();
    assert!(piped.status.success(), "{}", String::from_utf8_lossy(&piped.stderr));
    let snap2 = serde_json::from_slice::<Value>(&piped.stdout).unwrap()["snapshot"].as_str().unwrap().to_string();
    let dumps = check_dumps(&store, &snap2, t.path(), 0);
    let (ok_, what) = &dumps["mongodb/mongodb.archive"];
    assert!(*ok_ && what.starts_with("mongodump archive") && what.contains("every CRC-64 matches"), "{what}");

    // A restored copy with one collection cut inside a document and metadata that is not JSON.
    let restored = t.path().join("restored");
    ok(&store, &["restore", &snap, restored.to_str().unwrap()]);
    let mut cut = None;
    let mut meta = None;
    for e in walk(&restored) {
        let name = e.to_string_lossy().to_string();
        if name.ends_with(".bson") && fs::metadata(&e).unwrap().len() > 100 && cut.is_none() {
            let b = fs::read(&e).unwrap();
            fs::write(&e, &b[..b.len() - 7]).unwrap();
            cut = Some(name);
        } else if name.ends_with(".metadata.json") && meta.is_none() {
            fs::write(&e, b"{\"indexes\": [").unwrap();
            meta = Some(name);
        }
    }
    let (cut, meta) = (cut.expect("a .bson file with documents"), meta.unwrap());
    let bad = snapshot_of(&ok(&store, &["--json", "backup", "--source", &format!("mongodb={}", restored.join("mongodb").display())]));
    let dumps = check_dumps(&store, &bad, t.path(), 1);
    let rel = |p: &str| format!("mongodb/{}", p.split_once("/mongodb/").unwrap().1);
    let (ok_, what) = &dumps[&rel(&cut)];
    assert!(!ok_ && what.contains("cut short inside document"), "{what}");
    let (ok_, what) = &dumps[&rel(&meta)];
    assert!(!ok_ && what.contains("not valid JSON"), "{what}");
    assert_eq!(dumps.values().filter(|(ok, _)| !ok).count(), 2, "only the two damaged files: {dumps:?}");
}

#[test]
fn sqlite_databases_are_checked_by_sqlite_itself_and_a_cut_or_damaged_copy_is_named() {
    let t = tempfile::tempdir().unwrap();
    let chroma = t.path().join("chroma");
    fs::create_dir(&chroma).unwrap();
    let db = chroma.join("chroma.sqlite3");
    // A real SQLite file, written by SQLite (Python's sqlite3 module), shaped like Chroma's.
    let made = Command::new("python3")
        .arg("-c")
        .arg(
            "import sqlite3,sys\n\
             c=sqlite3.connect(sys.argv[1])\n\
             c.execute('create table collections(id text primary key, name text)')\n\
             c.execute('create table embeddings(id integer primary key, segment_id text, embedding_id text, created_at text)')\n\
             c.execute('create index e_by_id on embeddings(embedding_id)')\n\
             c.execute(\"insert into collections values ('c1','lore')\")\n\
             c.executemany('insert into embeddings(segment_id, embedding_id, created_at) values (?,?,?)', [('s1','doc-%06d' % i, '2026-12-03') for i in range(3000)])\n\
             c.commit()\n",
        )
        .arg(&db)
        .status();
    match made {
        Ok(s) if s.success() => {}
        _ => {
            eprintln!("WARNING: sqlite dump test SKIPPED: python3 with its sqlite3 module is needed to write a real SQLite file");
            return;
        }
    }
    let store = init_store(t.path());
    let snap = snapshot_of(&ok(&store, &["--json", "backup", "--source", &format!("chroma={}", chroma.display())]));
    let dumps = check_dumps(&store, &snap, t.path(), 0);
    let (ok_, what) = &dumps["chroma/chroma.sqlite3"];
    assert!(*ok_ && what.contains("integrity_check ok") && what.contains("Chroma: 1 collections, 3000 embeddings"), "{what}");
    // The scratch copies are gone.
    assert!(fs::read_dir(t.path()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with("rpger-store-dumps-")));

    // A copy cut by one page, and one whose index pages were overwritten.
    let b = fs::read(&db).unwrap();
    let page = u16::from_be_bytes([b[16], b[17]]) as usize;
    let cut_dir = t.path().join("cut");
    fs::create_dir(&cut_dir).unwrap();
    fs::write(cut_dir.join("chroma.sqlite3"), &b[..b.len() - page]).unwrap();
    let mut damaged = b.clone();
    let last = b.len() / page - 1;
    damaged[last * page + 8..last * page + page / 2].fill(0x5a);
    let bad_dir = t.path().join("damaged");
    fs::create_dir(&bad_dir).unwrap();
    fs::write(bad_dir.join("chroma.sqlite3"), &damaged).unwrap();
    let bad = snapshot_of(&ok(
        &store,
        &["--json", "backup", "--source", &format!("cut={}", cut_dir.display()), "--source", &format!("damaged={}", bad_dir.display())],
    ));
    let dumps = check_dumps(&store, &bad, t.path(), 1);
    let (ok_, what) = &dumps["cut/chroma.sqlite3"];
    assert!(!ok_ && what.contains("a cut or padded copy"), "{what}");
    let (ok_, what) = &dumps["damaged/chroma.sqlite3"];
    assert!(!ok_ && (what.contains("integrity_check") || what.contains("SQLite cannot")), "{what}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn the_demo_writes_dumps_that_check_out() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("demo");
    // The demo keeps its store in its working directory.
    let store = dir.join("store");
    let r = ok(&store, &["demo", "--size", "2000000", "--dir", dir.to_str().unwrap()]);
    assert!(r.stdout.contains(" dumps, ") && r.stdout.contains("no damage found"), "{}", r.stdout);
    let dumps = check_dumps(&store, "latest", t.path(), 0);
    for want in ["redis/dump.rdb", "redis/appendonlydir/appendonly.aof.1.incr.aof", "redis/appendonlydir/appendonly.aof.manifest"] {
        assert!(dumps[want].0, "{want}: {:?}", dumps[want]);
    }
    assert!(dumps.keys().any(|p| p.ends_with(".bson")), "{dumps:?}");
}
