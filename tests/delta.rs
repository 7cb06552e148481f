//! Issue 7: near-duplicate chunks stored as deltas against base chunks (chains of at most
//! `MAX_DEPTH` deltas) — smaller nights, exact restores, a damaged base or chain link named with
//! every file that depends on it, prune keeping the bases of kept deltas.

use crate::common::*;
use rpger_engine::demo::Dataset;
use rpger_engine::store::index::Index;
use rpger_engine::store::Store;
use rpger_engine::{EntryKind, Id};
use rpger_formats::delta::MAX_DEPTH;
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

/// The three generated nights under `dir`, backed up in order into a new store `dir/s`.
fn three_nights_backed_up(dir: &Path) -> (Vec<PathBuf>, PathBuf) {
    let ns = nights(dir);
    let store = init_store(&dir.join("s"));
    for n in &ns {
        backup_night(&store, n, &[]);
    }
    (ns, store)
}

/// `from` and every delta built on one of them, directly or along a chain.
fn with_dependents(store: &Path, from: &[Id]) -> HashSet<Id> {
    let ds = deltas(store);
    let mut hit: HashSet<Id> = from.iter().copied().collect();
    loop {
        let more: Vec<Id> = ds.iter().filter(|(d, b)| !hit.contains(d) && b.iter().any(|b| hit.contains(b))).map(|(d, _)| *d).collect();
        if more.is_empty() {
            return hit;
        }
        hit.extend(more);
    }
}

/// (longest chain, broken chains) from `stats`.
fn chains(store: &Path) -> (u64, u64) {
    let st = ok(store, &["--json", "stats"]).json();
    (st["longest_delta_chain"].as_u64().unwrap(), st["broken_delta_chains"].as_u64().unwrap())
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
    // Night 3's version of a region is a delta against night 2's, itself a delta: a chain, at
    // most MAX_DEPTH long, and a delta built on a delta names that base alone.
    let s = Store::open(&with).unwrap();
    let index = Index::load(&s).unwrap();
    let mut chained = 0;
    for (_, bases) in deltas(&with) {
        if bases.iter().any(|b| index.get(b).unwrap().encoding == Encoding::ZstdDelta) {
            chained += 1;
            assert_eq!(bases.len(), 1, "a delta base is used alone");
        }
    }
    assert!(chained > 0, "the third night must chain onto the second");
    let (longest, broken) = chains(&with);
    assert!((2..=MAX_DEPTH as u64).contains(&longest), "longest chain {longest}");
    assert_eq!(broken, 0);
    assert!(ok(&with, &["stats"]).stdout.contains("longest delta chain"));
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
    let (_, store) = three_nights_backed_up(t.path());
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
    let expected = users_of(&store, &with_dependents(&store, &[base]));
    let (v, named) = flip_and_verify(&store, &base, &t.path().join("logs"));
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

/// Every regular file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out
}

/// Flips a bit in the middle of `id`'s blob, runs `verify --deep --all` (which must fail) and
/// returns its report and the (snapshot, source/path) of every file it names.
fn flip_and_verify(store: &Path, id: &Id, logs: &Path) -> (serde_json::Value, BTreeSet<(String, String)>) {
    let s = Store::open(store).unwrap();
    let loc = Index::load(&s).unwrap().get(id).unwrap();
    let path = s.pack_path(&loc.pack);
    let mut bytes = fs::read(&path).unwrap();
    bytes[(loc.offset + loc.len / 2) as usize] ^= 0x10;
    fs::write(&path, bytes).unwrap();
    let r = run(store, &["--json", "verify", "--deep", "--all", "--log-dir", logs.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stdout);
    let v = r.json();
    let named = v["affected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (a["snapshot"].as_str().unwrap().to_string(), format!("{}/{}", a["source"].as_str().unwrap(), a["path"].as_str().unwrap()))
        })
        .collect();
    (v, named)
}

#[test]
fn a_damaged_link_in_a_delta_chain_names_every_file_built_on_it() {
    let t = tempfile::tempdir().unwrap();
    let (ns, store) = three_nights_backed_up(t.path());
    // A delta that is itself the base of another delta: a link in the middle of a chain.
    let s = Store::open(&store).unwrap();
    let index = Index::load(&s).unwrap();
    let ds = deltas(&store);
    let link = ds
        .iter()
        .flat_map(|(_, bases)| bases.iter())
        .find(|b| index.get(b).is_some_and(|l| l.encoding == Encoding::ZstdDelta && l.len > 200))
        .copied()
        .expect("the generated nights must chain");
    let hit = with_dependents(&store, &[link]);
    assert!(hit.len() > 1);
    let expected = users_of(&store, &hit);
    let (v, named) = flip_and_verify(&store, &link, &t.path().join("logs"));
    assert_eq!(named, expected, "verify must name the files of the link and of every delta above it");
    assert!(v.to_string().contains(&link.short()), "the link is named: {v}");
    // Every other file of every night still restores exactly.
    for (i, name) in snapshot_names(&store).iter().enumerate() {
        let target = t.path().join(format!("r{i}"));
        let r = run(&store, &["restore", name, target.to_str().unwrap()]);
        let damaged: BTreeSet<&String> = expected.iter().filter(|(s, _)| s == name).map(|(_, p)| p).collect();
        assert_eq!(r.code, if damaged.is_empty() { 0 } else { 1 }, "{}", r.stderr);
        for src in ["mongodb", "redis", "chroma"] {
            for e in walk(&ns[i].join(src)) {
                let rel = format!("{src}/{}", e.strip_prefix(ns[i].join(src)).unwrap().display());
                if !damaged.contains(&rel) {
                    assert_eq!(fs::read(&e).unwrap(), fs::read(target.join(&rel)).unwrap(), "{rel} of {name}");
                }
            }
        }
    }
}

#[test]
fn prune_rebases_deltas_whose_base_no_file_uses_and_keeps_the_others() {
    let t = tempfile::tempdir().unwrap();
    let (ns, store) = three_nights_backed_up(t.path());
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
    // Every delta left has its bases in the store, and every chain ends in a whole chunk.
    for (d, bases) in deltas(&store) {
        if index.get(&d).is_some_and(|l| l.encoding == Encoding::ZstdDelta) {
            for b in bases {
                assert!(index.get(&b).is_some(), "delta {} lost its base {}", d.short(), b.short());
            }
        }
    }
    let (longest, broken) = chains(&store);
    assert!(longest <= MAX_DEPTH as u64 && broken == 0, "longest {longest}, broken {broken}");
    let v = ok(&store, &["--json", "verify", "--deep", "--all", "--log-dir", t.path().join("logs").to_str().unwrap()]).json();
    assert_eq!(v["ok"], true, "{v}");
    let target = t.path().join("r");
    ok(&store, &["restore", "latest", target.to_str().unwrap()]);
    for src in ["mongodb", "redis", "chroma"] {
        assert_same_tree(&ns[2].join(src), &target.join(src));
    }
}

#[test]
fn a_delta_chain_that_loops_or_runs_too_deep_is_refused_not_followed() {
    use rpger_engine::delta::{self, ChunkReader};
    use rpger_engine::store::pack::{PackReader, PackWriter};
    let t = tempfile::tempdir().unwrap();
    let store = init_store(&t.path().join("s"));
    let s = Store::open(&store).unwrap();
    // A hostile store: a chain of MAX_DEPTH + 1 deltas over a whole chunk, and two deltas that
    // name each other. Contents do not matter: the chain must be refused before any is decoded.
    let whole = b"a chunk stored whole".to_vec();
    let ids: Vec<Id> = (0..=MAX_DEPTH).map(|i| Id([i + 1; 32])).collect();
    let (a, b) = (Id([100; 32]), Id([101; 32]));
    let mut w = PackWriter::new(&s);
    let mut packs = vec![];
    let (enc, stored) = rpger_engine::compress::compress(&whole, 3);
    packs.extend(w.add(Id::of(&whole), enc, &stored, whole.len() as u32).unwrap());
    let frame = delta::compress(b"x", &whole, 1).unwrap();
    let mut below = Id::of(&whole);
    for id in &ids {
        packs.extend(w.add(*id, Encoding::ZstdDelta, &rpger_formats::delta::encode_blob(&[below], &frame), 1).unwrap());
        below = *id;
    }
    packs.extend(w.add(a, Encoding::ZstdDelta, &rpger_formats::delta::encode_blob(&[b], &frame), 1).unwrap());
    packs.extend(w.add(b, Encoding::ZstdDelta, &rpger_formats::delta::encode_blob(&[a], &frame), 1).unwrap());
    packs.extend(w.finish().unwrap());
    let mut index = Index::load(&s).unwrap();
    for p in &packs {
        index.add_pack(p.id, &p.entries);
    }
    index.flush(&s).unwrap();
    let index = Index::load(&s).unwrap();
    let reader = PackReader::new(&s);
    let chunks = ChunkReader { index: &index, packs: &reader };
    for id in [*ids.last().unwrap(), a, b] {
        let e = chunks.read(&id).unwrap_err().to_string();
        assert!(e.contains(&format!("longer than {MAX_DEPTH} deltas")), "{e}");
    }
    // `stats` counts them as broken chains (the top of the long chain, and both loop members).
    let (longest, broken) = chains(&store);
    assert_eq!((longest, broken), (MAX_DEPTH as u64, 3), "the chain's first MAX_DEPTH links are fine");
}
