//! Issue 7: near-duplicate chunks stored as deltas against base chunks — smaller nights, exact
//! restores, a damaged base named with every file that depends on it, prune keeping the bases
//! of kept deltas.

use crate::common::*;
use rpger_engine::demo::Dataset;
use rpger_engine::store::index::Index;
use rpger_engine::store::Store;
use rpger_engine::{EntryKind, Id};
use rpger_formats::pack::Encoding;
use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

fn backup_night(store: &Path, night: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args: Vec<String> = vec!["--json".into(), "backup".into()];
    args.extend(extra.iter().map(|s| s.to_string()));
    for s in ["mongodb", "redis", "chroma"] {
        args.push("--source".into());
        args.push(format!("{s}={}", night.join(s).display()));
    }
    ok(store, &args).json()
}

/// Three generated nights, written under `dir`.
fn nights(dir: &Path) -> Vec<PathBuf> {
    let mut data = Dataset::new(11, 6_000_000);
    (1..=3)
        .map(|n| {
            if n > 1 {
                data.advance();
            }
            let d = dir.join(format!("night-{n}"));
            data.write(&d).unwrap();
            d
        })
        .collect()
}

fn users_of(store: &Path, ids: &HashSet<Id>) -> BTreeSet<(String, String)> {
    let s = Store::open(store).unwrap();
    let mut out = BTreeSet::new();
    for name in s.list_snapshots().unwrap() {
        for src in s.read_snapshot(&name).unwrap().sources {
            for e in s.read_manifest(&src.manifest).unwrap().entries {
                if let EntryKind::File { chunks, .. } = &e.kind {
                    if chunks.iter().any(|c| ids.contains(c)) {
                        out.insert((name.clone(), format!("{}/{}", src.name, String::from_utf8_lossy(&e.path))));
                    }
                }
            }
        }
    }
    out
}

#[test]
fn similar_chunks_are_stored_as_deltas_and_restore_exactly() {
    let t = tempfile::tempdir().unwrap();
    let ns = nights(t.path());
    let (with, without) = (init_store(&t.path().join("a")), init_store(&t.path().join("b")));
    let mut news = vec![];
    for n in &ns {
        let a = backup_night(&with, n, &[])["new_stored_bytes"].as_u64().unwrap();
        let b = backup_night(&without, n, &["--no-delta"])["new_stored_bytes"].as_u64().unwrap();
        news.push((a, b));
    }
    eprintln!("DELTA REPORT: new stored bytes per night (delta, no delta): {news:?}");
    assert_eq!(news[0].0, news[0].1, "night 1 (less than a pack) has nothing durable to delta against");
    for (a, b) in &news[1..] {
        assert!(a * 2 < *b, "deltas should at least halve a night: {a} vs {b}");
    }
    assert!(deltas(&without).is_empty());
    let st = ok(&with, &["--json", "stats"]).json();
    assert!(st["delta_chunks"].as_u64().unwrap() > 0, "{st}");
    assert!(st["delta_saved_bytes"]["redis"].as_u64().unwrap() > 0, "{st}");
    assert!(ok(&with, &["stats"]).stdout.contains("delta saved"));
    // Every night restores exactly; verify --deep rebuilds every delta; the archive-free
    // one-source restore works too.
    let snaps = snapshot_names(&with);
    for (i, n) in ns.iter().enumerate() {
        let target = t.path().join(format!("r{i}"));
        ok(&with, &["restore", &snaps[i], target.to_str().unwrap()]);
        for s in ["mongodb", "redis", "chroma"] {
            assert_same_tree(&n.join(s), &target.join(s));
        }
    }
    let v = ok(&with, &["--json", "verify", "--deep", "--files", "--all", "--log-dir", t.path().join("logs").to_str().unwrap()]).json();
    assert_eq!(v["ok"], true, "{v}");
    // A chunk is never a delta of a delta.
    let s = Store::open(&with).unwrap();
    let index = Index::load(&s).unwrap();
    for (_, bases) in deltas(&with) {
        for b in bases {
            assert_ne!(index.get(&b).unwrap().encoding, Encoding::ZstdDelta);
        }
    }
}

#[test]
fn later_chunks_of_one_backup_are_deltas_against_its_earlier_durable_chunks() {
    // 68 MiB of noise (stored raw: two 32 MiB packs are durable before the copy's chunks are
    // encoded, whatever the timing, since the writer is at most one batch behind), then the
    // first 8 MiB again with a few bytes changed every 4 KiB.
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut data = noise(71, 68 << 20);
    let mut copy = data[..8 << 20].to_vec();
    for i in (0..copy.len()).step_by(4096) {
        copy[i] ^= 0x5a;
        copy[i + 1] = copy[i + 1].wrapping_add(1);
    }
    data.extend_from_slice(&copy);
    fs::write(src.join("dump.bin"), &data).unwrap();
    let source = format!("db={}", src.display());
    let (with, without) = (init_store(&t.path().join("a")), init_store(&t.path().join("b")));
    let a = ok(&with, &["--json", "backup", "--source", &source]).json()["new_stored_bytes"].as_u64().unwrap();
    let b = ok(&without, &["--json", "backup", "--no-delta", "--source", &source]).json()["new_stored_bytes"].as_u64().unwrap();
    eprintln!("IN-RUN DELTA REPORT: stored {a} bytes with deltas, {b} without");
    assert!(b > (75 << 20), "noise does not compress: {b}");
    assert!(a < (70 << 20), "the changed copy should cost far less than its 8 MiB: {a}");
    // Every delta's bases are chunks stored whole by the same run.
    let ds = deltas(&with);
    assert!(ds.len() > 100, "{}", ds.len());
    let index = Index::load(&Store::open(&with).unwrap()).unwrap();
    for (_, bases) in &ds {
        assert!(bases.iter().all(|b| index.get(b).is_some_and(|l| l.encoding != Encoding::ZstdDelta)));
    }
    ok(&with, &["verify", "--deep"]);
    let out = t.path().join("out");
    ok(&with, &["restore", "latest", out.to_str().unwrap()]);
    assert!(fs::read(out.join("db/dump.bin")).unwrap() == data, "restored file differs");
}

#[test]
fn a_damaged_base_names_every_file_that_depends_on_it() {
    let t = tempfile::tempdir().unwrap();
    let ns = nights(t.path());
    let store = init_store(&t.path().join("s"));
    for n in &ns {
        backup_night(&store, n, &[]);
    }
    let ds = deltas(&store);
    assert!(!ds.is_empty(), "the generated nights must give deltas");
    // The base used by the most deltas.
    let mut count: std::collections::HashMap<Id, usize> = Default::default();
    for (_, bases) in &ds {
        for b in bases {
            *count.entry(*b).or_default() += 1;
        }
    }
    let base = *count.iter().max_by_key(|(id, n)| (**n, **id)).unwrap().0;
    let dependents: HashSet<Id> = ds.iter().filter(|(_, b)| b.contains(&base)).map(|(d, _)| *d).collect();
    let mut hit: HashSet<Id> = dependents.clone();
    hit.insert(base);
    let expected = users_of(&store, &hit);
    // Flip a bit in the middle of the base's blob.
    let s = Store::open(&store).unwrap();
    let loc = Index::load(&s).unwrap().get(&base).unwrap();
    let path = s.pack_path(&loc.pack);
    let mut bytes = fs::read(&path).unwrap();
    bytes[(loc.offset + loc.len / 2) as usize] ^= 0x10;
    fs::write(&path, bytes).unwrap();
    let logs = t.path().join("logs");
    let r = run(&store, &["--json", "verify", "--deep", "--all", "--log-dir", logs.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let v = r.json();
    let named: BTreeSet<(String, String)> = v["affected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (a["snapshot"].as_str().unwrap().to_string(), format!("{}/{}", a["source"].as_str().unwrap(), a["path"].as_str().unwrap()))
        })
        .collect();
    assert_eq!(named, expected, "verify must name every file that uses the base or a delta built on it");
    assert!(v.to_string().contains(&base.short()), "the base is named: {v}");
    // A restore of the last night restores what it can and names the damaged files.
    let target = t.path().join("r");
    let r = run(&store, &["restore", "latest", target.to_str().unwrap()]);
    let last = snapshot_names(&store).pop().unwrap();
    if expected.iter().any(|(s, _)| *s == last) {
        assert_eq!(r.code, 1, "{}", r.stderr);
    }
}

#[test]
fn prune_rebases_deltas_whose_base_no_file_uses_and_keeps_the_others() {
    let t = tempfile::tempdir().unwrap();
    let ns = nights(t.path());
    let store = init_store(&t.path().join("s"));
    for n in &ns {
        backup_night(&store, n, &[]);
    }
    ok(&store, &["forget", "--keep-last", "2"]);
    // Some kept delta leans on a base that no kept file uses any more: only the delta keeps it.
    let kept = referenced(&store);
    let orphan_bases: Vec<Id> =
        deltas(&store).into_iter().filter(|(d, _)| kept.contains(d)).flat_map(|(_, b)| b).filter(|b| !kept.contains(b)).collect();
    assert!(!orphan_bases.is_empty(), "the scenario needs a base used only through deltas");
    // Prune re-bases those deltas (one stored whole, the others as deltas of it) and drops the
    // old base, repacking everything not fully live.
    let r = ok(&store, &["--json", "prune", "--max-repack-ratio", "0"]).json();
    assert!(r["rebased"].as_u64().unwrap() > 0, "{r}");
    let s = Store::open(&store).unwrap();
    let index = Index::load(&s).unwrap();
    let kept = referenced(&store);
    for b in &orphan_bases {
        assert!(index.get(b).is_none() || kept.contains(b), "base {} kept although only deltas used it", b.short());
    }
    // Every delta left leans on whole chunks that are in the store.
    for (d, bases) in deltas(&store) {
        if index.get(&d).is_some_and(|l| l.encoding == Encoding::ZstdDelta) {
            for b in bases {
                let l = index.get(&b).unwrap_or_else(|| panic!("delta {} lost its base {}", d.short(), b.short()));
                assert_ne!(l.encoding, Encoding::ZstdDelta);
            }
        }
    }
    let v = ok(&store, &["--json", "verify", "--deep", "--all", "--log-dir", t.path().join("logs").to_str().unwrap()]).json();
    assert_eq!(v["ok"], true, "{v}");
    let target = t.path().join("r");
    ok(&store, &["restore", "latest", target.to_str().unwrap()]);
    for src in ["mongodb", "redis", "chroma"] {
        assert_same_tree(&ns[2].join(src), &target.join(src));
    }
}
