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
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::progress::Progress;
use crate::store::index::Index;
use crate::store::pack::{FinishedPack, PackWriter};
use crate::store::Store;
use memmap2::{Mmap, MmapOptions};
use rayon::prelude::*;
use rpger_formats::pack::Encoding;
use rpger_formats::Id;
use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

/// Bytes of a file mapped (or of a stream buffered) at a time. Must exceed the largest chunk.
const WINDOW: usize = 8 << 20;
/// Chunk bytes gathered before they are hashed and compressed in parallel.
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
pub(crate) fn run<T>(store: &Store, index: Index, f: impl FnOnce(&mut Feeder) -> Result<T>) -> Result<(T, PipelineStats)> {
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel::<ToProcessor>(1);
        let (reply_tx, reply_rx) = sync_channel::<Result<Vec<Vec<Id>>>>(1);
        let (wtx, wrx) = sync_channel::<ToWriter>(1);
        // Unbounded but tiny: one message per durable pack.
        let (done_tx, done_rx) = std::sync::mpsc::channel::<FinishedPack>();
        let writer = scope.spawn(move || write_packs(store, wrx, done_tx));
        let processor = scope.spawn(move || process(store, index, rx, reply_tx, wtx, done_rx));
        let mut feeder =
            Feeder { params: store.chunk_params(), tx, reply: reply_rx, batch: vec![], batch_bytes: 0, next_slot: 0, bytes_read: 0 };
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
    reply: Receiver<Result<Vec<Vec<Id>>>>,
    batch: Vec<Pending>,
    batch_bytes: usize,
    next_slot: usize,
    /// Bytes read from sources so far.
    pub bytes_read: u64,
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
        let mut slots = self.reply.recv().map_err(|_| stopped())??;
        slots.resize(self.next_slot, vec![]);
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

    /// Reads a whole stream into `slot`; returns (bytes, whole-stream hash).
    pub fn stream(&mut self, mut reader: impl Read, slot: usize, what: &Path, progress: &dyn Progress) -> Result<(u64, Id)> {
        let mut hasher = blake3::Hasher::new();
        let mut carry: Vec<u8> = vec![];
        let mut total = 0u64;
        loop {
            let mut buf = Vec::with_capacity(WINDOW);
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
            return self.stream(f, slot, path, progress);
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

/// Stage 2: hash, dedup, compress.
fn process(
    store: &Store,
    mut index: Index,
    rx: Receiver<ToProcessor>,
    reply: SyncSender<Result<Vec<Vec<Id>>>>,
    wtx: SyncSender<ToWriter>,
    done: Receiver<FinishedPack>,
) -> PipelineStats {
    let level = store.config().zstd_level;
    let mut stats = PipelineStats::default();
    // New chunks sent to the writer whose pack is not durable yet (at most a pack's worth).
    let mut in_flight: HashSet<Id> = HashSet::new();
    let mut slots: Vec<Vec<Id>> = vec![];
    // Moves durable packs into the index; writes a segment when enough have gathered.
    let absorb = |index: &mut Index, in_flight: &mut HashSet<Id>, stats: &mut PipelineStats, threshold: usize| -> Result<()> {
        for p in done.try_iter() {
            index.add_pack(p.id, &p.entries);
            for e in &p.entries {
                in_flight.remove(&e.id);
            }
            stats.packs += 1;
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
                    failed = absorb(&mut index, &mut in_flight, &mut stats, INDEX_FLUSH_ENTRIES).err();
                }
                let ids: Vec<Id> = batch.par_iter().map(|p| Id::of(p.bytes())).collect();
                let fresh: Vec<usize> = (0..ids.len()).filter(|&i| !index.contains(&ids[i]) && in_flight.insert(ids[i])).collect();
                let blobs: Vec<Blob> = fresh
                    .par_iter()
                    .map(|&i| {
                        let (enc, stored) = compress::compress(batch[i].bytes(), level);
                        (ids[i], enc, stored, batch[i].len as u32)
                    })
                    .collect();
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
                    absorb(&mut index, &mut in_flight, &mut stats, 1)?;
                    Ok(std::mem::take(&mut slots))
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
