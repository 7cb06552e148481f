//! Issue 3: verify and verify --deep find each fault, name the snapshots and files that depend
//! on it, exit 1, and leave the store byte-identical; a damaged store can still be restored from.

use crate::common::*;
use rpger_engine::demo::Dataset;
use rpger_engine::store::pack::read_trailer;
use rpger_engine::store::Store;
use rpger_engine::{EntryKind, Id};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// A store with three nightly snapshots of generated dumps.
struct Fixture {
    _t: tempfile::TempDir,
    dir: PathBuf,
    store: PathBuf,
    snapshots: Vec<String>,
}

fn fixture() -> Fixture {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().to_path_buf();
    let store = init_store(&dir);
    let mut data = Dataset::new(5, 3_000_000);
    let mut snapshots = vec![];
    for n in 0..3 {
        if n > 0 {
            data.advance();
        }
        let night = dir.join(format!("night-{n}"));
        data.write(&night).unwrap();
        let mut args = vec!["--json".to_string(), "backup".into()];
        for s in ["mongodb", "redis", "chroma"] {
            args.extend(["--source".to_string(), format!("{s}={}", night.join(s).display())]);
        }
        snapshots.push(ok(&store, &args).json()["snapshot"].as_str().unwrap().to_string());
    }
    Fixture { _t: t, dir, store, snapshots }
}

/// BLAKE3 of every file in the store except the lock directory, by relative path.
fn store_state(store: &Path) -> BTreeMap<PathBuf, blake3::Hash> {
    let mut out = BTreeMap::new();
    let mut stack = vec![store.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                if p.file_name().unwrap() != "locks" {
                    stack.push(p);
                }
            } else {
                out.insert(p.strip_prefix(store).unwrap().to_path_buf(), blake3::hash(&fs::read(&p).unwrap()));
            }
        }
    }
    out
}

fn verify_json(f: &Fixture, args: &[&str], code: i32) -> serde_json::Value {
    let log = f.dir.join("logs");
    let mut a = vec!["--json", "verify", "--log-dir", log.to_str().unwrap()];
    a.extend_from_slice(args);
    let r = run(&f.store, &a);
    assert_eq!(r.code, code, "verify {args:?}: stdout {} stderr {}", r.stdout, r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    r.json()
}

/// Every (snapshot, "source/path") whose file uses chunk `id`.
fn users_of(store: &Path, id: &Id) -> BTreeSet<(String, String)> {
    let s = Store::open(store).unwrap();
    let mut out = BTreeSet::new();
    for name in s.list_snapshots().unwrap() {
        let snap = s.read_snapshot(&name).unwrap();
        for src in &snap.sources {
            for e in s.read_manifest(&src.manifest).unwrap().entries {
                if let EntryKind::File { chunks, .. } = &e.kind {
                    if chunks.contains(id) {
                        out.insert((name.clone(), format!("{}/{}", src.name, String::from_utf8_lossy(&e.path))));
                    }
                }
            }
        }
    }
    out
}

/// `ids` plus every delta chunk built on one of them (verify names their files too).
/// `ids` and every delta whose chain reaches one of them (a delta of a delta too).
fn with_delta_dependents(store: &Path, ids: &BTreeSet<Id>) -> BTreeSet<Id> {
    let deltas = deltas(store);
    let mut out = ids.clone();
    loop {
        let more: Vec<Id> =
            deltas.iter().filter(|(d, bases)| !out.contains(d) && bases.iter().any(|b| out.contains(b))).map(|(d, _)| *d).collect();
        if more.is_empty() {
            return out;
        }
        out.extend(more);
    }
}

fn affected(v: &serde_json::Value) -> BTreeSet<(String, String)> {
    v["affected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (a["snapshot"].as_str().unwrap().to_string(), format!("{}/{}", a["source"].as_str().unwrap(), a["path"].as_str().unwrap()))
        })
        .collect()
}

fn problem_objects(v: &serde_json::Value) -> Vec<String> {
    v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| format!("{}: {}", p["object"].as_str().unwrap(), p["what"].as_str().unwrap()))
        .collect()
}

/// All packs, and the one holding the most chunks the newest snapshot uses.
fn packs(store: &Path) -> Vec<(Id, PathBuf)> {
    let s = Store::open(store).unwrap();
    let mut out = vec![];
    for d in fs::read_dir(store.join("packs")).unwrap().flatten() {
        for f in fs::read_dir(d.path()).unwrap().flatten() {
            let id: Id = f.file_name().to_str().unwrap().parse().unwrap();
            assert_eq!(s.pack_path(&id), f.path());
            out.push((id, f.path()));
        }
    }
    out.sort();
    out
}

fn flip_bit(path: &Path, offset: u64) {
    let mut b = fs::read(path).unwrap();
    b[offset as usize] ^= 0x20;
    fs::write(path, b).unwrap();
}

/// Runs `fault` on a fresh fixture, then deep-verifies every snapshot: exit 1, the store
/// unchanged by verify. Returns the fixture and the report.
fn with_fault(fault: impl FnOnce(&Fixture)) -> (Fixture, serde_json::Value) {
    let f = fixture();
    verify_json(&f, &["--all", "--deep"], 0);
    fault(&f);
    let before = store_state(&f.store);
    let v = verify_json(&f, &["--all", "--deep"], 1);
    assert_eq!(v["ok"], false);
    assert_eq!(store_state(&f.store), before, "verify modified the store");
    (f, v)
}

#[test]
fn healthy_store_passes_quick_and_deep_and_logs_each_run() {
    let f = fixture();
    let q = verify_json(&f, &[], 0);
    assert_eq!(q["snapshots"].as_array().unwrap().len(), 1, "quick verify checks the latest by default");
    let d = verify_json(&f, &["--all", "--deep", "--files"], 0);
    assert_eq!(d["snapshots"].as_array().unwrap().len(), 3);
    assert!(d["chunks_checked"].as_u64().unwrap() > 100 && d["files_checked"].as_u64().unwrap() > 5);
    let log = fs::read_to_string(f.dir.join("logs/backup-verify.log")).unwrap();
    let lines: Vec<_> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(lines[1].contains("mode=deep") && lines[1].contains("result=ok") && lines[1].contains(&f.snapshots[2]), "{log}");
    // human output ends with the summary line
    let r = ok(&f.store, &["verify", "--deep", "--log-dir", f.dir.join("logs").to_str().unwrap()]);
    assert!(r.stdout.trim_end().lines().last().unwrap().contains("no damage found"), "{}", r.stdout);
}

#[test]
fn a_bit_flipped_in_a_compressed_blob() {
    let mut target: Option<(Id, BTreeSet<(String, String)>)> = None;
    let (f, v) = with_fault(|f| {
        let s = Store::open(&f.store).unwrap();
        let (pack, path) = packs(&f.store).remove(0);
        let (_, blobs) = read_trailer(&s, &pack).unwrap();
        // Not a delta base: this is the one-chunk case (a damaged base: tests/delta.rs).
        let bases: BTreeSet<Id> = deltas(&f.store).into_iter().flat_map(|(_, b)| b).collect();
        let b = blobs
            .iter()
            .find(|b| b.len > 1000 && !bases.contains(&b.id) && !users_of(&f.store, &b.id).is_empty())
            .expect("a large referenced blob that no delta is built on");
        flip_bit(&path, b.offset as u64 + b.len as u64 / 2);
        target = Some((b.id, users_of(&f.store, &b.id)));
    });
    let (id, users) = target.unwrap();
    assert!(problem_objects(&v).iter().any(|p| p.contains("1 of") && p.contains("damaged")), "{v}");
    assert_eq!(affected(&v), users, "verify must name exactly the files that use chunk {}", id.short());
    let a = &v["affected"][0];
    assert_eq!(a["unreadable_chunks"], 1);
    assert!(a["reason"].as_str().unwrap().contains(&id.short()), "{a}");
    // The human report says it the issue's way.
    let r = run(&f.store, &["verify", "--all", "--deep", "--log-dir", f.dir.join("logs").to_str().unwrap()]);
    assert_eq!(r.code, 1);
    let (snap, path) = users.iter().next().unwrap();
    assert!(r.stdout.contains(&format!("{snap} {path}: 1 of ")) && r.stdout.contains("chunks unreadable"), "{}", r.stdout);
    assert!(r.stdout.trim_end().lines().last().unwrap().contains("DAMAGE FOUND"), "{}", r.stdout);
    // Undamaged sources still restore; the damaged file fails with the same chunk named.
    let (snap, path) = users.iter().next().unwrap().clone();
    let source = path.split('/').next().unwrap();
    let other = ["mongodb", "redis", "chroma"].into_iter().find(|s| *s != source && !users.iter().any(|(_, p)| p.starts_with(s))).unwrap();
    let t1 = f.dir.join("restore-ok");
    ok(&f.store, &["restore", &snap, t1.to_str().unwrap(), "--only", other]);
    let t2 = f.dir.join("restore-bad");
    let r = fails(&f.store, &["restore", &snap, t2.to_str().unwrap(), "--only", source], 1);
    assert!(r.stderr.contains(&path) && r.stderr.contains(&id.short()), "{}", r.stderr);
}

#[test]
fn a_bit_flipped_in_a_pack_trailer() {
    let mut flipped = None;
    let (f, v) = with_fault(|f| {
        let (pack, path) = packs(&f.store).remove(0);
        let len = fs::metadata(&path).unwrap().len();
        flip_bit(&path, len - 44 - 48 + 5); // inside the last trailer entry's chunk id
        flipped = Some(pack);
    });
    let pack = flipped.unwrap();
    let p = v["problems"].as_array().unwrap().iter().find(|p| p["object"] == format!("pack {}", pack.short())).expect("the pack is named");
    assert!(p["what"].as_str().unwrap().contains("checksum"), "{p}");
    assert!(!p["dependents"].as_array().unwrap().is_empty(), "the files that use the pack are named: {p}");
    // The index still locates every chunk: the data itself is intact and restores.
    assert!(v["affected"].as_array().unwrap().is_empty(), "{v}");
    ok(&f.store, &["restore", "latest", f.dir.join("r").to_str().unwrap()]);
}

#[test]
fn a_truncated_pack() {
    let mut lost = BTreeSet::new();
    let (_f, v) = with_fault(|f| {
        let s = Store::open(&f.store).unwrap();
        let (pack, path) = packs(&f.store).remove(0);
        let (len, blobs) = read_trailer(&s, &pack).unwrap();
        let cut = len / 2;
        let ids: BTreeSet<Id> = blobs.iter().filter(|b| b.offset as u64 + b.len as u64 > cut).map(|b| b.id).collect();
        for id in with_delta_dependents(&f.store, &ids) {
            lost.extend(users_of(&f.store, &id));
        }
        fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(cut).unwrap();
    });
    assert!(!lost.is_empty());
    let got = affected(&v);
    assert_eq!(got, lost, "extra {:?} missing {:?}", got.difference(&lost).collect::<Vec<_>>(), lost.difference(&got).collect::<Vec<_>>());
    assert!(problem_objects(&v).iter().any(|p| p.contains("truncated") || p.contains("past the end")), "{v}");
}

#[test]
fn a_deleted_pack() {
    let mut lost = BTreeSet::new();
    let (_f, v) = with_fault(|f| {
        let s = Store::open(&f.store).unwrap();
        let (pack, path) = packs(&f.store).remove(0);
        let ids: BTreeSet<Id> = read_trailer(&s, &pack).unwrap().1.iter().map(|b| b.id).collect();
        for id in with_delta_dependents(&f.store, &ids) {
            lost.extend(users_of(&f.store, &id));
        }
        fs::remove_file(path).unwrap();
    });
    assert_eq!(affected(&v), lost);
    assert!(problem_objects(&v).iter().any(|p| p.contains("missing")), "{v}");
}

#[test]
fn a_deleted_index_segment() {
    let mut deleted = None;
    let (f, v) = with_fault(|f| {
        let seg = fs::read_dir(f.store.join("index")).unwrap().flatten().next().unwrap().path();
        fs::remove_file(&seg).unwrap();
        deleted = Some(seg);
    });
    let _ = deleted;
    // deep verify still read and checked the data in every pack
    assert_eq!(v["packs_read"].as_array().unwrap().len(), packs(&f.store).len());
    assert!(v["chunks_checked"].as_u64().unwrap() > 0);
    assert!(problem_objects(&v).iter().any(|p| p.contains("in no index segment") && p.contains("still in packs")), "{v}");
    assert!(!affected(&v).is_empty());
    // quick verify says what is wrong too
    let q = verify_json(&f, &["--all"], 1);
    assert!(problem_objects(&q).iter().any(|p| p.contains("in no index segment")), "{q}");
    assert_eq!(affected(&q), affected(&v));
}

#[test]
fn a_corrupted_snapshot_file() {
    let mut name = String::new();
    let (_f, v) = with_fault(|f| {
        name = f.snapshots[1].clone();
        flip_bit(&f.store.join("snapshots").join(&name), 12);
    });
    assert!(problem_objects(&v).iter().any(|p| p.starts_with(&format!("snapshot {name}: "))), "{v}");
}

#[test]
fn a_corrupted_manifest() {
    let mut which = (String::new(), String::new());
    let (_f, v) = with_fault(|f| {
        let s = Store::open(&f.store).unwrap();
        let snap = s.read_snapshot(&f.snapshots[2]).unwrap();
        let src = snap.sources.iter().find(|x| x.name == "redis").unwrap();
        let hex = src.manifest.to_hex();
        flip_bit(&f.store.join("manifests").join(&hex[..2]).join(&hex), 20);
        which = (snap.name.clone(), src.name.clone());
    });
    assert!(
        problem_objects(&v).iter().any(|p| p.contains(&format!("snapshot {}, source {}", which.0, which.1))),
        "the damaged manifest's snapshot and source are named: {v}"
    );
}

#[test]
fn an_unknown_file_in_packs() {
    let (_f, v) = with_fault(|f| {
        fs::write(f.store.join("packs/zz-not-a-pack"), b"junk").unwrap();
        let sub = fs::read_dir(f.store.join("packs")).unwrap().flatten().find(|e| e.path().is_dir()).unwrap().path();
        fs::write(sub.join("notes.txt"), b"junk").unwrap();
    });
    let probs = problem_objects(&v);
    assert!(probs.iter().any(|p| p.contains("packs/zz-not-a-pack")), "{v}");
    assert!(probs.iter().any(|p| p.contains("notes.txt")), "{v}");
}

#[test]
fn read_data_subsets_cover_every_pack_exactly_once() {
    let f = fixture();
    let all: BTreeSet<String> = packs(&f.store).iter().map(|p| p.0.to_hex()).collect();
    let mut seen: Vec<String> = vec![];
    let mut chunks = 0;
    for n in 1..=4 {
        let v = verify_json(&f, &["--all", "--deep", "--read-data-subset", &format!("{n}/4")], 0);
        seen.extend(v["packs_read"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()));
        chunks += v["chunks_checked"].as_u64().unwrap();
    }
    let full = verify_json(&f, &["--all", "--deep"], 0);
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), unique.len(), "a pack was read by two parts");
    assert_eq!(unique, all);
    assert_eq!(chunks, full["chunks_checked"].as_u64().unwrap());
    fails(&f.store, &["verify", "--deep", "--read-data-subset", "5/4"], 2);
}

#[test]
fn verify_runs_while_a_backup_is_in_progress() {
    let f = fixture();
    // A backup reading stdin holds its (shared) lock until stdin closes.
    let mut child = bin()
        .args(["--store", f.store.to_str().unwrap(), "backup", "--source", "live=-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&noise(1, 100_000)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(fs::read_dir(f.store.join("locks")).unwrap().flatten().any(|e| e.file_name().to_string_lossy().ends_with(".info")));
    verify_json(&f, &["--all", "--deep"], 0);
    drop(stdin);
    assert!(child.wait().unwrap().success());
}
