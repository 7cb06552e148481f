//! Prune: reclaim the space of data no snapshot references.
//!
//! Under the exclusive lock: mark every chunk reachable from the remaining snapshots; delete packs
//! with nothing live; repack the emptiest partly-used packs until the unused bytes left are at
//! most `max_repack_ratio` times the live bytes; then, in this order, make the repacked data durable, write one new
//! index segment listing every live chunk, delete the old segments, delete the old packs.
//!
//! Every prefix of that order is a valid store: before the new segment is durable the old index
//! and packs are untouched; once it is, it alone locates every live chunk, so deleting old
//! segments and packs can stop anywhere. A rerun recomputes the plan from what is on disk and
//! finishes the job (packs no index names and no live chunk needs are deleted).

use crate::delta::ChunkReader;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::fsutil;
use crate::store::index::Index;
use crate::store::lock::{self, LockMode};
use crate::store::pack::{read_trailer, FinishedPack, PackReader, PackWriter};
use crate::store::Store;
use rpger_formats::delta;
use rpger_formats::index::{Location, Segment};
use rpger_formats::pack::{self, Encoding};
use rpger_formats::snapshot::EntryKind;
use rpger_formats::Id;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::time::Duration;

/// Options of one prune.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Compute and report the plan; change nothing.
    pub dry_run: bool,
    /// Most unused bytes left inside partly-used packs, as a fraction of the live bytes; the
    /// emptiest packs are repacked first until it holds. 0 repacks every partly-used pack.
    pub max_repack_ratio: f64,
    /// How long to wait for the exclusive lock.
    pub lock_wait: Duration,
    /// Test hook: abort the process after this many protocol steps (crash-safety tests).
    pub crash_after_steps: Option<u64>,
}

/// What prune will do (dry run) or did.
#[derive(Debug, Clone, Default)]
pub struct PruneReport {
    /// Snapshots whose chunks are live.
    pub snapshots: usize,
    /// Distinct live chunks.
    pub live_chunks: usize,
    /// Packs deleted because nothing in them is live.
    pub packs_deleted: usize,
    /// Packs whose live blobs were copied to new packs, then deleted.
    pub packs_repacked: usize,
    /// New packs written by repacking.
    pub packs_written: usize,
    /// Packs kept as they are.
    pub packs_kept: usize,
    /// Delta chunks re-encoded because the chunk they were built on is no longer used by any
    /// file: one of them is stored whole and the others as deltas against it, so the old base
    /// can go.
    pub rebased: usize,
    /// Stored bytes of blobs no snapshot needs (what forgetting freed).
    pub unused_bytes: u64,
    /// Live bytes copied by repacking.
    pub repacked_bytes: u64,
    /// Unused bytes left in kept packs.
    pub unused_left: u64,
    /// Index segments replaced by the new one.
    pub segments_replaced: usize,
    /// Store size before and after (after = estimate on a dry run).
    pub bytes_before: u64,
    /// Store size after.
    pub bytes_after: u64,
    /// Whether anything was changed.
    pub dry_run: bool,
}

impl PruneReport {
    /// Bytes the store shrank by.
    pub fn reclaimed(&self) -> u64 {
        self.bytes_before.saturating_sub(self.bytes_after)
    }
}

/// Counts protocol steps; aborts at the configured one (test hook).
struct Steps {
    n: u64,
    crash_after: Option<u64>,
}

impl Steps {
    fn step(&mut self) {
        self.n += 1;
        if self.crash_after == Some(self.n) {
            // Like kill -9 at this exact point: no destructors, no cleanup.
            std::process::abort();
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct PackUse {
    size: u64,
    used: u64,
}

/// Prunes the store.
///
/// # Errors
/// Refuses to run (deleting nothing) when a snapshot, manifest or index segment is unreadable,
/// when a live chunk is found nowhere, or when a blob to be repacked is damaged: the message says
/// which, and `verify` says more.
pub fn prune(store: &Store, opts: &PruneOptions) -> Result<PruneReport> {
    if !(0.0..=1.0).contains(&opts.max_repack_ratio) {
        return Err(Error::new(ErrorKind::InvalidInput, format!("--max-repack-ratio {} must be between 0 and 1", opts.max_repack_ratio)));
    }
    let _lock = lock::acquire(&store.locks_dir(), LockMode::Exclusive, "prune", opts.lock_wait)?;
    let refuse = |e: Error| e.context("prune refuses to run (nothing was deleted)");
    let mut report = PruneReport { dry_run: opts.dry_run, bytes_before: store.disk_usage()?, ..Default::default() };

    // 1. mark
    let mut live: HashSet<Id> = HashSet::new();
    for name in store.list_snapshots()? {
        let snap = store.read_snapshot(&name).map_err(refuse)?;
        for src in &snap.sources {
            let m = store.read_manifest(&src.manifest).map_err(refuse)?;
            for e in m.entries {
                if let EntryKind::File { chunks, .. } = e.kind {
                    live.extend(chunks);
                }
            }
        }
        report.snapshots += 1;
    }
    report.live_chunks = live.len();

    // 2. where each live chunk is: the index, else a pack no index names (a lost segment).
    let index = Index::load(store).map_err(refuse)?;
    let by_pack = index.by_pack();
    let on_disk = pack_files(store)?;
    let mut chosen: HashMap<Id, Location> = HashMap::with_capacity(live.len());
    let mut missing: Vec<Id> = vec![];
    for id in &live {
        match index.get(id) {
            Some(l) if on_disk.contains(&l.pack) => {
                chosen.insert(*id, l);
            }
            _ => missing.push(*id),
        }
    }
    if !missing.is_empty() {
        for p in on_disk.iter().filter(|p| !by_pack.contains_key(p)) {
            if let Ok((_, entries)) = read_trailer(store, p) {
                for b in entries {
                    if live.contains(&b.id) && !chosen.contains_key(&b.id) {
                        chosen.insert(b.id, Location { pack: *p, offset: b.offset, len: b.len, raw_len: b.raw_len, encoding: b.encoding });
                    }
                }
            }
        }
        if let Some(id) = missing.iter().find(|id| !chosen.contains_key(id)) {
            return Err(refuse(Error::new(
                ErrorKind::Missing,
                format!(
                    "{} live chunk(s) are in no pack (e.g. {}); run `rpger-store verify --deep --all`",
                    missing.iter().filter(|i| !chosen.contains_key(i)).count(),
                    id.short()
                ),
            )));
        }
    }

    // 2b. the bases of live deltas. A base some file uses stays anyway. A base only deltas need
    // is dropped: the deltas built on it are re-based (grouped by that base: the first stored
    // whole, the others as deltas against it).
    let mut rebase: std::collections::BTreeMap<Id, Vec<Id>> = Default::default();
    let mut needed: Vec<(Id, Id)> = vec![];
    {
        let reader = PackReader::new(store);
        let mut blob = Vec::new();
        let mut deltas: Vec<(Id, Location)> =
            chosen.iter().filter(|(_, l)| l.encoding == Encoding::ZstdDelta).map(|(i, l)| (*i, *l)).collect();
        deltas.sort_by_key(|(i, _)| *i);
        for (id, l) in deltas {
            reader.read_blob_into(&id, &l, &mut blob).map_err(refuse)?;
            let (bases, _) = delta::decode_blob(&blob)
                .map_err(|e| refuse(Error::corrupt(format!("delta chunk {} in pack {}", id.short(), l.pack.short()), e)))?;
            match bases.iter().find(|b| !live.contains(b)) {
                Some(dead) => rebase.entry(*dead).or_default().push(id),
                None => needed.extend(bases.iter().map(|b| (*b, id))),
            }
        }
    }
    for (b, id) in needed {
        if chosen.contains_key(&b) {
            continue;
        }
        match index.get(&b) {
            Some(bl) if on_disk.contains(&bl.pack) => {
                chosen.insert(b, bl);
                live.insert(b);
            }
            _ => {
                return Err(refuse(Error::new(
                    ErrorKind::Missing,
                    format!(
                        "base chunk {} of live delta chunk {} is in no pack; run `rpger-store verify --deep --all`",
                        b.short(),
                        id.short()
                    ),
                )))
            }
        }
    }
    for b in rebase.keys() {
        // (Only the group's key is checked here; every base is read back before anything is written.)
        if !index.get(b).is_some_and(|l| on_disk.contains(&l.pack)) {
            return Err(refuse(Error::new(
                ErrorKind::Missing,
                format!("base chunk {} of live delta chunks is in no pack; run `rpger-store verify --deep --all`", b.short()),
            )));
        }
    }
    let rebased: HashSet<Id> = rebase.values().flatten().copied().collect();
    report.rebased = rebased.len();
    report.live_chunks = live.len();

    // 3. plan: per pack, how much of it is live
    let mut usage: HashMap<Id, PackUse> = HashMap::new();
    for p in &on_disk {
        let size = fs::metadata(store.pack_path(p)).map(|m| m.len()).unwrap_or(0);
        usage.insert(*p, PackUse { size, used: 0 });
    }
    // A live blob also needs its trailer entry; a pack with anything live needs its header and
    // footer. Counting them as used keeps full packs from looking partly dead.
    for (_, l) in chosen.iter().filter(|(i, _)| !rebased.contains(i)) {
        if let Some(u) = usage.get_mut(&l.pack) {
            if u.used == 0 {
                u.used += (pack::HEADER_LEN + pack::FOOTER_LEN) as u64;
            }
            u.used += l.len as u64 + pack::ENTRY_LEN as u64;
        }
    }
    let mut delete: Vec<Id> = usage.iter().filter(|(_, u)| u.used == 0).map(|(p, _)| *p).collect();
    delete.sort();
    let mut partly: Vec<(Id, PackUse)> = usage.iter().filter(|(_, u)| u.used > 0 && u.used < u.size).map(|(p, u)| (*p, *u)).collect();
    // Emptiest first; the id breaks ties so the plan is deterministic.
    partly.sort_by(|a, b| (a.1.used as f64 / a.1.size as f64).total_cmp(&(b.1.used as f64 / b.1.size as f64)).then(a.0.cmp(&b.0)));
    let live_bytes: u64 = usage.values().map(|u| u.used).sum();
    let mut unused_left: u64 = partly.iter().map(|(_, u)| u.size - u.used).sum();
    let mut repack: Vec<Id> = vec![];
    for (p, u) in &partly {
        if unused_left as f64 <= opts.max_repack_ratio * live_bytes as f64 {
            break;
        }
        repack.push(*p);
        unused_left -= u.size - u.used;
    }
    report.packs_deleted = delete.len();
    report.packs_repacked = repack.len();
    report.packs_kept = usage.len() - delete.len() - repack.len();
    report.unused_bytes = usage.values().map(|u| u.size - u.used.min(u.size)).sum();
    report.repacked_bytes = repack.iter().map(|p| usage[p].used).sum();
    report.unused_left = unused_left;
    let old_segments: Vec<Id> = index_segments(store)?;
    let index_clean = delete.is_empty() && repack.is_empty() && rebase.is_empty() && old_segments.len() <= 1 && index.len() == chosen.len();
    report.segments_replaced = if index_clean { 0 } else { old_segments.len() };
    let removed: u64 = delete.iter().chain(&repack).map(|p| usage[p].size).sum();
    report.bytes_after = report.bytes_before - removed + report.repacked_bytes;
    if opts.dry_run || index_clean {
        if !opts.dry_run {
            report.bytes_after = store.disk_usage()?;
        }
        return Ok(report);
    }

    // 4. execute, in the order that keeps every prefix valid
    let mut steps = Steps { n: 0, crash_after: opts.crash_after_steps };
    let repacked: HashSet<Id> = repack.iter().copied().collect();
    let reader = PackReader::new(store);
    let mut writer = PackWriter::new(store);
    let mut moved: Vec<FinishedPack> = vec![];
    let mut to_move: Vec<(Id, Location)> =
        chosen.iter().filter(|(i, l)| repacked.contains(&l.pack) && !rebased.contains(i)).map(|(i, l)| (*i, *l)).collect();
    to_move.sort_by_key(|(_, l)| (l.pack, l.offset));
    let (mut stored, mut raw) = (Vec::new(), Vec::new());
    // Re-base first: every chunk rebuilt and checked from the current store before any write.
    let chunks = ChunkReader { index: &index, packs: &reader };
    let level = store.config().zstd_level;
    let mut new_features = vec![];
    for deps in rebase.values() {
        let first = chunks.read(&deps[0]).map_err(refuse)?;
        let (enc, whole) = crate::compress::compress(&first, level);
        new_features.push((deps[0], crate::delta::features(&first)));
        if let Some(p) = writer.add(deps[0], enc, &whole, first.len() as u32)? {
            moved.push(p);
            steps.step();
        }
        for d in &deps[1..] {
            let data = chunks.read(d).map_err(refuse)?;
            let frame = crate::delta::compress(&data, &first, level)?;
            let blob = delta::encode_blob(&[deps[0]], &frame);
            let (enc, bytes) = crate::compress::compress(&data, level);
            let (enc, bytes) = if blob.len() < bytes.len() { (Encoding::ZstdDelta, blob) } else { (enc, bytes) };
            // Whole, or one delta above a whole chunk: a base either way.
            new_features.push((*d, crate::delta::features(&data)));
            if let Some(p) = writer.add(*d, enc, &bytes, data.len() as u32)? {
                moved.push(p);
                steps.step();
            }
        }
    }
    for (id, loc) in &to_move {
        // Copy the stored bytes as they are, after proving they decode to the chunk: a damaged
        // blob must stop prune before anything is deleted.
        ChunkReader { index: &index, packs: &reader }.read_into(id, loc, &mut stored, &mut raw, true).map_err(refuse)?;
        if let Some(p) = writer.add(*id, loc.encoding, &stored, loc.raw_len)? {
            moved.push(p);
            steps.step();
        }
    }
    if let Some(p) = writer.finish()? {
        moved.push(p);
        steps.step();
    }
    report.packs_written = moved.len();
    for p in &moved {
        for b in &p.entries {
            chosen.insert(b.id, Location { pack: p.id, offset: b.offset, len: b.len, raw_len: b.raw_len, encoding: b.encoding });
        }
    }
    let mut preferred: Vec<Id> = rebased.iter().copied().collect();
    preferred.sort_unstable();
    let seg = Segment { entries: chosen.iter().map(|(i, l)| (*i, *l)).collect(), preferred };
    let bytes = seg.encode();
    let new_seg = Id::of(&bytes);
    fsutil::write_atomic(&store.tmp_dir(), &store.root().join("index").join(new_seg.to_hex()), &bytes)?;
    steps.step();

    for s in old_segments.iter().filter(|s| **s != new_seg) {
        let p = store.root().join("index").join(s.to_hex());
        fs::remove_file(&p).at("remove index segment", &p)?;
        steps.step();
    }
    fsutil::fsync_dir(&store.root().join("index"))?;
    // Features of chunks that are gone are dead weight: one merged file replaces them (the
    // chunks prune just re-based included; a backup skips chunks too deep to be bases). Written
    // before the old files go, so a crash leaves at most duplicates.
    let kept: HashSet<Id> = chosen.keys().copied().collect();
    crate::delta::compact_features(store, &kept, new_features)?;
    steps.step();
    // Never delete a pack the new index names. Packs are content-addressed, so repacking can
    // recreate a pack that was planned for deletion: an orphan left by an interrupted prune that
    // wrote the very same blobs in the same order.
    let referenced: HashSet<Id> = chosen.values().map(|l| l.pack).collect();
    report.packs_deleted = delete.iter().filter(|p| !referenced.contains(p)).count();
    for p in delete.iter().chain(&repack).filter(|p| !referenced.contains(p)) {
        let path = store.pack_path(p);
        fs::remove_file(&path).at("remove pack", &path)?;
        steps.step();
    }
    fsutil::fsync_dir(&store.root().join("packs"))?;
    // Nothing else writes while we hold the exclusive lock: every temp file is a leftover.
    if let Ok(rd) = fs::read_dir(store.tmp_dir()) {
        for e in rd.flatten() {
            let _ = fs::remove_file(e.path());
        }
    }
    report.bytes_after = store.disk_usage()?;
    Ok(report)
}

/// Pack ids present under `packs/` (foreign files are left alone).
fn pack_files(store: &Store) -> Result<HashSet<Id>> {
    let dir = store.root().join("packs");
    let mut out = HashSet::new();
    for sub in fs::read_dir(&dir).at("list", &dir)?.flatten() {
        if let Ok(rd) = fs::read_dir(sub.path()) {
            for f in rd.flatten() {
                if let Some(id) = f.file_name().to_str().and_then(|n| n.parse::<Id>().ok()) {
                    if store.pack_path(&id) == f.path() {
                        out.insert(id);
                    }
                }
            }
        }
    }
    Ok(out)
}

fn index_segments(store: &Store) -> Result<Vec<Id>> {
    let dir = store.root().join("index");
    let mut out: Vec<Id> =
        fs::read_dir(&dir).at("list", &dir)?.flatten().filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok())).collect();
    out.sort();
    Ok(out)
}
