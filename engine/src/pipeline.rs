//! The backup data path, in three overlapping stages joined by bounded channels:
//!
//! 1. the caller's thread ([`Feeder`]): reads or maps each file window by window, finds FastCDC
//!    cut points, computes the whole-file BLAKE3, and hands chunks over in 8 MiB batches;
//! 2. the processor thread: hashes a batch's chunks in parallel (rayon), drops those the store or
//!    this run already has, compresses the new ones in parallel;
//! 3. the writer thread: appends blobs to packs in order and makes each pack durable.
//!
//! With at most one batch queued between stages, memory stays near three batches whatever the
//! input size, and chunking, compression and writing overlap instead of taking turns.

use crate::chunking::{cut_points, ChunkParams};
use crate::compress;
use crate::delta::{self, ChunkReader, Resemblance};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::progress::Progress;
use crate::store::index::Index;
use crate::store::pack::{FinishedPack, PackReader, PackWriter};
use crate::store::Store;
use memmap2::{Mmap, MmapOptions};
use rayon::prelude::*;
use rpger_formats::delta::{Features, MAX_DEPTH};
use rpger_formats::pack::Encoding;
use rpger_formats::Id;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

/// Bytes of a file mapped (or of a stream buffered) at a time. Must exceed the largest chunk.
/// Every window a pending batch points into stays resident: 4 MiB (against 8) took a night-1
/// backup of the shared dataset from 109 to 90 MiB peak RSS at the same speed.
const WINDOW: usize = 4 << 20;
/// Chunk bytes gathered before they are hashed and compressed in parallel. 4 MiB batches made
/// incremental nights 20-40% slower (more pipeline hand-offs per byte) for 20 MiB less RSS.
const BATCH: usize = 8 << 20;
/// Files at least this large are memory-mapped; smaller ones are read.
const MMAP_MIN: u64 = 1 << 20;

/// Figures of one pipeline run.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PipelineStats {
    pub chunks: u64,
    pub new_chunks: u64,
    pub new_raw: u64,
    pub new_stored: u64,
    pub packs: u64,
    /// New chunks stored as deltas, their raw bytes and their stored bytes.
    pub delta_chunks: u64,
    pub delta_raw: u64,
    pub delta_stored: u64,
}

/// How new chunks are encoded.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PipelineOptions {
    /// Try a delta against a similar stored chunk before plain compression.
    pub delta: bool,
}

/// Memory that chunks borrow from: a mapped file window or a read buffer.
enum Buf {
    Map(Mmap, usize),
    Vec(Vec<u8>),
}

impl Buf {
    fn bytes(&self) -> &[u8] {
        match self {
            Buf::Map(m, skip) => &m[*skip..],
            Buf::Vec(v) => v,
        }
    }
}

struct Pending {
    buf: Arc<Buf>,
    start: usize,
    len: usize,
    slot: usize,
}

impl Pending {
    fn bytes(&self) -> &[u8] {
        &self.buf.bytes()[self.start..self.start + self.len]
    }
}

enum ToProcessor {
    Batch(Vec<Pending>),
    /// Make everything sent so far durable and indexed; reply with each slot's chunk ids.
    Flush,
}

type Blob = (Id, Encoding, Vec<u8>, u32);

enum ToWriter {
    Blobs(Vec<Blob>),
    /// Close the open pack; reply once every finished pack has been sent on the done channel.
    Finish(SyncSender<Result<()>>),
}

/// New chunks indexed in memory before they are written out as an index segment, so the
/// per-run state stays bounded however large the input.
const INDEX_FLUSH_ENTRIES: usize = 65_536;

/// Runs `f` with a [`Feeder`] while the processor and writer threads do the rest.
pub(crate) fn run<T>(
    store: &Store,
    index: Index,
    opts: PipelineOptions,
    f: impl FnOnce(&mut Feeder) -> Result<T>,
) -> Result<(T, PipelineStats)> {
    let resemblance = if opts.delta { Resemblance::load(store, &index)? } else { Resemblance::default() };
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<ToProcessor>(1);
        let (reply_tx, reply_rx) = sync_channel::<Result<Flushed>>(1);
        let (wtx, wrx) = sync_channel::<ToWriter>(1);
        // Unbounded but tiny: one message per durable pack.
        let (done_tx, done_rx) = std::sync::mpsc::channel::<FinishedPack>();
        let writer = scope.spawn(move || write_packs(store, wrx, done_tx));
        let processor = scope.spawn(move || process(store, index, opts, resemblance, rx, reply_tx, wtx, done_rx));
        let mut feeder = Feeder {
            params: store.chunk_params(),
            tx,
            reply: reply_rx,
            batch: vec![],
            batch_bytes: 0,
            next_slot: 0,
            bytes_read: 0,
            delta_saved: vec![],
        };
        let out = f(&mut feeder);
        drop(feeder);
        let stats = processor.join().map_err(|_| Error::new(ErrorKind::Io, "backup processor thread panicked"))?;
        writer.join().map_err(|_| Error::new(ErrorKind::Io, "backup writer thread panicked"))?;
        out.map(|t| (t, stats))
    })
}

/// The stage that runs on the caller's thread: reading and chunking.
pub(crate) struct Feeder {
    params: ChunkParams,
    tx: SyncSender<ToProcessor>,
    reply: Receiver<Result<Flushed>>,
    batch: Vec<Pending>,
    batch_bytes: usize,
    next_slot: usize,
    /// Bytes read from sources so far.
    pub bytes_read: u64,
    /// After [`Feeder::flush`]: per slot, bytes delta encoding saved (estimated against plain
    /// compression of the same chunk).
    pub delta_saved: Vec<u64>,
}

/// What a flush returns: per slot, its chunk ids and the bytes delta encoding saved.
struct Flushed {
    slots: Vec<Vec<Id>>,
    delta_saved: Vec<u64>,
}

fn stopped() -> Error {
    Error::new(ErrorKind::Io, "backup pipeline stopped unexpectedly")
}

impl Feeder {
    /// A new slot: the chunk ids of one file, returned by [`Feeder::flush`].
    pub fn new_slot(&mut self) -> usize {
        self.next_slot += 1;
        self.next_slot - 1
    }

    /// Makes everything fed so far durable (packs, index segment) and returns the chunk ids of
    /// every slot since the last flush, by slot number.
    pub fn flush(&mut self) -> Result<Vec<Vec<Id>>> {
        self.send_batch()?;
        self.tx.send(ToProcessor::Flush).map_err(|_| stopped())?;
        let Flushed { mut slots, mut delta_saved } = self.reply.recv().map_err(|_| stopped())??;
        slots.resize(self.next_slot, vec![]);
        delta_saved.resize(self.next_slot, 0);
        self.delta_saved = delta_saved;
        self.next_slot = 0;
        Ok(slots)
    }

    fn send_batch(&mut self) -> Result<()> {
        if !self.batch.is_empty() {
            let b = std::mem::take(&mut self.batch);
            self.batch_bytes = 0;
            self.tx.send(ToProcessor::Batch(b)).map_err(|_| stopped())?;
        }
        Ok(())
    }

    /// Chunks the consumed part of `buf` into `slot`; returns how many bytes were consumed
    /// (all of them when `eof`).
    fn push(&mut self, buf: Arc<Buf>, slot: usize, eof: bool, hasher: &mut blake3::Hasher, progress: &dyn Progress) -> Result<usize> {
        let data = buf.bytes();
        let cuts = cut_points(data, self.params, eof);
        let consumed = cuts.last().map(|&(s, l)| s + l).unwrap_or(0);
        hasher.update(&data[..consumed]);
        for (start, len) in cuts {
            self.batch.push(Pending { buf: buf.clone(), start, len, slot });
            self.batch_bytes += len;
        }
        self.bytes_read += consumed as u64;
        progress.advance(consumed as u64);
        if self.batch_bytes >= BATCH {
            self.send_batch()?;
        }
        Ok(consumed)
    }

    /// Reads a whole stream into `slot`; returns (bytes, whole-stream hash). `size_hint` (the
    /// expected length, when known) sizes the read buffer: chunks hold their buffer until their
    /// batch is compressed, and a window-sized buffer per small file took a 39,000-file source
    /// tree's backup to 170-370 MiB peak RSS.
    pub fn stream(
        &mut self,
        mut reader: impl Read,
        slot: usize,
        what: &Path,
        size_hint: Option<u64>,
        progress: &dyn Progress,
    ) -> Result<(u64, Id)> {
        let mut hasher = blake3::Hasher::new();
        let mut carry: Vec<u8> = vec![];
        let mut total = 0u64;
        loop {
            // One byte over the hint lets the read see the end without growing the buffer.
            let expected = size_hint.map_or(WINDOW as u64, |h| h.saturating_sub(total) + 1);
            let mut buf = Vec::with_capacity((expected.min(WINDOW as u64) as usize).max(carry.len()));
            buf.extend_from_slice(&carry);
            let mut eof = false;
            while buf.len() < WINDOW {
                let before = buf.len();
                match reader.by_ref().take((WINDOW - before) as u64).read_to_end(&mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(Error::io("read", what, e)),
                }
            }
            let buf = Arc::new(Buf::Vec(buf));
            let consumed = self.push(buf.clone(), slot, eof, &mut hasher, progress)?;
            total += consumed as u64;
            if eof {
                return Ok((total, Id::from(hasher.finalize())));
            }
            carry = buf.bytes()[consumed..].to_vec();
        }
    }

    /// Reads a regular file into `slot`, memory-mapping it window by window when large.
    pub fn file(&mut self, path: &Path, slot: usize, progress: &dyn Progress) -> Result<(u64, Id)> {
        let f = File::open(path).at("open", path)?;
        let len = f.metadata().at("stat", path)?.len();
        if len < MMAP_MIN {
            return self.stream(f, slot, path, Some(len), progress);
        }
        let page = rustix::param::page_size() as u64;
        let mut hasher = blake3::Hasher::new();
        let mut pos = 0u64;
        while pos < len {
            let map_start = pos - pos % page;
            let map_len = (WINDOW as u64).min(len - map_start);
            let map = map_readonly(&f, map_start, map_len as usize).at("map", path)?;
            let eof = map_start + map_len == len;
            let buf = Arc::new(Buf::Map(map, (pos - map_start) as usize));
            let consumed = self.push(buf, slot, eof, &mut hasher, progress)?;
            pos += consumed as u64;
            if eof {
                break;
            }
        }
        Ok((pos, Id::from(hasher.finalize())))
    }
}

/// Bytes written piecewise into one slot (demultiplexed streams); see [`Feeder::open_stream`].
pub(crate) struct SlotStream {
    slot: usize,
    buf: Vec<u8>,
    hasher: blake3::Hasher,
    total: u64,
}

impl Feeder {
    /// Starts a file whose bytes arrive in pieces; several may be open at once.
    pub fn open_stream(&mut self) -> SlotStream {
        SlotStream { slot: self.new_slot(), buf: Vec::new(), hasher: blake3::Hasher::new(), total: 0 }
    }

    /// Appends bytes to an open stream; chunks them once a window's worth has gathered.
    pub fn stream_write(&mut self, s: &mut SlotStream, data: &[u8], progress: &dyn Progress) -> Result<()> {
        s.buf.extend_from_slice(data);
        if s.buf.len() >= WINDOW {
            let buf = Arc::new(Buf::Vec(std::mem::take(&mut s.buf)));
            let consumed = self.push(buf.clone(), s.slot, false, &mut s.hasher, progress)?;
            s.total += consumed as u64;
            s.buf = buf.bytes()[consumed..].to_vec();
        }
        Ok(())
    }

    /// Ends a stream; returns (slot, size, whole-file hash).
    pub fn stream_close(&mut self, mut s: SlotStream, progress: &dyn Progress) -> Result<(usize, u64, Id)> {
        let buf = Arc::new(Buf::Vec(std::mem::take(&mut s.buf)));
        let consumed = self.push(buf, s.slot, true, &mut s.hasher, progress)?;
        Ok((s.slot, s.total + consumed as u64, Id::from(s.hasher.finalize())))
    }
}

#[allow(unsafe_code)]
fn map_readonly(f: &File, offset: u64, len: usize) -> std::io::Result<Mmap> {
    // SAFETY: the mapping is read-only and private to this process; if another process truncates
    // the file while we read it the kernel raises SIGBUS. Sources are dumps at rest (see
    // docs/ARCHITECTURE.md), which is why large files are mapped at all.
    unsafe { MmapOptions::new().offset(offset).len(len).map(f) }
}

/// zstd level of delta frames. Against a similar base the matches are long whatever the level;
/// level 1 (one hash table to fill from the base) was measured on the shared dataset at 3%
/// larger deltas for 15-20% less CPU per incremental night than level 3.
const DELTA_LEVEL: i32 = 1;

/// Most bases a new chunk is compressed against (the chunks sharing the most features).
const DELTA_BASES: usize = 2;

/// Whether a chunk whose delta is `delta` bytes and plain encoding `plain` bytes is stored
/// whole: past 0.7 of the plain size. A chunk that drifted that far from its base is better
/// stored whole: its delta saves little, and every read of it would rebuild a chain for that.
/// With chains each night's delta is taken against the night before, so drift no longer piles
/// up as it did when every base had to be stored whole (the cut was then at 0.5). On the shared
/// dataset's 7 nights, cuts at 0.35, 0.5, 0.7, 0.85 and 1.0 stored 669, 648, 639, 638 and 637
/// MiB; the restore of night 7 took 3-5 % longer than with one-level deltas at 0.7 and 11 % at
/// 1.0 (more chunks rebuilt through chains for small savings).
pub(crate) fn refresh_base(delta: usize, plain: usize) -> bool {
    delta * 10 > plain * 7
}

/// A new chunk's blob, and its features when it can be a future base.
struct Encoded {
    blob: Blob,
    features: Option<Features>,
    /// Deltas between the chunk and a chunk stored whole (0: stored whole).
    depth: u8,
    /// Estimated bytes saved by a delta encoding (0 for whole chunks).
    saved: u64,
}

/// Encodes one new chunk: as a delta when a similar stored chunk makes it clearly smaller than
/// plain compression would, else plain (zstd, or raw when that does not shrink it).
fn encode(
    id: Id,
    data: &[u8],
    level: i32,
    delta_on: bool,
    resemblance: &Resemblance,
    chunks: &ChunkReader,
    buf: &mut (Vec<u8>, Vec<u8>),
) -> Encoded {
    let features = delta_on.then(|| delta::features(data));
    let mut candidates = match &features {
        Some(f) if !resemblance.is_empty() => resemblance.best_n(f, DELTA_BASES),
        _ => vec![],
    };
    // A delta base is used alone: two of them would make every read of the chunk rebuild two
    // chains (a restore 2.2 times slower with chains of 6; alone, as fast as whole bases).
    match candidates.first() {
        Some(&(_, d)) if d > 0 => candidates.truncate(1),
        _ => candidates.retain(|&(_, d)| d == 0),
    }
    // The bases' bytes, least similar first: the best base ends the prefix, nearest the data.
    let (mut prefix, mut bases, mut estimate, mut depth) = (Vec::new(), Vec::new(), 0u64, 0u8);
    for &(base, d) in candidates.iter().rev() {
        let Some(loc) = chunks.index.get(&base) else { continue };
        // A damaged or vanished base only costs the delta: it is skipped.
        if chunks.read_into(&base, &loc, &mut buf.0, &mut buf.1, true).is_err() {
            continue;
        }
        prefix.extend_from_slice(&buf.1);
        bases.push(base);
        depth = depth.max(d + 1);
        // What plain compression would give, from the best base's ratio. A delta base's stored
        // size says nothing of it: half the chunk, about what whole 16 KiB chunks of the dumps
        // take (night 1 of the shared dataset: 0.54). Compressing every chained delta's chunk
        // plain as well, to be sure, made incremental nights 15-20 % slower for no smaller store.
        estimate = match loc.encoding {
            Encoding::ZstdDelta => data.len() as u64 / 2,
            _ => (loc.len as u64 * data.len() as u64 / (loc.raw_len as u64).max(1)).max(1),
        };
    }
    // A chunk at the end of a chain is never a base: its features are not kept.
    let features_if_base = |f: Option<Features>| f.filter(|_| depth < MAX_DEPTH);
    if !bases.is_empty() {
        if let Ok(frame) = delta::compress(data, &prefix, DELTA_LEVEL.min(level)) {
            let blob = rpger_formats::delta::encode_blob(&bases, &frame);
            let plain = if (blob.len() as u64) * 3 < estimate { None } else { Some(compress::compress(data, level)) };
            return match plain {
                Some((enc, stored)) if refresh_base(blob.len(), stored.len()) => {
                    Encoded { blob: (id, enc, stored, data.len() as u32), features, depth: 0, saved: 0 }
                }
                Some((_, stored)) => {
                    let saved = (stored.len() - blob.len()) as u64;
                    Encoded { blob: (id, Encoding::ZstdDelta, blob, data.len() as u32), features: features_if_base(features), depth, saved }
                }
                None => {
                    let saved = estimate.saturating_sub(blob.len() as u64);
                    Encoded { blob: (id, Encoding::ZstdDelta, blob, data.len() as u32), features: features_if_base(features), depth, saved }
                }
            };
        }
    }
    let (enc, stored) = compress::compress(data, level);
    Encoded { blob: (id, enc, stored, data.len() as u32), features, depth: 0, saved: 0 }
}

/// Stage 2: hash, dedup, compress.
#[allow(clippy::too_many_arguments)]
fn process(
    store: &Store,
    mut index: Index,
    opts: PipelineOptions,
    mut resemblance: Resemblance,
    rx: Receiver<ToProcessor>,
    reply: SyncSender<Result<Flushed>>,
    wtx: SyncSender<ToWriter>,
    done: Receiver<FinishedPack>,
) -> PipelineStats {
    let level = store.config().zstd_level;
    let mut stats = PipelineStats::default();
    let packs = PackReader::new(store);
    // New chunks sent to the writer whose pack is not durable yet (at most a pack's worth).
    let mut in_flight: HashSet<Id> = HashSet::new();
    let mut slots: Vec<Vec<Id>> = vec![];
    let mut delta_saved: Vec<u64> = vec![];
    // Features of the chunks this run stores that can be bases, written at the flush.
    let mut new_features: Vec<(Id, Features)> = vec![];
    // Features (and depth) of this run's future bases not durable yet: bases once they are.
    let mut waiting: HashMap<Id, (Features, u8)> = HashMap::new();
    // Moves durable packs into the index (and their future bases into the resemblance table);
    // writes a segment when enough have gathered.
    let absorb = |index: &mut Index,
                  in_flight: &mut HashSet<Id>,
                  resemblance: &mut Resemblance,
                  waiting: &mut HashMap<Id, (Features, u8)>,
                  stats: &mut PipelineStats,
                  threshold: usize|
     -> Result<()> {
        let mut bases = vec![];
        for p in done.try_iter() {
            index.add_pack(p.id, &p.entries);
            for e in &p.entries {
                in_flight.remove(&e.id);
                if let Some((f, d)) = waiting.remove(&e.id) {
                    bases.push((e.id, f, d));
                }
            }
            stats.packs += 1;
        }
        if !bases.is_empty() {
            resemblance.extend(bases);
        }
        // Packs first, then the index: an index entry only ever names a durable pack.
        if index.pending_len() >= threshold {
            index.flush(store)?;
        }
        Ok(())
    };
    let mut failed: Option<Error> = None;
    for msg in rx {
        match msg {
            ToProcessor::Batch(batch) => {
                if failed.is_none() {
                    failed = absorb(&mut index, &mut in_flight, &mut resemblance, &mut waiting, &mut stats, INDEX_FLUSH_ENTRIES).err();
                }
                let ids: Vec<Id> = batch.par_iter().map(|p| Id::of(p.bytes())).collect();
                let fresh: Vec<usize> = (0..ids.len()).filter(|&i| !index.contains(&ids[i]) && in_flight.insert(ids[i])).collect();
                let chunks = ChunkReader { index: &index, packs: &packs };
                let encoded: Vec<Encoded> = fresh
                    .par_iter()
                    .map_init(
                        || (Vec::new(), Vec::new()),
                        |buf, &i| encode(ids[i], batch[i].bytes(), level, opts.delta, &resemblance, &chunks, buf),
                    )
                    .collect();
                let mut blobs = Vec::with_capacity(encoded.len());
                for (e, &i) in encoded.into_iter().zip(&fresh) {
                    if e.blob.1 == Encoding::ZstdDelta {
                        stats.delta_chunks += 1;
                        stats.delta_raw += e.blob.3 as u64;
                        stats.delta_stored += e.blob.2.len() as u64;
                        let slot = batch[i].slot;
                        if delta_saved.len() <= slot {
                            delta_saved.resize(slot + 1, 0);
                        }
                        delta_saved[slot] += e.saved;
                    }
                    if let Some(f) = e.features {
                        new_features.push((e.blob.0, f));
                        waiting.insert(e.blob.0, (f, e.depth));
                    }
                    blobs.push(e.blob);
                }
                stats.chunks += ids.len() as u64;
                stats.new_chunks += blobs.len() as u64;
                stats.new_raw += blobs.iter().map(|b| b.3 as u64).sum::<u64>();
                stats.new_stored += blobs.iter().map(|b| b.2.len() as u64).sum::<u64>();
                for (p, id) in batch.iter().zip(ids) {
                    if slots.len() <= p.slot {
                        slots.resize(p.slot + 1, vec![]);
                    }
                    slots[p.slot].push(id);
                }
                drop(batch); // unmaps the windows before waiting on the writer
                if wtx.send(ToWriter::Blobs(blobs)).is_err() {
                    break;
                }
            }
            ToProcessor::Flush => {
                let res = (|| {
                    if let Some(e) = failed.take() {
                        return Err(e);
                    }
                    let (ftx, frx) = sync_channel(1);
                    wtx.send(ToWriter::Finish(ftx)).map_err(|_| stopped())?;
                    frx.recv().map_err(|_| stopped())??;
                    absorb(&mut index, &mut in_flight, &mut resemblance, &mut waiting, &mut stats, 1)?;
                    // After the index: features only ever name indexed chunks.
                    if opts.delta {
                        let name = format!("{:020}-{}", crate::store::now_ns(), std::process::id());
                        delta::write_features(store, &name, &std::mem::take(&mut new_features))?;
                    }
                    Ok(Flushed { slots: std::mem::take(&mut slots), delta_saved: std::mem::take(&mut delta_saved) })
                })();
                if reply.send(res).is_err() {
                    break;
                }
            }
        }
    }
    stats
}

/// Stage 3: append blobs to packs; report each pack once it is durable. After an error it keeps
/// draining and reports the error at the next flush, so the feeder never blocks on a dead stage.
fn write_packs(store: &Store, rx: Receiver<ToWriter>, done: std::sync::mpsc::Sender<FinishedPack>) {
    let mut writer = PackWriter::new(store);
    let mut failed: Option<Error> = None;
    for msg in rx {
        match msg {
            ToWriter::Blobs(blobs) => {
                if failed.is_some() {
                    continue;
                }
                for (id, enc, stored, raw_len) in blobs {
                    match writer.add(id, enc, &stored, raw_len) {
                        Ok(Some(p)) => {
                            let _ = done.send(p);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
            }
            ToWriter::Finish(reply) => {
                let res = match failed.take() {
                    Some(e) => Err(e),
                    None => writer.finish().map(|last| {
                        if let Some(p) = last {
                            let _ = done.send(p);
                        }
                    }),
                };
                let _ = reply.send(res);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use crate::store::InitOptions;

    #[test]
    fn a_wrong_size_hint_changes_nothing_stored() {
        // A file that grew or shrank after its size was read: the hint only sizes buffers.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(&dir.path().join("s"), InitOptions::default()).unwrap();
        let data: Vec<u8> = (0..3 * WINDOW as u32 + 12345).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        let run = |hint: Option<u64>| {
            let (index, _) = Index::load_lenient(&store).unwrap();
            let (r, _) = run(&store, index, PipelineOptions { delta: false }, |f| {
                let slot = f.new_slot();
                let (n, hash) = f.stream(&data[..], slot, Path::new("t"), hint, &NoProgress)?;
                Ok((n, hash, f.flush()?.swap_remove(slot)))
            })
            .unwrap();
            r
        };
        let exact = run(None);
        assert_eq!(exact.0, data.len() as u64);
        assert_eq!(exact.1, Id::of(&data));
        for hint in [Some(0), Some(100), Some(data.len() as u64), Some(10 * data.len() as u64)] {
            assert_eq!(run(hint), exact, "hint {hint:?}");
        }
    }

    #[test]
    fn a_delta_is_kept_only_while_it_is_at_most_seven_tenths_of_the_plain_size() {
        assert!(!super::refresh_base(100, 1000));
        assert!(!super::refresh_base(700, 1000));
        assert!(super::refresh_base(701, 1000));
        assert!(super::refresh_base(1000, 1000));
    }
}
