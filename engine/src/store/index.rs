//! The chunk index in memory: every segment merged into one sorted array of fixed-size entries
//! (a bucket table over the ids' first bits, then a short binary search; no allocation per
//! lookup), plus the entries added by the running backup.

use super::Store;
use crate::error::{Error, IoContext, Result};
use crate::fsutil;
use rayon::prelude::*;
use rpger_formats::index::{Location, Segment};
use rpger_formats::pack::{BlobEntry, Encoding};
use rpger_formats::Id;
use std::collections::HashMap;
use std::fs;

/// Largest index segment accepted on read.
const MAX_SEGMENT_FILE: u64 = 16 << 30;

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: Id,
    pack: u32,
    offset: u32,
    len: u32,
    raw_len: u32,
    encoding: Encoding,
    preferred: bool,
}

impl Entry {
    fn new(id: Id, pack: u32, loc: &Location, preferred: bool) -> Entry {
        Entry { id, pack, offset: loc.offset, len: loc.len, raw_len: loc.raw_len, encoding: loc.encoding, preferred }
    }
}

/// Reads, checks against its name and decodes one file of `index/`.
fn read_segment(e: &fs::DirEntry) -> Result<(Id, Segment)> {
    let path = e.path();
    let Some(seg_id) = e.file_name().to_str().and_then(|n| n.parse::<Id>().ok()) else {
        return Err(Error::new(crate::ErrorKind::Corrupt, format!("unknown file {} in the index directory", path.display())));
    };
    let bytes = fsutil::read_limited(&path, MAX_SEGMENT_FILE)?;
    if Id::of(&bytes) != seg_id {
        return Err(Error::new(crate::ErrorKind::Corrupt, format!("index segment {}: content does not match its name", path.display())));
    }
    let seg = Segment::decode(&bytes).map_err(|err| Error::corrupt(format!("index segment {}", path.display()), err))?;
    Ok((seg_id, seg))
}

/// chunk id -> location, for the whole store.
#[derive(Debug, Default)]
pub struct Index {
    packs: Vec<Id>,
    entries: Vec<Entry>,
    pending: HashMap<Id, Location>,
    segments: Vec<Id>,
    /// `entries[bucket[k]..bucket[k + 1]]` hold the ids whose first bits (`head >> shift`) are
    /// `k`: ids are uniform, so a lookup searches about two entries instead of the whole array
    /// (17 dependent cache misses at 128,000 chunks; 4 % of a restore's CPU).
    bucket: Vec<u32>,
    shift: u32,
}

impl Index {
    /// Loads every segment in `index/`.
    ///
    /// # Errors
    /// [`crate::ErrorKind::Corrupt`] naming the first segment that does not decode or whose
    /// content does not match its name.
    pub fn load(store: &Store) -> Result<Index> {
        let (idx, damaged) = Self::load_lenient(store)?;
        match damaged.into_iter().next() {
            Some(e) => Err(e),
            None => Ok(idx),
        }
    }

    /// Loads every segment that decodes; returns the others as errors naming them. A damaged
    /// segment only hides the chunks it lists, so restore and verify can go on without it.
    ///
    /// # Errors
    /// Only when the index directory cannot be listed.
    pub fn load_lenient(store: &Store) -> Result<(Index, Vec<Error>)> {
        let dir = store.root().join("index");
        let mut idx = Index::default();
        let mut damaged = vec![];
        let mut pack_pos: HashMap<Id, u32> = HashMap::new();
        let mut names: Vec<_> = fs::read_dir(&dir).at("list", &dir)?.collect::<std::io::Result<Vec<_>>>().at("list", &dir)?;
        names.sort_by_key(|e| e.file_name());
        // Segments are read, hashed and decoded on every core and merged in name order, a
        // core's worth at a time so that no more than that many decoded segments are held.
        for batch in names.chunks(rayon::current_num_threads().max(1)) {
            let read: Vec<_> = batch.par_iter().map(read_segment).collect();
            for r in read {
                let (seg_id, seg) = match r {
                    Ok(s) => s,
                    Err(e) => {
                        damaged.push(e);
                        continue;
                    }
                };
                for (id, loc) in seg.entries {
                    let preferred = seg.preferred.binary_search(&id).is_ok();
                    let next = pack_pos.len() as u32;
                    let pi = *pack_pos.entry(loc.pack).or_insert(next);
                    if pi == next {
                        idx.packs.push(loc.pack);
                    }
                    idx.entries.push(Entry::new(id, pi, &loc, preferred));
                }
                idx.segments.push(seg_id);
            }
        }
        // A chunk stored twice (two concurrent backups, or a prune that re-based a delta and
        // was interrupted before removing the old segments) keeps one location. Both are valid,
        // but a whole copy wins (a delta never finds its base stored as a delta), then the one
        // prune re-encoded (so a rerun sees what the interrupted prune decided).
        // The ids' first 8 bytes settle almost every comparison without building the rest of
        // the key; the sort runs on every core (it was a third of the load, and the load comes
        // before a restore or verify reads any chunk).
        idx.entries.par_sort_unstable_by(|a, b| {
            let rest = |e: &Entry| (e.id, e.encoding == Encoding::ZstdDelta, !e.preferred);
            a.id.head().cmp(&b.id.head()).then_with(|| rest(a).cmp(&rest(b)))
        });
        idx.entries.dedup_by(|a, b| a.id == b.id);
        idx.entries.shrink_to_fit();
        idx.build_buckets();
        Ok((idx, damaged))
    }

    /// Every indexed chunk grouped by pack.
    pub fn by_pack(&self) -> HashMap<Id, Vec<(Id, Location)>> {
        let mut out: HashMap<Id, Vec<(Id, Location)>> = HashMap::new();
        for e in &self.entries {
            let pack = self.packs[e.pack as usize];
            out.entry(pack)
                .or_default()
                .push((e.id, Location { pack, offset: e.offset, len: e.len, raw_len: e.raw_len, encoding: e.encoding }));
        }
        for (id, l) in &self.pending {
            out.entry(l.pack).or_default().push((*id, *l));
        }
        out
    }

    /// Where `id` is stored.
    pub fn get(&self, id: &Id) -> Option<Location> {
        if let Some(i) = self.position(id) {
            let e = &self.entries[i];
            return Some(Location {
                pack: self.packs[e.pack as usize],
                offset: e.offset,
                len: e.len,
                raw_len: e.raw_len,
                encoding: e.encoding,
            });
        }
        self.pending.get(id).copied()
    }

    /// A loaded chunk whose id starts with `head` ([`Id::head`]), for features files, which name
    /// chunks that way. Among ids sharing those 8 bytes (odds about 2^-25 in a store of a million chunks) the smallest; the running
    /// backup's own entries are not searched.
    pub fn find_by_head(&self, head: u64) -> Option<Id> {
        let b = (head >> self.shift) as usize;
        let (lo, hi) = (*self.bucket.get(b)? as usize, self.bucket[b + 1] as usize);
        let run = &self.entries[lo..hi];
        let i = run.partition_point(|e| e.id.head() < head);
        run.get(i).filter(|e| e.id.head() == head).map(|e| e.id)
    }

    /// Whether `id` is stored.
    pub fn contains(&self, id: &Id) -> bool {
        self.position(id).is_some() || self.pending.contains_key(id)
    }

    /// Where `id` is in the sorted entries. Ids are uniform hashes, so comparing their first 8
    /// bytes as one integer settles almost every step; a 32-byte memcmp per step cost 4% of a
    /// restore.
    fn position(&self, id: &Id) -> Option<usize> {
        let k = id.head();
        let b = (k >> self.shift) as usize;
        let (lo, hi) = (*self.bucket.get(b)? as usize, self.bucket[b + 1] as usize);
        self.entries[lo..hi].binary_search_by(|e| e.id.head().cmp(&k).then_with(|| e.id.cmp(id))).ok().map(|i| lo + i)
    }

    /// Rebuilds `bucket` for the sorted `entries`: about one bucket per two entries.
    fn build_buckets(&mut self) {
        let bits = (usize::BITS - (self.entries.len() / 2).leading_zeros()).clamp(4, 26);
        self.shift = 64 - bits;
        let mut bucket = vec![0u32; (1 << bits) + 1];
        for e in &self.entries {
            bucket[(e.id.head() >> self.shift) as usize + 1] += 1;
        }
        for k in 1..bucket.len() {
            bucket[k] += bucket[k - 1];
        }
        self.bucket = bucket;
    }

    /// Number of distinct chunks known.
    pub fn len(&self) -> usize {
        self.entries.len() + self.pending.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// (uncompressed, stored) bytes of all distinct chunks.
    pub fn totals(&self) -> (u64, u64) {
        let mut raw = 0u64;
        let mut stored = 0u64;
        for e in &self.entries {
            raw += e.raw_len as u64;
            stored += e.len as u64;
        }
        for l in self.pending.values() {
            raw += l.raw_len as u64;
            stored += l.len as u64;
        }
        (raw, stored)
    }

    /// (chunks, raw bytes, stored bytes) of the chunks stored as deltas.
    pub fn delta_totals(&self) -> (u64, u64, u64) {
        let mut t = (0u64, 0u64, 0u64);
        let mut add = |raw: u32, len: u32| {
            t.0 += 1;
            t.1 += raw as u64;
            t.2 += len as u64;
        };
        for e in self.entries.iter().filter(|e| e.encoding == Encoding::ZstdDelta) {
            add(e.raw_len, e.len);
        }
        for l in self.pending.values().filter(|l| l.encoding == Encoding::ZstdDelta) {
            add(l.raw_len, l.len);
        }
        t
    }

    /// Records the blobs of a pack just written.
    pub fn add_pack(&mut self, pack: Id, entries: &[BlobEntry]) {
        for b in entries {
            self.pending.entry(b.id).or_insert(Location { pack, offset: b.offset, len: b.len, raw_len: b.raw_len, encoding: b.encoding });
        }
    }

    /// Number of entries not yet written to a segment.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Writes the pending entries as one new segment (atomically) and folds them into the
    /// sorted array.
    ///
    /// # Errors
    /// I/O errors with the path.
    pub fn flush(&mut self, store: &Store) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let seg = Segment { entries: self.pending.iter().map(|(k, v)| (*k, *v)).collect(), preferred: vec![] };
        let bytes = seg.encode();
        let id = Id::of(&bytes);
        let path = store.root().join("index").join(id.to_hex());
        fsutil::write_atomic(&store.tmp_dir(), &path, &bytes)?;
        let mut pack_pos: HashMap<Id, u32> = self.packs.iter().enumerate().map(|(i, p)| (*p, i as u32)).collect();
        for (id, loc) in std::mem::take(&mut self.pending) {
            let next = self.packs.len() as u32;
            let pi = *pack_pos.entry(loc.pack).or_insert(next);
            if pi == next {
                self.packs.push(loc.pack);
            }
            self.entries.push(Entry::new(id, pi, &loc, false));
        }
        self.entries.sort_unstable_by_key(|e| e.id);
        self.build_buckets();
        self.segments.push(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64, tail: u8) -> Id {
        let mut b = [tail; 32];
        // Spread like hashes, with some ids sharing their first 8 bytes (only the tail differs).
        b[..8].copy_from_slice(&(n / 2).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
        b[8] = (n % 2) as u8;
        Id(b)
    }

    #[test]
    fn every_indexed_id_is_found_and_no_other() {
        let loc = Location { pack: Id([0; 32]), offset: 0, len: 1, raw_len: 1, encoding: Encoding::Zstd };
        for n in [0u64, 1, 2, 7, 1000, 70_000] {
            let mut idx = Index { entries: (0..n).map(|i| Entry::new(id(i, 1), 0, &loc, false)).collect(), ..Default::default() };
            idx.entries.sort_unstable_by_key(|e| e.id);
            idx.build_buckets();
            for i in 0..n {
                assert!(idx.contains(&id(i, 1)), "n {n}: id {i} not found");
                assert!(!idx.contains(&id(i, 2)), "n {n}: id {i} with another tail found");
            }
            assert!(!idx.contains(&id(n + 1, 1)));
            assert!(!idx.contains(&Id([0xff; 32])) && !idx.contains(&Id([0; 32])));
        }
    }

    #[test]
    fn a_damaged_segment_or_a_stray_file_hides_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(&dir.path().join("s"), crate::store::InitOptions::default()).unwrap();
        let blob = |n: u64, encoding| BlobEntry { id: id(n, 1), offset: n as u32, len: 10, raw_len: 20, encoding };
        let mut idx = Index::default();
        // Seven segments (more than one batch of parallel reads), each in its own pack; chunk
        // 0 is stored whole in the first and again as a delta in the last.
        for s in 0..7u64 {
            let mut blobs: Vec<_> = (s * 10..s * 10 + 10).map(|n| blob(n, Encoding::Zstd)).collect();
            if s == 6 {
                blobs.push(blob(0, Encoding::ZstdDelta));
            }
            idx.add_pack(id(1000 + s, 9), &blobs);
            idx.flush(&store).unwrap();
        }
        let whole = Index::load(&store).unwrap();
        for n in 0..70 {
            let loc = whole.get(&id(n, 1)).unwrap();
            assert_eq!((loc.pack, loc.offset), (id(1000 + n / 10, 9), n as u32), "chunk {n}");
        }
        assert_eq!(whole.get(&id(0, 1)).unwrap().encoding, Encoding::Zstd, "the whole copy wins");
        // One segment damaged, one unknown file next to them.
        let index_dir = store.root().join("index");
        let bad = idx.segments[3].to_hex();
        let mut bytes = fs::read(index_dir.join(&bad)).unwrap();
        bytes[40] ^= 1;
        fs::write(index_dir.join(&bad), bytes).unwrap();
        fs::write(index_dir.join("notes.txt"), b"stray").unwrap();
        let (lenient, damaged) = Index::load_lenient(&store).unwrap();
        let said: Vec<_> = damaged.iter().map(|e| e.to_string()).collect();
        assert_eq!(said.len(), 2, "{said:?}");
        assert!(said.iter().any(|m| m.contains(&bad) && m.contains("does not match its name")), "{said:?}");
        assert!(said.iter().any(|m| m.contains("notes.txt") && m.contains("unknown file")), "{said:?}");
        for n in 0..70 {
            assert_eq!(lenient.get(&id(n, 1)).is_some(), n / 10 != 3, "chunk {n}");
        }
        assert!(Index::load(&store).is_err());
    }

    #[test]
    fn a_head_finds_the_smallest_id_that_starts_with_it() {
        let loc = Location { pack: Id([0; 32]), offset: 0, len: 1, raw_len: 1, encoding: Encoding::Zstd };
        assert_eq!(Index::default().find_by_head(id(0, 1).head()), None);
        for n in [1u64, 2, 7, 1000, 70_000] {
            let mut idx = Index { entries: (0..n).map(|i| Entry::new(id(i, 1), 0, &loc, false)).collect(), ..Default::default() };
            idx.entries.sort_unstable_by_key(|e| e.id);
            idx.build_buckets();
            for i in 0..n {
                // Ids 2k and 2k + 1 share their first 8 bytes; 2k is the smaller.
                assert_eq!(idx.find_by_head(id(i, 1).head()), Some(id(i & !1, 1)), "n {n}: id {i}");
            }
            assert_eq!(idx.find_by_head(id(n + 2, 1).head()), None, "n {n}");
        }
    }
}
