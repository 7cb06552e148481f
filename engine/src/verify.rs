//! verify: prove that snapshots can be restored bit for bit, or say exactly what is lost.
//!
//! Quick mode reads only metadata: snapshot files, manifests, index segments and pack trailers.
//! Deep mode also reads packs in windows and decompresses and re-hashes every blob (a delta is
//! rebuilt from its bases); with `files` it then re-hashes every file of the checked snapshots
//! end to end. Every finding names the damaged object and
//! the snapshots, sources and paths that depend on it. Verify only reads the store.

use crate::compress;
use crate::delta::{BaseCache, ChunkReader};
// A file of a checked snapshot: the dump check takes the same list.
use crate::dumpcheck::DumpFile as FileRef;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::progress::Progress;
use crate::store::index::Index;
use crate::store::lock::{self, LockMode};
use crate::store::pack::{read_trailer, PackReader};
use crate::store::Store;
use rayon::prelude::*;
use rpger_formats::index::Location;
use rpger_formats::pack::Encoding;
use rpger_formats::snapshot::EntryKind;
use rpger_formats::Id;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::sync::Mutex;
use std::time::Duration;

/// Which snapshots to check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// The newest snapshot.
    Latest,
    /// One snapshot by name.
    Named(String),
    /// Every snapshot.
    All,
}

/// Options of one verify run.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Snapshots to check.
    pub selection: Selection,
    /// Read, decompress and re-hash every blob.
    pub deep: bool,
    /// With `deep`: also re-read every file of the checked snapshots and compare it with its
    /// recorded whole-file BLAKE3 (checks the manifests' chunk lists; reads every logical byte).
    pub files: bool,
    /// With `deep`: only packs in part `n` of `m` (1-based), chosen by pack id, so that the `m`
    /// parts cover every pack exactly once. The end-to-end file pass is skipped in this mode.
    pub subset: Option<(u32, u32)>,
    /// How long to wait for a conflicting lock.
    pub lock_wait: Duration,
    /// Also read every database dump of the checked snapshots back and check it by its format
    /// (Redis RDB/AOF, MongoDB BSON and archives, SQLite), see [`crate::dumpcheck`].
    pub dumps: bool,
    /// Where SQLite databases are copied for SQLite to check (the system's temporary directory
    /// when `None`); never inside the store.
    pub scratch: Option<std::path::PathBuf>,
}

/// A damaged or unexpected object in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What is damaged: `pack <id>`, `snapshot <name>`, `index segment <id>`, a path...
    pub object: String,
    /// What is wrong with it.
    pub what: String,
    /// For a damaged pack: every `snapshot source/path (n chunks)` with chunks in it.
    pub dependents: Vec<String>,
}

/// A file of a checked snapshot that cannot be restored exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffectedFile {
    /// Snapshot name.
    pub snapshot: String,
    /// Source name.
    pub source: String,
    /// Path inside the source.
    pub path: String,
    /// Chunks of the file that cannot be read.
    pub unreadable: u64,
    /// All chunks of the file.
    pub chunks: u64,
    /// Why, e.g. the first bad chunk and its cause.
    pub reason: String,
}

/// Everything a verify run found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Snapshots checked.
    pub snapshots: Vec<String>,
    /// Whether blobs and files were read.
    pub deep: bool,
    /// Packs whose trailer was checked against the index.
    pub packs_checked: u64,
    /// Packs whose every blob was read (deep mode), sorted.
    pub packs_read: Vec<Id>,
    /// Blobs decompressed and re-hashed.
    pub chunks_checked: u64,
    /// Files re-hashed end to end.
    pub files_checked: u64,
    /// Bytes read: pack bytes, plus logical bytes re-hashed in deep mode.
    pub bytes_checked: u64,
    /// Damaged or unexpected objects.
    pub problems: Vec<Problem>,
    /// Files that cannot be restored exactly.
    pub affected: Vec<AffectedFile>,
    /// Facts that are not damage (e.g. packs left by an interrupted backup).
    pub notes: Vec<String>,
    /// With `dumps`: every database dump found and what its check said.
    pub dumps: Vec<crate::dumpcheck::DumpCheck>,
}

impl VerifyReport {
    /// True when nothing is damaged.
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty() && self.affected.is_empty() && self.unsound_dumps() == 0
    }

    /// Dumps whose format check failed.
    pub fn unsound_dumps(&self) -> usize {
        self.dumps.iter().filter(|d| d.outcome.is_err()).count()
    }

    /// One line: what was checked and what was found.
    pub fn summary(&self) -> String {
        let mode = if self.deep { "deep" } else { "quick" };
        // Whole files are only re-read with `--deep --files`.
        let files = if self.files_checked > 0 { format!(", {} files", self.files_checked) } else { String::new() };
        let dumps = if self.dumps.is_empty() { String::new() } else { format!(", {} dumps", self.dumps.len()) };
        let what = format!(
            "{mode} verify of {} snapshot(s): {} packs, {} chunks{files}{dumps}, {} bytes checked",
            self.snapshots.len(),
            self.packs_checked,
            self.chunks_checked,
            self.bytes_checked
        );
        if self.is_sound() {
            format!("{what}: no damage found")
        } else {
            let dumps = match self.unsound_dumps() {
                0 => String::new(),
                n => format!(", {n} dump(s) would not load"),
            };
            format!(
                "{what}: DAMAGE FOUND: {} damaged object(s), {} file(s) cannot be restored exactly{dumps}",
                self.problems.len(),
                self.affected.len()
            )
        }
    }
}

/// Why a chunk cannot be read.
type BadChunks = HashMap<Id, String>;

/// Checks the store.
///
/// # Errors
/// Only when verify cannot run at all (store unreadable, lock held, unknown snapshot); damage
/// is reported in the [`VerifyReport`].
pub fn verify(store: &Store, opts: &VerifyOptions, progress: &dyn Progress) -> Result<VerifyReport> {
    if let Some((n, m)) = opts.subset {
        if m == 0 || n == 0 || n > m {
            return Err(Error::new(ErrorKind::InvalidInput, format!("--read-data-subset {n}/{m}: need 1 <= n <= m")));
        }
    }
    let _lock = lock::acquire(&store.locks_dir(), LockMode::Shared, "verify", opts.lock_wait)?;
    let mut report = VerifyReport { deep: opts.deep, ..Default::default() };

    // 1. snapshots
    let all = store.list_snapshots()?;
    let names: Vec<String> = match &opts.selection {
        Selection::All => all.clone(),
        Selection::Latest => all.last().cloned().into_iter().collect(),
        Selection::Named(n) => {
            if !all.contains(n) {
                return Err(Error::new(ErrorKind::Missing, format!("no snapshot named {n} in {}", store.root().display())));
            }
            vec![n.clone()]
        }
    };
    if names.is_empty() {
        return Err(Error::new(ErrorKind::Missing, format!("store {} has no snapshots to verify", store.root().display())));
    }
    let mut files: Vec<FileRef> = vec![];
    for name in &names {
        match store.read_snapshot(name) {
            Err(e) => report.problems.push(Problem { dependents: vec![], object: format!("snapshot {name}"), what: e.to_string() }),
            Ok(snap) => {
                for src in &snap.sources {
                    match store.read_manifest(&src.manifest) {
                        Err(e) => report.problems.push(Problem {
                            dependents: vec![],
                            object: format!("manifest {} (snapshot {name}, source {})", src.manifest.short(), src.name),
                            what: format!("{e}; every file of {name} {} is unreadable", src.name),
                        }),
                        Ok(m) => {
                            for e in m.entries {
                                if let EntryKind::File { size, chunks, hash, .. } = e.kind {
                                    files.push(FileRef {
                                        snapshot: name.clone(),
                                        source: src.name.clone(),
                                        path: e.path,
                                        chunks,
                                        hash,
                                        size,
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        report.snapshots.push(name.clone());
    }

    // 2. index
    let (index, damaged) = Index::load_lenient(store)?;
    for e in damaged {
        report.problems.push(Problem { dependents: vec![], object: "index".into(), what: e.to_string() });
    }
    let mut bad: BadChunks = HashMap::new();
    let mut damaged_packs: HashSet<Id> = HashSet::new();
    let referenced: HashSet<Id> = files.iter().flat_map(|f| f.chunks.iter().copied()).collect();
    let mut unindexed: Vec<Id> = referenced.iter().filter(|id| !index.contains(id)).copied().collect();
    unindexed.sort();

    // 3. packs: every file in packs/ must be a pack; every pack the index names must exist and
    //    its trailer must agree with the index.
    let by_pack = index.by_pack();
    let on_disk = list_pack_files(store, &mut report)?;
    let mut trailers: HashMap<Id, (u64, Vec<rpger_formats::pack::BlobEntry>)> = HashMap::new();
    let mut pack_ids: Vec<Id> = by_pack.keys().chain(on_disk.iter()).copied().collect::<HashSet<_>>().into_iter().collect();
    pack_ids.sort();
    for p in &pack_ids {
        let indexed = by_pack.get(p).map(|v| v.as_slice()).unwrap_or(&[]);
        match read_trailer(store, p) {
            Ok((len, entries)) => {
                let listed: HashMap<Id, (u32, u32, u32)> = entries.iter().map(|b| (b.id, (b.offset, b.len, b.raw_len))).collect();
                let disagree = indexed.iter().filter(|(id, l)| listed.get(id) != Some(&(l.offset, l.len, l.raw_len))).count();
                if disagree > 0 {
                    damaged_packs.insert(*p);
                    report.problems.push(Problem {
                        dependents: vec![],
                        object: format!("pack {}", p.short()),
                        what: format!("its trailer disagrees with the index about {disagree} chunk(s)"),
                    });
                }
                if indexed.is_empty() {
                    let needed = entries.iter().filter(|b| referenced.contains(&b.id)).count();
                    if needed == 0 {
                        report.notes.push(format!(
                            "pack {} is not referenced by the index (left by an interrupted backup; prune removes it)",
                            p.short()
                        ));
                    }
                }
                report.bytes_checked += (len.min(entries.len() as u64 * 48 + 44)) + 10;
                trailers.insert(*p, (len, entries));
            }
            Err(e) if e.kind() == ErrorKind::Missing => {
                damaged_packs.insert(*p);
                report.problems.push(Problem {
                    dependents: vec![],
                    object: format!("pack {}", p.short()),
                    what: format!("missing ({} indexed chunks lost)", indexed.len()),
                });
                for (id, _) in indexed {
                    bad.insert(*id, format!("pack {} is missing", p.short()));
                }
            }
            Err(e) => {
                damaged_packs.insert(*p);
                report.problems.push(Problem { dependents: vec![], object: format!("pack {}", p.short()), what: e.to_string() });
            }
        }
        report.packs_checked += 1;
    }
    // Deltas the snapshots need: every base along their chains must be indexed (one small read
    // each), and a delta whose chain holds an unreadable chunk cannot be rebuilt.
    {
        let reader = PackReader::new(store);
        let mut head = Vec::new();
        let mut queue: Vec<(Id, Location)> = referenced
            .iter()
            .filter_map(|id| index.get(id).map(|l| (*id, l)))
            .filter(|(id, l)| l.encoding == Encoding::ZstdDelta && !bad.contains_key(id) && !damaged_packs.contains(&l.pack))
            .collect();
        queue.sort_by_key(|(_, l)| (l.pack, l.offset));
        let mut seen: HashSet<Id> = queue.iter().map(|(id, _)| *id).collect();
        let mut bases_of: Vec<(Id, Vec<Id>)> = Vec::new();
        let mut next = 0;
        while let Some(&(id, l)) = queue.get(next) {
            next += 1;
            match crate::delta::delta_bases(&reader, &id, &l, &mut head) {
                Err(e) => {
                    bad.insert(id, e.to_string());
                }
                Ok(bases) => {
                    for b in &bases {
                        match index.get(b) {
                            None => {
                                bad.entry(id).or_insert_with(|| {
                                    format!("chunk {}: its delta base chunk {} is not in the index", id.short(), b.short())
                                });
                            }
                            Some(bl) if bl.encoding == Encoding::ZstdDelta && !damaged_packs.contains(&bl.pack) && seen.insert(*b) => {
                                queue.push((*b, bl));
                            }
                            Some(_) => {}
                        }
                    }
                    bases_of.push((id, bases));
                }
            }
        }
        // Damage travels up the chains: a pass per level at most.
        loop {
            let hit: Vec<(Id, Id)> = bases_of
                .iter()
                .filter(|(id, _)| !bad.contains_key(id))
                .filter_map(|(id, bases)| bases.iter().find(|b| bad.contains_key(b)).map(|b| (*id, *b)))
                .collect();
            if hit.is_empty() {
                break;
            }
            for (id, b) in hit {
                bad.insert(id, format!("chunk {}: its delta base chunk {} is damaged or cannot be rebuilt", id.short(), b.short()));
            }
        }
    }
    // Chunks the snapshots need but no index segment lists: restore cannot find them.
    if !unindexed.is_empty() {
        let in_packs: HashMap<Id, Id> = trailers.iter().flat_map(|(p, (_, es))| es.iter().map(move |b| (b.id, *p))).collect();
        let found = unindexed.iter().filter(|id| in_packs.contains_key(id)).count();
        report.problems.push(Problem {
            dependents: vec![],
            object: "index".into(),
            what: format!(
                "{} chunk(s) referenced by the checked snapshots are in no index segment ({found} of them are still in packs)",
                unindexed.len()
            ),
        });
        for id in &unindexed {
            let why = match in_packs.get(id) {
                Some(p) => format!("chunk {} is not in the index (it is in pack {})", id.short(), p.short()),
                None => format!("chunk {} is in no index segment and no pack", id.short()),
            };
            bad.insert(*id, why);
        }
    }

    // 4. deep: every blob of every (selected) pack, read in windows, decompressed and re-hashed.
    if opts.deep {
        let selected: Vec<Id> = pack_ids.iter().filter(|p| opts.subset.is_none_or(|(n, m)| in_subset(p, n, m))).copied().collect();
        let total: u64 = selected.iter().map(|p| fs::metadata(store.pack_path(p)).map(|m| m.len()).unwrap_or(0)).sum();
        progress.start("verify", Some(total));
        report.packs_read = selected.clone();
        let pack_reader = PackReader::new(store);
        let chunks = ChunkReader { index: &index, packs: &pack_reader };
        // Chunks the checked files use: a delta no file uses whose base prune has reclaimed is
        // dead data waiting for the next repack, not damage.
        let used = &referenced;
        // Pass 1, pack by pack in windows: whole blobs are decompressed and re-hashed; deltas
        // wait for pass 2.
        type PackResult = (u64, BadChunks, Vec<Deferred>);
        let found = Mutex::new((BTreeMap::<Id, std::result::Result<PackResult, String>>::new(), 0u64));
        selected.par_iter().enumerate().for_each(|(pack_no, p)| {
            // Blobs to check: the trailer's, plus the index's (which still locate data when the
            // trailer is damaged).
            let mut blobs: BTreeMap<(u32, Id), Location> = BTreeMap::new();
            if let Some((_, es)) = trailers.get(p) {
                for b in es {
                    blobs.insert(
                        (b.offset, b.id),
                        Location { pack: *p, offset: b.offset, len: b.len, raw_len: b.raw_len, encoding: b.encoding },
                    );
                }
            }
            for (id, l) in by_pack.get(p).map(|v| v.as_slice()).unwrap_or(&[]) {
                blobs.insert((l.offset, *id), *l);
            }
            let r = check_pack(store, p, pack_no as u32, &blobs, progress);
            let mut f = found.lock().unwrap_or_else(|e| e.into_inner());
            if let Ok((bytes, _, _)) = &r {
                f.1 += bytes;
            }
            f.0.insert(*p, r.map(|(_, bad, deferred)| (blobs.len() as u64, bad, deferred)).map_err(|e| e.to_string()));
        });
        let (mut per_pack, bytes) = found.into_inner().unwrap_or_else(|e| e.into_inner());
        // Pass 2: deltas grouped by the chunk stored whole their chain starts from, lower links
        // first, so a base shared by several nights' versions of a region is decoded once per
        // group and each link of a chain is rebuilt from the one below it, kept in the cache.
        let mut deferred: Vec<Deferred> =
            per_pack.values_mut().filter_map(|r| r.as_mut().ok()).flat_map(|r| std::mem::take(&mut r.2)).collect();
        let below: HashMap<u64, u64> = deferred.iter().map(|d| (d.id.head(), d.first)).collect();
        let root = |d: &Deferred| {
            let (mut at, mut depth) = (d.first, 0u8);
            // Bounded: a looping chain (a damaged store) fails its rebuild anyway.
            while let Some(&next) = below.get(&at).filter(|_| depth < rpger_formats::delta::MAX_DEPTH) {
                at = next;
                depth += 1;
            }
            (at, depth)
        };
        deferred.sort_by_cached_key(root);
        drop(below);
        let dead_deltas = std::sync::atomic::AtomicU64::new(0);
        let bad_deltas: Vec<(Id, Id, String)> = deferred
            .par_chunks(256)
            .flat_map_iter(|group| {
                let (mut cache, mut stored, mut out, mut bad) = (BaseCache::default(), Vec::new(), Vec::new(), Vec::new());
                for d in group {
                    let (id, loc) = (d.id, d.location(&selected));
                    let r = pack_reader
                        .read_blob_into(&id, &loc, &mut stored)
                        .and_then(|_| chunks.rebuild_checked(&id, &loc, &stored, &mut out, &mut cache));
                    progress.advance(loc.len as u64);
                    match r {
                        Ok(()) => cache.remember(id, &out),
                        // Dead data: a delta no checked file uses, or a copy of a chunk the
                        // index locates elsewhere (prune re-based it, or an interrupted prune
                        // left it), whose bases are gone or were re-based too.
                        Err(_) if !used.contains(&id) || index.get(&id).is_some_and(|x| x.pack != loc.pack || x.offset != loc.offset) => {
                            dead_deltas.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(e) => bad.push((loc.pack, id, format!("chunk {} in pack {}: {e}", id.short(), loc.pack.short()))),
                    }
                }
                bad
            })
            .collect();
        progress.finish();
        let n: u64 = deferred.len() as u64 + per_pack.values().filter_map(|r| r.as_ref().ok()).map(|r| r.0).sum::<u64>();
        drop(deferred);
        for (p, id, why) in bad_deltas {
            if let Some(Ok(r)) = per_pack.get_mut(&p) {
                r.1.insert(id, why);
            }
        }
        let dead = dead_deltas.into_inner();
        if dead > 0 {
            report.notes.push(format!(
                "{dead} unused delta blob(s) that no longer rebuild (their bases were reclaimed or re-based by prune; no checked file needs them, and a later prune removes them)"
            ));
        }
        let mut badmap = BadChunks::new();
        for (p, r) in per_pack {
            let problem = match r {
                Ok((total, badlist, _)) if !badlist.is_empty() => {
                    let first = badlist.values().min().cloned().unwrap_or_default();
                    badmap.extend(badlist.iter().map(|(k, v)| (*k, v.clone())));
                    format!("{} of {total} chunk(s) damaged, e.g. {first}", badlist.len())
                }
                Ok(_) => continue,
                Err(e) => e,
            };
            damaged_packs.insert(p);
            report.problems.push(Problem { dependents: vec![], object: format!("pack {}", p.short()), what: problem });
        }
        for (id, why) in badmap {
            bad.entry(id).or_insert(why);
        }
        report.bytes_checked += bytes;
        report.chunks_checked += n;
    }

    // 5. who depends on what
    for f in &files {
        let unreadable: Vec<&Id> = f.chunks.iter().filter(|c| bad.contains_key(c)).collect();
        if let Some(first) = unreadable.first() {
            report.affected.push(AffectedFile {
                snapshot: f.snapshot.clone(),
                source: f.source.clone(),
                path: String::from_utf8_lossy(&f.path).into_owned(),
                unreadable: unreadable.len() as u64,
                chunks: f.chunks.len() as u64,
                reason: bad[*first].clone(),
            });
        }
    }

    // Every file with chunks in a damaged pack, named on that pack's problems.
    if !damaged_packs.is_empty() {
        let mut chunk_pack: HashMap<Id, Id> = HashMap::new();
        for p in &damaged_packs {
            for (id, _) in by_pack.get(p).map(|v| v.as_slice()).unwrap_or(&[]) {
                chunk_pack.insert(*id, *p);
            }
            for b in trailers.get(p).map(|t| t.1.as_slice()).unwrap_or(&[]) {
                chunk_pack.insert(b.id, *p);
            }
        }
        let mut deps: HashMap<Id, Vec<String>> = HashMap::new();
        for f in &files {
            let mut per: BTreeMap<Id, usize> = BTreeMap::new();
            for c in &f.chunks {
                if let Some(p) = chunk_pack.get(c) {
                    *per.entry(*p).or_default() += 1;
                }
            }
            for (p, n) in per {
                deps.entry(p).or_default().push(format!(
                    "{} {}/{} ({n} of {} chunks)",
                    f.snapshot,
                    f.source,
                    String::from_utf8_lossy(&f.path),
                    f.chunks.len()
                ));
            }
        }
        for problem in &mut report.problems {
            if let Some(p) = damaged_packs.iter().find(|p| problem.object == format!("pack {}", p.short())) {
                problem.dependents = deps.get(p).cloned().unwrap_or_default();
            }
        }
    }

    // 6. deep, whole set: every file re-hashed end to end (once per distinct content).
    if opts.deep && opts.files && opts.subset.is_none() {
        let mut distinct: HashMap<(Id, &[Id]), &FileRef> = HashMap::new();
        for f in files.iter().filter(|f| f.chunks.iter().all(|c| !bad.contains_key(c))) {
            distinct.entry((f.hash, f.chunks.as_slice())).or_insert(f);
        }
        let todo: Vec<&FileRef> = distinct.into_values().collect();
        progress.start("re-hash", Some(todo.iter().map(|f| f.size).sum()));
        let reader = PackReader::new(store);
        // Blobs the pack pass decompressed and re-hashed at the location the index gives.
        let proven: HashSet<Id> = by_pack
            .values()
            .flatten()
            .filter(|(id, _)| !bad.contains_key(id))
            .map(|(id, _)| *id)
            .filter(|id| index.get(id).is_some_and(|l| report.packs_read.binary_search(&l.pack).is_ok()))
            .collect();
        let mismatched: Vec<(Id, &[Id], String)> = todo
            .par_iter()
            .filter_map(|f| rehash(&index, &reader, f, &proven, progress).err().map(|e| (f.hash, f.chunks.as_slice(), e)))
            .collect();
        progress.finish();
        report.files_checked = todo.len() as u64;
        report.bytes_checked += todo.iter().map(|f| f.size).sum::<u64>();
        for (hash, chunks, why) in mismatched {
            for f in files.iter().filter(|f| f.hash == hash && f.chunks.as_slice() == chunks) {
                report.affected.push(AffectedFile {
                    snapshot: f.snapshot.clone(),
                    source: f.source.clone(),
                    path: String::from_utf8_lossy(&f.path).into_owned(),
                    unreadable: 0,
                    chunks: f.chunks.len() as u64,
                    reason: why.clone(),
                });
            }
        }
    }
    report.affected.sort_by(|a, b| (&a.snapshot, &a.source, &a.path).cmp(&(&b.snapshot, &b.source, &b.path)));

    // 7. dumps: each database dump read back and checked by its format. Files already known
    //    to be lost are left out (they are reported above).
    if opts.dumps {
        let lost: HashSet<(&str, &str, String)> =
            report.affected.iter().map(|a| (a.snapshot.as_str(), a.source.as_str(), a.path.clone())).collect();
        let todo: Vec<FileRef> = files
            .iter()
            .filter(|f| !lost.contains(&(f.snapshot.as_str(), f.source.as_str(), String::from_utf8_lossy(&f.path).into_owned())))
            .cloned()
            .collect();
        progress.start("check dumps", None);
        let reader = PackReader::new(store);
        let (dumps, bytes) = crate::dumpcheck::check_all(&index, &reader, &todo, opts.scratch.as_deref())?;
        report.dumps = dumps;
        report.bytes_checked += bytes;
        progress.finish();
    }
    Ok(report)
}

/// Part `n` of `m` (1-based) by pack id: every pack is in exactly one part.
pub fn in_subset(pack: &Id, n: u32, m: u32) -> bool {
    let v = u64::from_le_bytes(pack.0[..8].try_into().unwrap_or([0; 8]));
    v % m as u64 == (n - 1) as u64
}

/// Lists `packs/`: returns the pack ids found and reports every other file as a problem.
fn list_pack_files(store: &Store, report: &mut VerifyReport) -> Result<Vec<Id>> {
    let dir = store.root().join("packs");
    let mut out = vec![];
    for sub in fs::read_dir(&dir).at("list", &dir)? {
        let sub = sub.at("list", &dir)?;
        let sub_name = sub.file_name().to_string_lossy().into_owned();
        if !sub.path().is_dir() {
            report.problems.push(Problem {
                dependents: vec![],
                object: format!("packs/{sub_name}"),
                what: "unknown file in packs/ (not a pack)".into(),
            });
            continue;
        }
        for f in fs::read_dir(sub.path()).at("list", &sub.path())? {
            let f = f.at("list", &sub.path())?;
            let name = f.file_name().to_string_lossy().into_owned();
            match name.parse::<Id>() {
                Ok(id) if name.starts_with(&sub_name) && sub_name.len() == 2 => out.push(id),
                _ => report.problems.push(Problem {
                    dependents: vec![],
                    object: format!("packs/{sub_name}/{name}"),
                    what: "unknown file in packs/ (not a pack)".into(),
                }),
            }
        }
    }
    Ok(out)
}

/// Bytes of a pack the deep pass reads at a time: large sequential reads, bounded memory.
const PACK_WINDOW: u64 = 4 << 20;

/// A delta blob checked in the second pass, grouped with others sharing its first base. Kept
/// small (one per delta in the store): the base by its id's first 8 bytes, the pack by number.
struct Deferred {
    first: u64,
    id: Id,
    pack: u32,
    offset: u32,
    len: u32,
    raw_len: u32,
}

impl Deferred {
    fn new(first: &Id, id: &Id, pack: u32, l: &Location) -> Deferred {
        Deferred { first: first.head(), id: *id, pack, offset: l.offset, len: l.len, raw_len: l.raw_len }
    }

    fn location(&self, packs: &[Id]) -> Location {
        Location {
            pack: packs[self.pack as usize],
            offset: self.offset,
            len: self.len,
            raw_len: self.raw_len,
            encoding: Encoding::ZstdDelta,
        }
    }
}

/// What the first pass found for one blob.
enum Outcome {
    Sound,
    Bad(Id, String),
    Delta(Deferred),
}

/// Checks every whole blob of one pack, read in windows; returns (bytes read, bad, the deltas
/// for the second pass with their first base).
fn check_pack(
    store: &Store,
    pack: &Id,
    pack_no: u32,
    blobs: &BTreeMap<(u32, Id), Location>,
    progress: &dyn Progress,
) -> Result<(u64, BadChunks, Vec<Deferred>)> {
    let path = store.pack_path(pack);
    let f = File::open(&path).at("open pack", &path)?;
    let len = f.metadata().at("stat pack", &path)?.len();
    let list: Vec<(&Id, &Location)> = blobs.iter().map(|((_, id), l)| (id, l)).collect();
    // Sized once: growing by doubling would hold 8 MiB per pack being read.
    let (mut bad, mut deferred, mut buf) = (BadChunks::new(), Vec::new(), Vec::with_capacity(PACK_WINDOW as usize));
    let mut i = 0;
    while i < list.len() {
        let start = list[i].1.offset as u64;
        let mut end = start + list[i].1.len as u64;
        let mut j = i + 1;
        while j < list.len() && (list[j].1.offset as u64 + list[j].1.len as u64).max(end) - start <= PACK_WINDOW {
            end = end.max(list[j].1.offset as u64 + list[j].1.len as u64);
            j += 1;
        }
        buf.resize(end.min(len).saturating_sub(start) as usize, 0);
        f.read_exact_at(&mut buf, start).at("read pack", &path)?;
        let outcomes: Vec<Outcome> = list[i..j]
            .par_iter()
            .map(|&(id, l)| {
                let (from, to) = ((l.offset as u64 - start) as usize, (l.offset as u64 - start) as usize + l.len as usize);
                if to > buf.len() {
                    progress.advance(l.len as u64);
                    let (s, e) = (l.offset as u64, l.offset as u64 + l.len as u64);
                    return Outcome::Bad(
                        *id,
                        format!(
                            "chunk {} in pack {}: blob at {s}..{e} is past the end of the {len}-byte pack (truncated)",
                            id.short(),
                            pack.short()
                        ),
                    );
                }
                let blob = &buf[from..to];
                if l.encoding == Encoding::ZstdDelta {
                    return match rpger_formats::delta::decode_blob(blob) {
                        Ok((bases, _)) if !bases.is_empty() => Outcome::Delta(Deferred::new(&bases[0], id, pack_no, l)),
                        // A malformed header: pass 2 names it (or counts it as dead data).
                        _ => Outcome::Delta(Deferred::new(id, id, pack_no, l)),
                    };
                }
                progress.advance(l.len as u64);
                match compress::decompress(l.encoding, blob, l.raw_len as usize) {
                    Err(e) => Outcome::Bad(*id, format!("chunk {} in pack {}: {e}", id.short(), pack.short())),
                    Ok(raw) if Id::of(&raw) != *id => {
                        Outcome::Bad(*id, format!("chunk {} in pack {}: content does not match its hash", id.short(), pack.short()))
                    }
                    Ok(_) => Outcome::Sound,
                }
            })
            .collect();
        for o in outcomes {
            match o {
                Outcome::Sound => {}
                Outcome::Bad(id, why) => {
                    bad.insert(id, why);
                }
                Outcome::Delta(d) => deferred.push(d),
            }
        }
        i = j;
    }
    Ok((len, bad, deferred))
}

/// Re-reads a file's chunks in order and compares the BLAKE3 of the whole with the manifest.
/// Chunks in `proven` were decompressed and re-hashed by the pack pass, so only the whole-file
/// hash is computed for them.
fn rehash(
    index: &Index,
    reader: &PackReader,
    f: &FileRef,
    proven: &HashSet<Id>,
    progress: &dyn Progress,
) -> std::result::Result<(), String> {
    let mut h = blake3::Hasher::new();
    let (mut stored, mut data) = (Vec::new(), Vec::new());
    let chunks = ChunkReader { index, packs: reader };
    for id in &f.chunks {
        let loc = index.get(id).ok_or_else(|| format!("chunk {} is not in the index", id.short()))?;
        chunks.read_into(id, &loc, &mut stored, &mut data, !proven.contains(id)).map_err(|e| e.to_string())?;
        h.update(&data);
        progress.advance(data.len() as u64);
    }
    if Id::from(h.finalize()) != f.hash {
        return Err("the file's chunks do not hash to its recorded BLAKE3".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_partition_the_packs() {
        let ids: Vec<Id> = (0..500u32).map(|i| Id::of(&i.to_le_bytes())).collect();
        for m in [1u32, 2, 7] {
            for id in &ids {
                assert_eq!((1..=m).filter(|&n| in_subset(id, n, m)).count(), 1);
            }
        }
    }
}
