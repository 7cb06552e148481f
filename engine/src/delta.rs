//! Delta compression of near-duplicate chunks.
//!
//! Content-defined dedup only drops byte-identical chunks; a dump rewritten with a few changed
//! values per 16 KiB (Redis RDB, SQLite pages, MongoDB documents updated in place) makes mostly
//! *similar* chunks. A new chunk that resembles a chunk already stored is stored as a zstd
//! frame compressed against that base (its bytes as a single-use prefix), which costs what
//! changed instead of the whole chunk.
//!
//! Resemblance: each chunk gets [`FEATURES`] features, the smallest values of a 64-byte rolling
//! (gear) hash over its bytes (a bottom-k sketch). Two chunks that share most of their 64-byte
//! windows share most of their smallest window hashes, wherever the windows sit, so the sketch
//! survives shifted content (SQLite pages that moved, values that grew). Features of every chunk
//! that can be a base are kept in `features/` files; a backup loads them into a compact sorted table and
//! picks, for each new chunk, the stored chunks that share the most features (at least
//! [`MIN_SHARED`], or [`MIN_SHARED_SAME_RUN`] for a chunk of the same run). The bases a backup
//! stores join the table as soon as their pack is durable, so a dump's later chunks can be
//! deltas against its earlier ones (14% off the first night of the shared dataset).
//!
//! Chains: a delta can be a base too, up to [`MAX_DEPTH`] deltas above a chunk stored whole, so
//! a region rewritten every night is stored as night k against night k - 1, which costs one
//! night's changes. With every base stored whole, night k's delta carried the changes of all the
//! nights since that base: 710 MiB for the shared dataset's 7 nights against 639 with chains,
//! and no rule choosing which versions to store whole could get under about 700
//! (BENCHMARKS.md, "The one-level bound, computed"). A delta over 0.7 of the size of the
//! chunk's plain encoding is dropped for the whole chunk, which starts a fresh chain.

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::fsutil;
use crate::store::index::Index;
use crate::store::pack::PackReader;
use crate::store::Store;
use rayon::prelude::*;
use rpger_formats::delta::{self, Features, IdHead, FEATURES, MAX_DEPTH};
use rpger_formats::index::Location;
use rpger_formats::pack::Encoding;
use rpger_formats::Id;
use std::cell::RefCell;
use std::fs;
use zstd::zstd_safe::{CCtx, CParameter, DCtx, ResetDirective};

/// Features a stored chunk must share with a new one to be tried as its base.
pub const MIN_SHARED: usize = 2;
/// Features a chunk stored earlier in the same run must share. Within one dump two shared
/// features are mostly chance: on night 1 of the shared dataset 4,685 of the 4,794 attempts
/// against such a base were stored whole anyway (each a base read and a delta compression
/// thrown away), while against an earlier night's chunk about half of them pay.
pub const MIN_SHARED_SAME_RUN: usize = 3;
/// Largest features file read.
const MAX_FEATURES_FILE: u64 = 1 << 30;

const GEAR: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut s: u64 = 0x2545_f491_4f6c_dd1d;
    let mut i = 0;
    while i < 256 {
        // splitmix64: fixed, well-spread constants (changing them changes every feature).
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        t[i] = z ^ (z >> 31);
        i += 1;
    }
    t
};

/// The resemblance sketch of a chunk: its [`FEATURES`] smallest distinct window hashes (top 32
/// bits), ascending; unused slots (tiny or uniform chunks) are `u32::MAX`.
///
/// The hash at byte `i` depends only on bytes `i - 63..=i`, so the two halves of a chunk are
/// scanned as two independent chains in one loop (the second warmed up on the 63 bytes before
/// its start): the CPU overlaps them, 18 % faster in criterion's `delta_features` (1.78 against
/// 1.50 GiB/s). The result is exactly the one-chain scan's (a test checks it against one).
pub fn features(data: &[u8]) -> Features {
    let mut best = [u64::MAX; FEATURES];
    let n = data.len();
    // Below this the halves would be little more than their warm-up: one chain.
    if n < 4 * WARM {
        scan(data, &mut best);
        return finish(best);
    }
    let mid = n / 2;
    let (mut ha, mut hb) = (0u64, 0u64);
    // Warm-up: hashes of the first 63 positions of each chain are not windows of 64 bytes yet
    // (chain A) or belong to chain A's range (chain B).
    for (&a, &b) in data[..WARM].iter().zip(&data[mid - WARM..mid]) {
        ha = roll(ha, a);
        hb = roll(hb, b);
    }
    let mut other = [u64::MAX; FEATURES];
    // The largest kept value of each chain, in registers (an insert rarely happens).
    let (mut ta, mut tb) = (u64::MAX, u64::MAX);
    // Chain A covers positions WARM..mid, chain B mid..n (at least as many).
    for (&a, &b) in data[WARM..mid].iter().zip(&data[mid..]) {
        ha = roll(ha, a);
        hb = roll(hb, b);
        if ha < ta {
            ta = insert(&mut best, ha);
        }
        if hb < tb {
            tb = insert(&mut other, hb);
        }
    }
    for &b in &data[mid + (mid - WARM)..] {
        hb = roll(hb, b);
        if hb < other[FEATURES - 1] {
            insert(&mut other, hb);
        }
    }
    for v in other {
        if v < best[FEATURES - 1] {
            insert(&mut best, v);
        }
    }
    finish(best)
}

/// Bytes before the first full 64-byte window.
const WARM: usize = 63;

#[inline(always)]
fn roll(h: u64, b: u8) -> u64 {
    // Each step shifts one bit out: the top bits depend on the last 64 bytes only.
    (h << 1).wrapping_add(GEAR[b as usize])
}

/// One chain over `data` from hash 0, recording positions from `WARM` on.
fn scan(data: &[u8], best: &mut [u64; FEATURES]) {
    let mut h = 0u64;
    for (i, &b) in data.iter().enumerate() {
        h = roll(h, b);
        if i >= WARM && h < best[FEATURES - 1] {
            insert(best, h);
        }
    }
}

/// Puts `h` (below the largest kept) into the ascending set `best` unless already there;
/// returns the largest kept value.
#[inline(never)]
fn insert(best: &mut [u64; FEATURES], h: u64) -> u64 {
    if best.contains(&h) {
        return best[FEATURES - 1];
    }
    let mut j = FEATURES - 1;
    while j > 0 && best[j - 1] > h {
        best[j] = best[j - 1];
        j -= 1;
    }
    best[j] = h;
    best[FEATURES - 1]
}

fn finish(best: [u64; FEATURES]) -> Features {
    best.map(|v| if v == u64::MAX { u32::MAX } else { (v >> 32) as u32 })
}

/// Chunks that can be bases (stored whole, or deltas under [`MAX_DEPTH`] deep), findable by
/// shared features.
#[derive(Default)]
pub struct Resemblance {
    /// ([`table_key`] of a feature, chunk number), sorted.
    table: Vec<(u32, u32)>,
    /// `bucket[k]..bucket[k + 1]`: the table entries whose key's top 16 bits are `k` (one
    /// cache-friendly jump instead of a binary search over the whole table).
    bucket: Vec<u32>,
    chunks: Vec<Id>,
    /// Deltas between each chunk and a chunk stored whole (0: stored whole).
    depth: Vec<u8>,
    /// Chunks numbered from here on were added by this run ([`Resemblance::extend`]).
    loaded: usize,
}

impl Resemblance {
    /// Loads every features file, keeping indexed chunks that can be bases. A damaged features file
    /// is skipped (features only steer compression, never correctness).
    ///
    /// # Errors
    /// Only when `features/` cannot be listed.
    pub fn load(store: &Store, index: &Index) -> Result<Resemblance> {
        let dir = store.root().join("features");
        let mut names: Vec<_> = match fs::read_dir(&dir) {
            Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Resemblance::default()),
            Err(e) => return Err(Error::io("list", &dir, e)),
        };
        // Oldest first: later chunks win ties, and the newest night is the likeliest base.
        names.sort();
        let mut r = Resemblance::default();
        let mut depths = Depths::new(store, index);
        for p in names {
            let Ok(bytes) = fsutil::read_limited(&p, MAX_FEATURES_FILE) else { continue };
            let Ok(entries) = delta::decode_features(&bytes) else { continue };
            for (head, f) in entries {
                // Unknown, unreadable and too deep chunks cannot be bases.
                let Some(id) = index.find_by_head(head) else { continue };
                match depths.of(&id) {
                    Some(d) if d < MAX_DEPTH => r.add(id, &f, d),
                    _ => {}
                }
            }
        }
        r.seal();
        r.loaded = r.chunks.len();
        Ok(r)
    }

    /// Adds chunks this run stored (whole, or as deltas that can be bases) once they are
    /// durable, so later chunks of the same run can be deltas against them (a dump's chunks
    /// resemble each other, not only yesterday's). The new entries are sorted and merged in:
    /// linear in the table.
    pub fn extend(&mut self, chunks: impl IntoIterator<Item = (Id, Features, u8)>) {
        let mut fresh =
            Resemblance { chunks: std::mem::take(&mut self.chunks), depth: std::mem::take(&mut self.depth), ..Default::default() };
        for (id, f, d) in chunks {
            fresh.add(id, &f, d);
        }
        self.chunks = std::mem::take(&mut fresh.chunks);
        self.depth = std::mem::take(&mut fresh.depth);
        if fresh.table.is_empty() {
            return;
        }
        fresh.table.sort_unstable();
        let old = std::mem::take(&mut self.table);
        let mut merged = Vec::with_capacity(old.len() + fresh.table.len());
        let (mut a, mut b) = (old.into_iter().peekable(), fresh.table.into_iter().peekable());
        while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
            merged.push(if x <= y { a.next() } else { b.next() }.expect("peeked"));
        }
        merged.extend(a);
        merged.extend(b);
        self.table = merged;
        self.build_buckets();
    }

    /// Sorts the table and builds the bucket offsets.
    fn seal(&mut self) {
        // On every core: 7 nights' features are about a million entries.
        self.table.par_sort_unstable();
        self.build_buckets();
    }

    fn build_buckets(&mut self) {
        self.bucket = vec![0; (1 << 16) + 1];
        for &(v, _) in &self.table {
            self.bucket[(v >> 16) as usize + 1] += 1;
        }
        for k in 1..self.bucket.len() {
            self.bucket[k] += self.bucket[k - 1];
        }
    }

    fn add(&mut self, id: Id, f: &Features, depth: u8) {
        let n = self.chunks.len() as u32;
        self.chunks.push(id);
        self.depth.push(depth);
        let mut last = None;
        for &v in f.iter().filter(|&&v| v != u32::MAX) {
            if last != Some(v) {
                self.table.push((table_key(v), n));
            }
            last = Some(v);
        }
    }

    /// Number of chunks known.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Whether no chunk is known.
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The known chunk sharing the most features with `f` (at least [`MIN_SHARED`], or
    /// [`MIN_SHARED_SAME_RUN`] for a chunk this run added); the most recently added wins a tie.
    pub fn best(&self, f: &Features) -> Option<Id> {
        self.best_n(f, 1).pop().map(|(id, _)| id)
    }

    /// Up to `n` known chunks sharing the most features with `f` (at least [`MIN_SHARED`], or
    /// [`MIN_SHARED_SAME_RUN`] for a chunk this run added), most similar first, each with its
    /// depth (0: stored whole).
    pub fn best_n(&self, f: &Features, n: usize) -> Vec<(Id, u8)> {
        // A feature common to very many chunks (zero runs, padding) says nothing: look at a few.
        const MAX_PER_FEATURE: usize = 8;
        if self.bucket.is_empty() {
            return vec![];
        }
        let mut votes: [(u32, usize); FEATURES * MAX_PER_FEATURE] = [(0, 0); FEATURES * MAX_PER_FEATURE];
        let mut used = 0;
        let mut last = None;
        for &v in f.iter().filter(|&&v| v != u32::MAX) {
            if last == Some(v) {
                continue;
            }
            last = Some(v);
            let v = table_key(v);
            let k = (v >> 16) as usize;
            let (lo, hi) = (self.bucket[k] as usize, self.bucket[k + 1] as usize);
            let run = &self.table[lo..hi];
            let start = lo + run.partition_point(|e| e.0 < v);
            let end = lo + run.partition_point(|e| e.0 <= v);
            // The newest holders of this feature (highest chunk numbers sort last).
            for &(_, n) in &self.table[end.saturating_sub(MAX_PER_FEATURE).max(start)..end] {
                match votes[..used].iter_mut().find(|x| x.0 == n) {
                    Some(x) => x.1 += 1,
                    None => {
                        votes[used] = (n, 1);
                        used += 1;
                    }
                }
            }
        }
        let enough = |&(n, v): &(u32, usize)| v >= if (n as usize) < self.loaded { MIN_SHARED } else { MIN_SHARED_SAME_RUN };
        let mut ranked: Vec<(u32, usize)> = votes[..used].iter().copied().filter(enough).collect();
        ranked.sort_unstable_by_key(|x| std::cmp::Reverse((x.1, x.0)));
        ranked.into_iter().take(n).map(|x| (self.chunks[x.0 as usize], self.depth[x.0 as usize])).collect()
    }
}

/// Where a feature sorts in the resemblance table. Features are the smallest of a chunk's window
/// hashes, so their top bits are nearly always zero (for a 16 KiB chunk under 2^21 of 2^32):
/// bucketed by those bits, every feature fell into the first few dozen of the 65,536 buckets
/// and each lookup was a binary search over thousands of entries, cache misses each step (90 %
/// of `best_n`'s samples, 4.7 % of an incremental night's). Swapping the halves buckets by the
/// low bits, which are evenly spread; the map is one-to-one, so equal features still meet.
fn table_key(v: u32) -> u32 {
    v.rotate_left(16)
}

/// The bases a delta blob names, from a read of its header only (`buf` is the read buffer).
///
/// # Errors
/// As [`PackReader::read_blob`]; [`ErrorKind::Corrupt`] for a header that does not decode.
pub fn delta_bases(packs: &PackReader, id: &Id, loc: &Location, buf: &mut Vec<u8>) -> Result<Vec<Id>> {
    let head = Location { len: header_read_len(loc), ..*loc };
    header_bases(id, packs.read_blob(id, &head, buf)?)
}

/// Bytes to read for a delta's header: the longest header, or the whole blob when shorter.
fn header_read_len(loc: &Location) -> u32 {
    loc.len.min(delta::header_len(delta::MAX_BASES as u8) as u32)
}

/// The bases named by the header at the start of `blob`.
fn header_bases(id: &Id, blob: &[u8]) -> Result<Vec<Id>> {
    delta::decode_blob(blob).map(|(b, _)| b).map_err(|e| Error::corrupt(format!("chunk {}", id.short()), e))
}

/// Depths of stored chunks, read from delta headers (each chunk's once).
struct Depths<'a> {
    packs: PackReader,
    index: &'a Index,
    /// Depths of the delta chunks walked so far.
    known: std::collections::HashMap<Id, Option<u8>>,
    /// A stretch of one pack (pack, offset, bytes): a features file lists chunks in the order
    /// they were written, so the next delta's header is usually in it. One read per header
    /// was a fifth of the time a backup took to load the features of 7 nights.
    span: (Id, u64, Vec<u8>),
}

impl<'a> Depths<'a> {
    fn new(store: &Store, index: &'a Index) -> Self {
        Depths { packs: PackReader::new(store), index, known: Default::default(), span: (Id([0; 32]), 0, Vec::new()) }
    }

    /// Deltas between `id` and a chunk stored whole; `None` for a chunk not indexed, unreadable,
    /// or in a chain over [`MAX_DEPTH`] (or a loop, which only a damaged store can hold).
    fn of(&mut self, id: &Id) -> Option<u8> {
        self.walk(id, 0)
    }

    fn walk(&mut self, id: &Id, above: u8) -> Option<u8> {
        let loc = self.index.get(id)?;
        if loc.encoding != Encoding::ZstdDelta {
            return Some(0);
        }
        if let Some(d) = self.known.get(id) {
            return *d;
        }
        if above >= MAX_DEPTH {
            return None;
        }
        let d = match self.bases(id, &loc) {
            Ok(bases) => bases.iter().try_fold(0u8, |m, b| self.walk(b, above + 1).map(|d| m.max(d + 1))),
            Err(_) => None,
        };
        let d = d.filter(|&d| d <= MAX_DEPTH);
        self.known.insert(*id, d);
        d
    }

    /// The bases a delta names, from its header, read through the span.
    fn bases(&mut self, id: &Id, loc: &Location) -> Result<Vec<Id>> {
        const SPAN: usize = 64 << 10;
        let head = header_read_len(loc) as u64;
        let (pack, start, bytes) = &mut self.span;
        let at = loc.offset as u64;
        if !(*pack == loc.pack && *start <= at && at + head <= *start + bytes.len() as u64) {
            (*pack, *start) = (loc.pack, at);
            bytes.clear();
            self.packs.read_span(&loc.pack, at, SPAN, bytes)?;
        }
        let (_, start, bytes) = &self.span;
        let from = (at - start) as usize;
        let blob = bytes.get(from..from + head as usize).ok_or_else(|| {
            Error::new(ErrorKind::Corrupt, format!("chunk {} in pack {}: the pack ends inside the blob", id.short(), loc.pack.short()))
        })?;
        header_bases(id, blob)
    }
}

/// The longest delta chain among the indexed chunks (0: no deltas), and how many chunks could
/// not be followed to a chunk stored whole (unreadable headers, missing bases, or over
/// [`MAX_DEPTH`]): `verify` says which files that touches.
pub fn longest_chain(store: &Store, index: &Index) -> (u8, u64) {
    let mut depths = Depths::new(store, index);
    let (mut longest, mut broken) = (0u8, 0u64);
    for (id, _) in index.by_pack().into_values().flatten().filter(|(_, l)| l.encoding == Encoding::ZstdDelta) {
        match depths.of(&id) {
            Some(d) => longest = longest.max(d),
            None => broken += 1,
        }
    }
    (longest, broken)
}

/// Writes the features of the chunks one backup stored that can be bases (`name` unique per run).
///
/// # Errors
/// I/O errors with the path.
pub fn write_features(store: &Store, name: &str, entries: &[(Id, Features)]) -> Result<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let entries: Vec<_> = entries.iter().map(|(id, f)| (id.head(), *f)).collect();
    write_heads(store, name, &entries)
}

fn write_heads(store: &Store, name: &str, entries: &[(IdHead, Features)]) -> Result<()> {
    let dir = store.root().join("features");
    fs::create_dir_all(&dir).at("create", &dir)?;
    fsutil::write_atomic(&store.root().join("tmp"), &dir.join(name), &delta::encode_features(entries))
}

/// Replaces every features file by one holding only the chunks in `keep` (plus `extra`).
/// Damaged features files are dropped (features only steer compression).
///
/// # Errors
/// I/O errors with the path.
pub fn compact_features(store: &Store, keep: &std::collections::HashSet<Id>, extra: Vec<(Id, Features)>) -> Result<()> {
    let dir = store.root().join("features");
    let mut old: Vec<std::path::PathBuf> = match fs::read_dir(&dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(Error::io("list", &dir, e)),
    };
    old.sort();
    let keep: std::collections::HashSet<IdHead> = keep.iter().map(Id::head).collect();
    let mut seen = std::collections::HashSet::new();
    let mut merged = vec![];
    // Newest first, so a chunk keeps its latest features.
    for p in old.iter().rev() {
        let Ok(bytes) = fsutil::read_limited(p, MAX_FEATURES_FILE) else { continue };
        let Ok(entries) = delta::decode_features(&bytes) else { continue };
        merged.extend(entries.into_iter().filter(|(head, _)| keep.contains(head) && seen.insert(*head)));
    }
    merged.extend(extra.into_iter().map(|(id, f)| (id.head(), f)).filter(|(head, _)| seen.insert(*head)));
    merged.reverse();
    let name = format!("{:020}-merged", crate::store::now_ns());
    write_heads(store, &name, &merged)?;
    for p in old.iter().filter(|p| p.file_name().is_some_and(|n| n != name.as_str())) {
        fs::remove_file(p).at("remove features file", p)?;
    }
    fsutil::fsync_dir(&dir)
}

thread_local! {
    // Contexts are reused: creating one per chunk cost 8% of a restore (ZSTD_createDCtx).
    static DELTA_CCTX: RefCell<Option<CCtx<'static>>> = const { RefCell::new(None) };
    static DELTA_DCTX: RefCell<Option<DCtx<'static>>> = const { RefCell::new(None) };
}

/// The prefix as the reused contexts' lifetime wants it.
#[allow(unsafe_code)]
fn static_prefix(prefix: &[u8]) -> &'static [u8] {
    // SAFETY: a referenced prefix is read only while the next frame is compressed or
    // decompressed, which happens inside the caller, and the caller resets the context (or drops
    // it) before returning, so zstd never keeps the reference past `prefix`'s life.
    unsafe { std::mem::transmute::<&[u8], &'static [u8]>(prefix) }
}

/// Hash table size (log2 of entries) for delta frames. zstd sizes its tables for the input (16
/// KiB) and drops many positions of the 32 KiB prefix at level 1; 2^16 entries (256 KiB per
/// thread) keep them. Deltas of the shared dataset's 7 nights: 124.6 MiB at zstd's default,
/// 121.9 at 15, 121.3 at 17, 121.2 at 20 (contrib/experiments/delta-measurements.patch).
const DELTA_HASH_LOG: u32 = 16;

/// Compresses `data` against `prefix` (the bases' bytes) at `level`: the zstd frame of a delta.
///
/// # Errors
/// When zstd refuses (out of memory).
pub fn compress(data: &[u8], prefix: &[u8], level: i32) -> Result<Vec<u8>> {
    let fail = |c: usize| Error::new(ErrorKind::Io, format!("zstd delta compression failed: {}", zstd::zstd_safe::get_error_name(c)));
    DELTA_CCTX.with(|c| {
        let mut c = c.borrow_mut();
        let cctx = c.get_or_insert_with(CCtx::create);
        let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
        let r = cctx
            .set_parameter(CParameter::CompressionLevel(level))
            .and_then(|_| cctx.set_parameter(CParameter::HashLog(DELTA_HASH_LOG)))
            .and_then(|_| cctx.ref_prefix(static_prefix(prefix)))
            .and_then(|_| cctx.compress2(&mut out, data));
        // Drops the prefix reference whatever happened; a context that cannot be reset is dropped.
        if cctx.reset(ResetDirective::SessionAndParameters).is_err() {
            *c = None;
        }
        r.map_err(fail)?;
        Ok(out)
    })
}

/// Decompresses a delta's zstd `frame` against `prefix` into `out` (exactly `raw_len` bytes).
///
/// # Errors
/// [`ErrorKind::Corrupt`] when the frame does not decompress to `raw_len` bytes.
pub fn decompress(frame: &[u8], prefix: &[u8], raw_len: usize, out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    decompress_append(frame, prefix, raw_len, out)
}

/// Like [`decompress`] but appended to `out`; on error `out` keeps its old length.
///
/// # Errors
/// As [`decompress`].
pub fn decompress_append(frame: &[u8], prefix: &[u8], raw_len: usize, out: &mut Vec<u8>) -> Result<()> {
    let bad = |why: String| Error::new(ErrorKind::Corrupt, format!("delta blob does not decompress: {why}"));
    let start = out.len();
    out.reserve(raw_len);
    let n = DELTA_DCTX.with(|d| {
        let mut d = d.borrow_mut();
        let dctx = d.get_or_insert_with(DCtx::create);
        // A cursor at the end writes into the spare capacity.
        let mut tail = std::io::Cursor::new(&mut *out);
        tail.set_position(start as u64);
        let r = dctx.ref_prefix(static_prefix(prefix)).and_then(|_| dctx.decompress(&mut tail, frame));
        // Drops the prefix reference whatever happened; a context that cannot be reset is dropped.
        if dctx.reset(ResetDirective::SessionAndParameters).is_err() {
            *d = None;
        }
        r.map_err(|c| bad(zstd::zstd_safe::get_error_name(c).into()))
    });
    match n {
        Ok(n) if n == raw_len => Ok(()),
        Ok(n) => {
            out.truncate(start);
            Err(bad(format!("{n} bytes, expected {raw_len}")))
        }
        Err(e) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// Decoded bases one worker keeps, so deltas that share a base (the same region changed on
/// several nights) decompress it once. Entries come from unchecked reads: they only feed
/// rebuilds whose result is itself checked against its id.
#[derive(Default)]
pub struct BaseCache {
    entries: Vec<(Option<Id>, Vec<u8>)>,
    next: usize,
    prefix: Vec<u8>,
    stored: Vec<u8>,
}

impl BaseCache {
    /// Bases kept (16 KiB each at the default chunk size).
    const CAP: usize = 32;

    fn find(&self, id: &Id) -> Option<usize> {
        self.entries.iter().position(|(e, _)| e.as_ref() == Some(id))
    }

    /// Keeps `bytes` as chunk `id`'s, for deltas built on it that come next: verify checks a
    /// chain's links lowest first, so each is rebuilt from the one below it. Only for bytes
    /// whose hash was checked, or whose users check theirs.
    pub fn remember(&mut self, id: Id, bytes: &[u8]) {
        if self.find(&id).is_some() {
            return;
        }
        let slot = self.take_slot();
        let e = &mut self.entries[slot];
        e.1.clear();
        e.1.extend_from_slice(bytes);
        e.0 = Some(id);
    }

    /// The slot the next base goes to (oldest first), marked empty until it is filled.
    fn take_slot(&mut self) -> usize {
        if self.entries.len() < Self::CAP {
            self.entries.push((None, Vec::new()));
            return self.entries.len() - 1;
        }
        let i = self.next;
        self.next = (self.next + 1) % Self::CAP;
        self.entries[i].0 = None;
        i
    }
}

/// Where a rebuild stands in a delta chain.
#[derive(Clone, Copy)]
struct Link {
    /// Check each base's BLAKE3 (else only the caller's check of the result proves them).
    check_bases: bool,
    /// Deltas from the chunk the caller asked for down to this one, this one included.
    depth: u8,
}

impl Link {
    const TOP_CHECKED: Link = Link { check_bases: true, depth: 1 };
    const TOP_UNCHECKED: Link = Link { check_bases: false, depth: 1 };
}

/// Reads chunks whatever their encoding: a delta is rebuilt from its bases.
pub struct ChunkReader<'a> {
    /// Where chunks are.
    pub index: &'a Index,
    /// The pack files.
    pub packs: &'a PackReader,
}

impl ChunkReader<'_> {
    /// Reads chunk `id` stored at `loc` into `out`; checks its BLAKE3 unless `check` is false
    /// (bases are then checked one by one).
    ///
    /// # Errors
    /// As [`PackReader::read_chunk_into`]; for a delta also a missing or damaged base, named.
    pub fn read_into(&self, id: &Id, loc: &Location, stored: &mut Vec<u8>, out: &mut Vec<u8>, check: bool) -> Result<()> {
        if loc.encoding != Encoding::ZstdDelta {
            return self.packs.read_chunk_into(id, loc, stored, out, check);
        }
        self.packs.read_blob_into(id, loc, stored)?;
        if check {
            self.rebuild_checked(id, loc, stored, out, &mut BaseCache::default())
        } else {
            self.rebuild(id, loc, stored, out)
        }
    }

    /// Decodes chunk `id` from its stored `blob` (read by the caller, e.g. with its neighbours
    /// in one read), appends it to `out` and checks its BLAKE3, reusing `cache`'s decoded bases.
    /// Appending lets a restore decode consecutive chunks straight into the buffer it writes.
    /// On error `out` keeps its old length.
    ///
    /// # Errors
    /// As [`ChunkReader::read_into`].
    pub fn decode_cached(&self, id: &Id, loc: &Location, blob: &[u8], out: &mut Vec<u8>, cache: &mut BaseCache) -> Result<()> {
        if loc.encoding == Encoding::ZstdDelta {
            return self.rebuild_checked_append(id, loc, blob, out, cache);
        }
        crate::store::pack::decode_whole_append(id, loc, blob, out, true)
    }

    /// Rebuilds a delta from its stored `blob` into `out` and checks the result against `id`.
    /// Bases are decoded unchecked (from `cache` when there): the result's hash proves them too.
    /// Only when it does not match are the bases read again and checked, to name what is damaged.
    ///
    /// # Errors
    /// As [`ChunkReader::rebuild`], and a result that does not hash to `id`.
    pub fn rebuild_checked(&self, id: &Id, loc: &Location, blob: &[u8], out: &mut Vec<u8>, cache: &mut BaseCache) -> Result<()> {
        out.clear();
        self.rebuild_checked_append(id, loc, blob, out, cache)
    }

    fn rebuild_checked_append(&self, id: &Id, loc: &Location, blob: &[u8], out: &mut Vec<u8>, cache: &mut BaseCache) -> Result<()> {
        let start = out.len();
        if self.rebuild_with(id, loc, blob, out, cache, Link::TOP_UNCHECKED).is_ok() && Id::of(&out[start..]) == *id {
            return Ok(());
        }
        out.truncate(start);
        self.rebuild_with(id, loc, blob, out, &mut BaseCache::default(), Link::TOP_CHECKED)?;
        if Id::of(&out[start..]) != *id {
            out.truncate(start);
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!("chunk {} in pack {}: content does not match its hash", id.short(), loc.pack.short()),
            ));
        }
        Ok(())
    }

    /// Rebuilds a delta chunk from its stored blob into `out`, checking each base (not the
    /// result's hash).
    ///
    /// # Errors
    /// A malformed header, a missing, damaged or delta base, a frame that does not decompress.
    pub fn rebuild(&self, id: &Id, loc: &Location, blob: &[u8], out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        self.rebuild_with(id, loc, blob, out, &mut BaseCache::default(), Link::TOP_CHECKED)
    }

    /// Appends the rebuilt delta to `out` (unchanged on error).
    fn rebuild_with(&self, id: &Id, loc: &Location, blob: &[u8], out: &mut Vec<u8>, cache: &mut BaseCache, link: Link) -> Result<()> {
        let Link { check_bases, depth } = link;
        let what = || format!("chunk {} in pack {}", id.short(), loc.pack.short());
        let (bases, frame) = delta::decode_blob(blob).map_err(|e| Error::corrupt(what(), e))?;
        let mut prefix = std::mem::take(&mut cache.prefix);
        prefix.clear();
        // Most deltas have one base: its cache slot is the prefix itself, with no copy.
        let mut single = None;
        for base in &bases {
            let cached = if check_bases { None } else { cache.find(base) };
            let slot = match cached {
                Some(i) => i,
                None => {
                    let bl = self.index.get(base).ok_or_else(|| {
                        Error::new(ErrorKind::Missing, format!("{}: its delta base chunk {} is not in the index", what(), base.short()))
                    })?;
                    let slot = cache.take_slot();
                    if bl.encoding == Encoding::ZstdDelta {
                        // `depth` counts this chunk: a base of a chunk at MAX_DEPTH cannot be a delta.
                        if depth >= MAX_DEPTH {
                            return Err(Error::new(
                                ErrorKind::Corrupt,
                                format!("{}: its delta chain is longer than {MAX_DEPTH} deltas (at base {})", what(), base.short()),
                            ));
                        }
                        let mut decoded = std::mem::take(&mut cache.entries[slot].1);
                        decoded.clear();
                        let mut stored = Vec::new();
                        let r = self.packs.read_blob_into(base, &bl, &mut stored).and_then(|_| {
                            self.rebuild_with(
                                base,
                                &bl,
                                &stored,
                                &mut decoded,
                                // The same cache: the chain's lower links are kept for the next
                                // chunk too (this slot is out of it until refilled below).
                                cache,
                                Link { check_bases, depth: depth + 1 },
                            )
                        });
                        // Checked bases are checked one by one, the chain's included.
                        let r = r.and_then(|_| match check_bases && Id::of(&decoded) != *base {
                            true => Err(Error::new(ErrorKind::Corrupt, format!("chunk {}: content does not match its hash", base.short()))),
                            false => Ok(()),
                        });
                        cache.entries[slot].1 = decoded;
                        r.map_err(|e| e.context(format!("{}: its delta base", what())))?;
                    } else {
                        let (stored, decoded) = (&mut cache.stored, &mut cache.entries[slot].1);
                        self.packs
                            .read_blob(base, &bl, stored)
                            .and_then(|blob| crate::store::pack::decode_whole(base, &bl, blob, decoded, check_bases))
                            .map_err(|e| e.context(format!("{}: its delta base", what())))?;
                    }
                    // A checked read never feeds the cache's unchecked entries.
                    cache.entries[slot].0 = (!check_bases).then_some(*base);
                    slot
                }
            };
            if bases.len() == 1 {
                single = Some(slot);
            } else {
                // Copied at once: the next base's slot may be this one's.
                prefix.extend_from_slice(&cache.entries[slot].1);
            }
        }
        let p = match single {
            Some(slot) => &cache.entries[slot].1,
            None => &prefix,
        };
        let r = decompress_append(frame, p, loc.raw_len as usize, out).map_err(|e| e.context(what()));
        cache.prefix = prefix;
        r
    }

    /// Reads and checks one chunk.
    ///
    /// # Errors
    /// As [`ChunkReader::read_into`], and [`ErrorKind::Missing`] for a chunk not in the index.
    pub fn read(&self, id: &Id) -> Result<Vec<u8>> {
        let loc = self.index.get(id).ok_or_else(|| Error::new(ErrorKind::Missing, format!("chunk {} is not in the index", id.short())))?;
        let (mut s, mut out) = (Vec::new(), Vec::new());
        self.read_into(id, &loc, &mut s, &mut out, true)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    const PINNED: Features = [59338, 534817, 892644, 907034, 1076699, 1125311, 1131494, 1333831];

    /// The one-chain scan `features` must match (features stored by older builds stay valid).
    fn features_one_chain(data: &[u8]) -> Features {
        let mut best = [u64::MAX; FEATURES];
        let mut h: u64 = 0;
        for (i, &b) in data.iter().enumerate() {
            h = (h << 1).wrapping_add(GEAR[b as usize]);
            if i >= 63 && h < best[FEATURES - 1] && !best.contains(&h) {
                let mut j = FEATURES - 1;
                while j > 0 && best[j - 1] > h {
                    best[j] = best[j - 1];
                    j -= 1;
                }
                best[j] = h;
            }
        }
        best.map(|v| if v == u64::MAX { u32::MAX } else { (v >> 32) as u32 })
    }

    proptest::proptest! {
        #[test]
        fn two_chains_give_the_one_chain_features(seed in 0u64..u64::MAX, len in 0usize..70_000, alphabet in 1u8..=255) {
            // Small alphabets make repeated window hashes, which the distinct-set logic must skip.
            let data: Vec<u8> = noise(seed, len).into_iter().map(|b| b % alphabet).collect();
            proptest::prop_assert_eq!(features(&data), features_one_chain(&data));
        }
    }

    #[test]
    fn features_are_pinned() {
        // Stored features files depend on these values: changing them loses every stored base.
        let f = features(&noise(11, 16384));
        assert_eq!(f, features_one_chain(&noise(11, 16384)));
        assert_eq!(f, PINNED);
    }

    #[test]
    fn similar_chunks_share_features_and_different_ones_do_not() {
        let a = noise(1, 16384);
        let mut b = a.clone();
        b[5000..5010].copy_from_slice(b"0123456789"); // a changed value
        b.splice(9000..9000, *b"inserted"); // shifted content
        let (fa, fb, fc) = (features(&a), features(&b), features(&noise(2, 16384)));
        let shared = |x: &Features, y: &Features| x.iter().filter(|v| y.contains(v)).count();
        assert!(shared(&fa, &fb) >= 6, "{fa:?} {fb:?}");
        assert_eq!(shared(&fa, &fc), 0);
        assert_eq!(features(&[]), [u32::MAX; FEATURES]);
        let mut r = Resemblance::default();
        r.add(Id([1; 32]), &fc, 0);
        r.add(Id([2; 32]), &fa, 0);
        r.seal();
        assert_eq!(r.best(&fb), Some(Id([2; 32])));
        assert_eq!(r.best(&features(&noise(3, 16384))), None);
    }

    #[test]
    fn chunks_added_during_a_run_are_found_like_loaded_ones() {
        let chunks: Vec<Vec<u8>> = (10..40).map(|s| noise(s, 16384)).collect();
        let similar = |c: &[u8]| {
            let mut v = c.to_vec();
            v[700..710].fill(1);
            features(&v)
        };
        let mut r = Resemblance::default();
        r.extend(vec![]);
        assert!(r.is_empty());
        // In several steps, as packs become durable; a loaded table grows the same way.
        for part in chunks.chunks(7) {
            let first = chunks.iter().position(|c| c == &part[0]).unwrap();
            r.extend(part.iter().enumerate().map(|(i, c)| (Id([(first + i) as u8; 32]), features(c), 0)));
        }
        assert_eq!(r.len(), chunks.len());
        assert!(r.table.windows(2).all(|w| w[0] <= w[1]), "the merged table stays sorted");
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!(r.best(&similar(c)), Some(Id([i as u8; 32])), "chunk {i}");
        }
        assert_eq!(r.best(&features(&noise(99, 16384))), None);
    }

    #[test]
    fn features_of_real_sized_chunks_spread_over_the_buckets() {
        // 500 chunks of 16 KiB: 4,000 features over 65,536 buckets. Keyed by the features' top
        // bits, all of them fell into a few dozen buckets (hundreds of entries each).
        let mut r = Resemblance::default();
        for s in 0..500u64 {
            r.add(Id([0; 32]), &features(&noise(1000 + s, 16384)), 0);
        }
        r.seal();
        let largest = r.bucket.windows(2).map(|w| w[1] - w[0]).max().unwrap();
        assert!(largest <= 6, "a bucket holds {largest} of {} entries", r.table.len());
    }

    #[test]
    fn deltas_round_trip_and_are_small() {
        let base = noise(4, 16384);
        let mut data = base.clone();
        data[100..120].fill(7);
        let frame = compress(&data, &base, 3).unwrap();
        assert!(frame.len() < 200, "{}", frame.len());
        let mut out = vec![];
        decompress(&frame, &base, data.len(), &mut out).unwrap();
        assert_eq!(out, data);
        // The wrong base or length is an error (or a different result), never a panic.
        assert!(decompress(&frame, &noise(5, 16384), data.len(), &mut out).map(|_| out != data).unwrap_or(true));
        assert!(decompress(&frame, &base, data.len() + 1, &mut out).is_err());
        assert!(decompress(b"junk", &base, 10, &mut out).is_err());
    }

    #[test]
    fn a_chunk_of_the_same_run_needs_more_shared_features_than_an_earlier_one() {
        use crate::store::pack::PackWriter;
        use crate::store::{InitOptions, Store};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(&dir.path().join("s"), InitOptions::default()).unwrap();
        // An earlier run stored one chunk whole, with its features.
        let old = noise(3, 4096);
        let mut w = PackWriter::new(&store);
        let (enc, stored) = crate::compress::compress(&old, 3);
        w.add(Id::of(&old), enc, &stored, old.len() as u32).unwrap();
        let pack = w.finish().unwrap().unwrap();
        let mut index = Index::default();
        index.add_pack(pack.id, &pack.entries);
        index.flush(&store).unwrap();
        let earlier: Features = [1, 2, 3, 4, 5, 6, 7, 8];
        write_features(&store, "run-1", &[(Id::of(&old), earlier)]).unwrap();
        let mut r = Resemblance::load(&store, &index).unwrap();
        // This run adds one.
        let now = Id([9; 32]);
        r.extend(vec![(now, [11, 12, 13, 14, 15, 16, 17, 18], 1)]);
        let sharing = |a: &[u32]| {
            let mut f = [u32::MAX; FEATURES];
            f[..a.len()].copy_from_slice(a);
            f
        };
        assert_eq!(r.best(&sharing(&[1, 2, 100, 101])), Some(Id::of(&old)), "two shared features are enough for an earlier chunk");
        assert_eq!(r.best(&sharing(&[11, 12, 100, 101])), None, "but not for one of the same run");
        assert_eq!(r.best(&sharing(&[11, 12, 13, 100])), Some(now));
        assert_eq!(r.best_n(&sharing(&[1, 2, 11, 12, 13]), 2), vec![(now, 1), (Id::of(&old), 0)], "with their depths");
    }

    #[test]
    fn features_files_of_both_versions_find_stored_chunks_and_skip_unknown_ones() {
        use crate::store::pack::PackWriter;
        use crate::store::{InitOptions, Store};
        use rpger_formats::envelope;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(&dir.path().join("s"), InitOptions::default()).unwrap();
        let (a, b) = (noise(1, 4096), noise(2, 4096));
        let mut w = PackWriter::new(&store);
        for c in [&a, &b] {
            let (enc, stored) = crate::compress::compress(c, 3);
            w.add(Id::of(c), enc, &stored, c.len() as u32).unwrap();
        }
        let pack = w.finish().unwrap().unwrap();
        let mut index = Index::default();
        index.add_pack(pack.id, &pack.entries);
        index.flush(&store).unwrap();
        let (fa, fb, fc): (Features, Features, Features) =
            ([1, 2, 3, 4, 5, 6, 7, 8], [11, 12, 13, 14, 15, 16, 17, 18], [21, 22, 23, 24, 25, 26, 27, 28]);
        // A store written before features files named chunks by 8 bytes: whole ids, version 1.
        let mut v1 = 1u32.to_le_bytes().to_vec();
        v1.extend_from_slice(&Id::of(&a).0);
        fa.iter().for_each(|v| v1.extend_from_slice(&v.to_le_bytes()));
        let v1_kind = envelope::Kind { current_version: 1, ..delta::FEATURES_KIND };
        fs::write(store.root().join("features").join("0-old"), envelope::seal(&v1_kind, &v1)).unwrap();
        write_features(&store, "1-new", &[(Id::of(&b), fb), (Id::of(b"never stored"), fc)]).unwrap();
        let r = Resemblance::load(&store, &index).unwrap();
        assert_eq!(r.len(), 2, "the chunk no index lists is no base");
        assert_eq!(r.best(&fa), Some(Id::of(&a)), "version 1");
        assert_eq!(r.best(&fb), Some(Id::of(&b)), "version 2, resolved to the whole id");
        assert_eq!(r.best(&fc), None);
    }

    #[test]
    fn chain_depths_come_from_headers_read_in_stretches_and_a_cut_header_is_no_base() {
        use crate::store::pack::PackWriter;
        use crate::store::{InitOptions, Store};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(&dir.path().join("s"), InitOptions::default()).unwrap();
        // A chunk stored whole, then a chain of two deltas on it, one after the other in a pack.
        let a = noise(1, 16384);
        let mut b = a.clone();
        b[100..110].fill(1);
        let mut c = b.clone();
        c[9000..9010].fill(2);
        let (ida, idb, idc) = (Id::of(&a), Id::of(&b), Id::of(&c));
        let mut w = PackWriter::new(&store);
        let (enc, stored) = crate::compress::compress(&a, 3);
        w.add(ida, enc, &stored, a.len() as u32).unwrap();
        w.add(idb, Encoding::ZstdDelta, &delta::encode_blob(&[ida], &compress(&b, &a, 1).unwrap()), 16384).unwrap();
        w.add(idc, Encoding::ZstdDelta, &delta::encode_blob(&[idb], &compress(&c, &b, 1).unwrap()), 16384).unwrap();
        let pack = w.finish().unwrap().unwrap();
        let mut index = Index::default();
        index.add_pack(pack.id, &pack.entries);
        let depths = |index: &Index| {
            let mut d = Depths::new(&store, index);
            [d.of(&ida), d.of(&idb), d.of(&idc), d.of(&Id([7; 32]))]
        };
        assert_eq!(depths(&index), [Some(0), Some(1), Some(2), None]);
        // The pack cut inside the last delta's header: that chunk can no longer be a base.
        let loc = index.get(&idc).unwrap();
        let f = std::fs::OpenOptions::new().write(true).open(store.pack_path(&pack.id)).unwrap();
        f.set_len(loc.offset as u64 + 10).unwrap();
        assert_eq!(depths(&index), [Some(0), Some(1), None, None]);
    }

    #[test]
    fn decode_cached_appends_whole_and_delta_chunks_and_keeps_the_buffer_on_error() {
        use crate::store::pack::PackWriter;
        use crate::store::{InitOptions, Store};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(&dir.path().join("s"), InitOptions::default()).unwrap();
        let (a, b) = (noise(1, 16384), noise(2, 16384));
        let mut one = a.clone();
        one[500..520].fill(9);
        let mut two = [&a[8192..], &b[..8192]].concat();
        two[100] ^= 1;
        let (ida, idb, id1, id2) = (Id::of(&a), Id::of(&b), Id::of(&one), Id::of(&two));
        let mut w = PackWriter::new(&store);
        for (id, data) in [(ida, &a), (idb, &b)] {
            let (enc, stored) = crate::compress::compress(data, 3);
            assert!(w.add(id, enc, &stored, data.len() as u32).unwrap().is_none());
        }
        // A delta with one base (its prefix is the cache slot itself) and one with two.
        let blob1 = delta::encode_blob(&[ida], &compress(&one, &a, 1).unwrap());
        let blob2 = delta::encode_blob(&[ida, idb], &compress(&two, &[&a[..], &b[..]].concat(), 1).unwrap());
        w.add(id1, Encoding::ZstdDelta, &blob1, one.len() as u32).unwrap();
        w.add(id2, Encoding::ZstdDelta, &blob2, two.len() as u32).unwrap();
        let pack = w.finish().unwrap().unwrap();
        let mut index = Index::default();
        index.add_pack(pack.id, &pack.entries);
        let packs = PackReader::new(&store);
        let reader = ChunkReader { index: &index, packs: &packs };
        let (mut cache, mut stored, mut out) = (BaseCache::default(), Vec::new(), b"head".to_vec());
        let mut want = out.clone();
        // Twice over, so the second pass takes the bases from the cache.
        for _ in 0..2 {
            for (id, data) in [(id1, &one), (ida, &a), (id2, &two), (idb, &b)] {
                let loc = index.get(&id).unwrap();
                let blob = packs.read_blob(&id, &loc, &mut stored).unwrap();
                reader.decode_cached(&id, &loc, blob, &mut out, &mut cache).unwrap();
                want.extend_from_slice(data);
                assert_eq!(out, want);
            }
        }
        // A flipped bit in a blob, or the wrong id: an error, and the buffer as it was.
        for id in [id1, ida, id2] {
            let loc = index.get(&id).unwrap();
            let mut blob = packs.read_blob(&id, &loc, &mut stored).unwrap().to_vec();
            let n = blob.len();
            blob[n - 3] ^= 0x10;
            assert!(reader.decode_cached(&id, &loc, &blob, &mut out, &mut cache).is_err());
            assert_eq!(out, want);
            let good = packs.read_blob(&id, &loc, &mut stored).unwrap().to_vec();
            assert!(reader.decode_cached(&Id::of(b"other"), &loc, &good, &mut out, &mut cache).is_err());
            assert_eq!(out, want);
        }
    }
}
