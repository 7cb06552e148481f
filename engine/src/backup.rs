//! Backup: walk each source, chunk (FastCDC), hash (BLAKE3), dedup against the index, compress
//! (zstd) new chunks in parallel, append them to packs, then commit index -> manifests ->
//! snapshot, in that order, so a crash at any point leaves only unreferenced data behind.

use crate::chunking::{cut_points, ChunkParams};
use crate::compress;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::progress::Progress;
use crate::store::index::Index;
use crate::store::lock::{self, LockMode};
use crate::store::pack::PackWriter;
use crate::store::{now_ns, Store};
use memmap2::{Mmap, MmapOptions};
use rayon::prelude::*;
use rpger_formats::snapshot::{self, Entry, EntryKind, Manifest, Snapshot, SourceRef};
use rpger_formats::Id;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, Metadata};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Bytes of a file mapped (or of a stream buffered) at a time. Must exceed the largest chunk.
const WINDOW: usize = 16 << 20;
/// Chunk bytes gathered before hashing/compressing them in parallel.
const BATCH: usize = 16 << 20;
/// Files at least this large are memory-mapped; smaller ones are read.
const MMAP_MIN: u64 = 1 << 20;

/// Where a source's data comes from.
pub enum SourceInput {
    /// A directory (its tree) or a single file (stored under its own name).
    Path(PathBuf),
    /// A stream (stdin), stored as one file named `file_name`. An empty stream is refused.
    Stream {
        /// Name of the stored file.
        file_name: String,
        /// The bytes.
        reader: Box<dyn Read + Send>,
    },
}

/// One named source of a backup.
pub struct SourceSpec {
    /// Source name: restored into `TARGET/<name>`.
    pub name: String,
    /// Its data.
    pub input: SourceInput,
}

/// Options of one backup run.
pub struct BackupOptions {
    /// The sources, at least one.
    pub sources: Vec<SourceSpec>,
    /// Name snapshots by local time instead of UTC.
    pub local_time: bool,
    /// Annotations stored in the snapshot.
    pub labels: Vec<(String, String)>,
    /// How long to wait for a conflicting lock.
    pub lock_wait: Duration,
}

/// What a backup did.
#[derive(Debug, Clone)]
pub struct BackupReport {
    /// The committed snapshot.
    pub snapshot: Snapshot,
    /// Bytes read from the sources.
    pub bytes_read: u64,
    /// Chunks seen.
    pub chunks: u64,
    /// Chunks that were new and stored.
    pub new_chunks: u64,
    /// Packs written.
    pub packs: u64,
    /// Paths not stored (sockets, devices, fifos inside a tree), with the reason.
    pub skipped: Vec<String>,
}

/// Runs a backup and commits one snapshot holding every source.
///
/// # Errors
/// Any source error (missing path, unreadable file, empty stream) fails the whole run and
/// commits nothing; the message names the source and path.
pub fn backup(store: &Store, opts: BackupOptions, progress: &dyn Progress) -> Result<BackupReport> {
    if opts.sources.is_empty() {
        return Err(Error::new(ErrorKind::InvalidInput, "no source given"));
    }
    let mut names = HashSet::new();
    for s in &opts.sources {
        snapshot::validate_name(&s.name).map_err(|e| Error::new(ErrorKind::InvalidInput, format!("source {e}")))?;
        if !names.insert(s.name.clone()) {
            return Err(Error::new(ErrorKind::InvalidInput, format!("source {} given twice", s.name)));
        }
    }
    let start_ns = now_ns();
    let _lock = lock::acquire(&store.locks_dir(), LockMode::Shared, "backup", opts.lock_wait)?;
    let index = Index::load(store)?;
    let mut pipe = Pipeline::new(store, index);
    let mut skipped = vec![];
    let mut sources = vec![];
    let mut specs = opts.sources;
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    for spec in specs {
        let name = spec.name.clone();
        let (manifest, logical) = match spec.input {
            SourceInput::Path(p) => backup_path(&mut pipe, &p, &mut skipped, progress),
            SourceInput::Stream { file_name, reader } => backup_stream(&mut pipe, &file_name, reader, "stdin", progress),
        }
        .map_err(|e| e.context(format!("source {name}")))?;
        let entries = manifest.entries.len() as u64;
        manifest.validate().map_err(|e| Error::with_cause(ErrorKind::InvalidInput, format!("source {name}"), e))?;
        // Packs and index go first: the manifest must only reference durable chunks.
        pipe.flush_all()?;
        let id = store.write_manifest(&manifest)?;
        sources.push(SourceRef { name, manifest: id, logical_bytes: logical, entries });
    }
    let time = chrono::DateTime::from_timestamp_nanos(start_ns);
    let name = if opts.local_time {
        time.with_timezone(&chrono::Local).format("%Y-%m-%d_%H-%M-%S").to_string()
    } else {
        time.format("%Y-%m-%d_%H-%M-%S").to_string()
    };
    let mut labels = opts.labels;
    labels.sort();
    let snap = Snapshot {
        name,
        time_unix_ns: start_ns,
        hostname: rustix::system::uname().nodename().to_string_lossy().into_owned(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        sources,
        new_stored_bytes: pipe.new_stored,
        new_raw_bytes: pipe.new_raw,
        labels,
    };
    let snapshot = store.commit_snapshot(snap)?;
    Ok(BackupReport { snapshot, bytes_read: pipe.bytes_read, chunks: pipe.chunks, new_chunks: pipe.new_chunks, packs: pipe.packs, skipped })
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

/// The chunk -> hash -> dedup -> compress -> pack pipeline, batch by batch.
struct Pipeline<'s> {
    store: &'s Store,
    params: ChunkParams,
    level: i32,
    index: Index,
    writer: PackWriter,
    /// Chunks in the pack being written (not yet in the index).
    open_pack: HashSet<Id>,
    batch: Vec<Pending>,
    batch_bytes: usize,
    /// Chunk ids of each file, by slot.
    slots: Vec<Vec<Id>>,
    bytes_read: u64,
    chunks: u64,
    new_chunks: u64,
    new_raw: u64,
    new_stored: u64,
    packs: u64,
}

impl<'s> Pipeline<'s> {
    fn new(store: &'s Store, index: Index) -> Self {
        Pipeline {
            store,
            params: store.chunk_params(),
            level: store.config().zstd_level,
            index,
            writer: PackWriter::new(store),
            open_pack: HashSet::new(),
            batch: vec![],
            batch_bytes: 0,
            slots: vec![],
            bytes_read: 0,
            chunks: 0,
            new_chunks: 0,
            new_raw: 0,
            new_stored: 0,
            packs: 0,
        }
    }

    fn new_slot(&mut self) -> usize {
        self.slots.push(vec![]);
        self.slots.len() - 1
    }

    /// Chunks the consumed part of `buf` into `slot`; returns how many bytes were consumed
    /// (all of them when `eof`).
    fn push(&mut self, buf: Arc<Buf>, slot: usize, eof: bool, hasher: &mut blake3::Hasher, progress: &dyn Progress) -> Result<usize> {
        let data = buf.bytes();
        let cuts = cut_points(data, self.params, eof);
        let consumed = cuts.last().map(|&(s, l)| s + l).unwrap_or(0);
        if consumed >= 1 << 20 {
            hasher.update_rayon(&data[..consumed]);
        } else {
            hasher.update(&data[..consumed]);
        }
        for (start, len) in cuts {
            self.batch.push(Pending { buf: buf.clone(), start, len, slot });
            self.batch_bytes += len;
        }
        self.bytes_read += consumed as u64;
        progress.advance(consumed as u64);
        if self.batch_bytes >= BATCH {
            self.flush_batch()?;
        }
        Ok(consumed)
    }

    fn flush_batch(&mut self) -> Result<()> {
        let batch = std::mem::take(&mut self.batch);
        self.batch_bytes = 0;
        if batch.is_empty() {
            return Ok(());
        }
        let ids: Vec<Id> = batch.par_iter().map(|p| Id::of(p.bytes())).collect();
        let mut fresh = vec![];
        let mut in_batch = HashSet::new();
        for (i, id) in ids.iter().enumerate() {
            if !self.index.contains(id) && !self.open_pack.contains(id) && in_batch.insert(*id) {
                fresh.push(i);
            }
        }
        let level = self.level;
        let blobs: Vec<_> = fresh.par_iter().map(|&i| compress::compress(batch[i].bytes(), level)).collect();
        for (&i, (enc, stored)) in fresh.iter().zip(blobs) {
            self.new_chunks += 1;
            self.new_raw += batch[i].len as u64;
            self.new_stored += stored.len() as u64;
            self.open_pack.insert(ids[i]);
            if let Some(done) = self.writer.add(ids[i], enc, &stored, batch[i].len as u32)? {
                self.index.add_pack(done.id, &done.entries);
                self.open_pack.clear();
                self.packs += 1;
            }
        }
        self.chunks += ids.len() as u64;
        for (p, id) in batch.iter().zip(ids) {
            self.slots[p.slot].push(id);
        }
        Ok(())
    }

    /// Makes everything pushed so far durable and indexed.
    fn flush_all(&mut self) -> Result<()> {
        self.flush_batch()?;
        if let Some(done) = self.writer.finish()? {
            self.index.add_pack(done.id, &done.entries);
            self.open_pack.clear();
            self.packs += 1;
        }
        self.index.flush(self.store)
    }

    /// Reads a whole stream into `slot`; returns (bytes, whole-stream hash).
    fn stream(&mut self, mut reader: impl Read, slot: usize, what: &Path, progress: &dyn Progress) -> Result<(u64, Id)> {
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
    fn file(&mut self, path: &Path, slot: usize, progress: &dyn Progress) -> Result<(u64, Id)> {
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
            // SAFETY-free: memmap2's map is unsafe only because another process may change the
            // file; sources are dumps at rest, and every chunk is hashed from the bytes we read.
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

#[allow(unsafe_code)]
fn map_readonly(f: &File, offset: u64, len: usize) -> std::io::Result<Mmap> {
    // SAFETY: the mapping is read-only and private to this process; if another process truncates
    // the file while we read it the kernel raises SIGBUS. Sources are dumps at rest (see
    // docs/ARCHITECTURE.md), which is why large files are mapped at all.
    unsafe { MmapOptions::new().offset(offset).len(len).map(f) }
}

fn meta_entry(path: Vec<u8>, md: &Metadata, kind: EntryKind) -> Entry {
    Entry { path, mode: md.mode() & 0o7777, uid: md.uid(), gid: md.gid(), mtime_sec: md.mtime(), mtime_nsec: md.mtime_nsec() as u32, kind }
}

fn join_rel(parent: &[u8], name: &[u8]) -> Vec<u8> {
    if parent.is_empty() {
        name.to_vec()
    } else {
        let mut v = parent.to_vec();
        v.push(b'/');
        v.extend_from_slice(name);
        v
    }
}

/// Backs up a directory tree or a single file. Returns the manifest and the logical size.
fn backup_path(pipe: &mut Pipeline, root: &Path, skipped: &mut Vec<String>, progress: &dyn Progress) -> Result<(Manifest, u64)> {
    // The root itself is followed if it is a symlink: users point at linked data dirs.
    let root_md = fs::metadata(root).at("source path", root)?;
    let root_name = root.file_name().map(|n| n.as_bytes().to_vec()).unwrap_or_else(|| b"data".to_vec());
    if root_md.file_type().is_fifo() || root_md.file_type().is_char_device() {
        // A pipe given as the source itself (e.g. `<(mongodump --archive)`): stream it.
        let f = File::open(root).at("open", root)?;
        let name = String::from_utf8_lossy(&root_name).into_owned();
        return backup_stream(pipe, &name, Box::new(f), &root.display().to_string(), progress);
    }
    let mut items: Vec<(Vec<u8>, PathBuf, Metadata)> = vec![];
    if root_md.is_dir() {
        items.push((vec![], root.to_path_buf(), root_md));
        let mut stack = vec![(vec![], root.to_path_buf())];
        while let Some((rel, dir)) = stack.pop() {
            for e in fs::read_dir(&dir).at("read directory", &dir)? {
                let e = e.at("read directory", &dir)?;
                let p = e.path();
                let md = fs::symlink_metadata(&p).at("stat", &p)?;
                let r = join_rel(&rel, e.file_name().as_bytes());
                if md.is_dir() {
                    stack.push((r.clone(), p.clone()));
                }
                items.push((r, p, md));
            }
        }
    } else {
        items.push((root_name, root.to_path_buf(), root_md));
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    let total: u64 = items.iter().filter(|i| i.2.is_file()).map(|i| i.2.len()).sum();
    progress.start("backup", Some(total));
    let mut entries = Vec::with_capacity(items.len());
    let mut first_link: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
    let mut files: Vec<(usize, usize)> = vec![]; // (entry index, slot)
    let mut logical = 0u64;
    for (rel, abs, md) in items {
        let ft = md.file_type();
        if ft.is_dir() {
            entries.push(meta_entry(rel, &md, EntryKind::Dir));
        } else if ft.is_symlink() {
            let t = fs::read_link(&abs).at("read symlink", &abs)?;
            entries.push(meta_entry(rel, &md, EntryKind::Symlink { target: t.as_os_str().as_bytes().to_vec() }));
        } else if ft.is_file() {
            if md.nlink() > 1 {
                if let Some(first) = first_link.get(&(md.dev(), md.ino())) {
                    entries.push(meta_entry(rel, &md, EntryKind::Hardlink { target: first.clone() }));
                    continue;
                }
                first_link.insert((md.dev(), md.ino()), rel.clone());
            }
            let slot = pipe.new_slot();
            let (size, hash) = pipe.file(&abs, slot, progress)?;
            logical += size;
            let sparse = md.blocks() * 512 < md.len();
            files.push((entries.len(), slot));
            entries.push(meta_entry(rel, &md, EntryKind::File { size, chunks: vec![], hash, sparse }));
        } else {
            skipped.push(format!("{} (not a regular file, directory or symlink)", abs.display()));
        }
    }
    pipe.flush_batch()?;
    for (ei, slot) in files {
        if let EntryKind::File { chunks, .. } = &mut entries[ei].kind {
            *chunks = std::mem::take(&mut pipe.slots[slot]);
        }
    }
    pipe.slots.clear();
    progress.finish();
    Ok((Manifest { entries }, logical))
}

/// Backs up one stream as a single file.
fn backup_stream(
    pipe: &mut Pipeline,
    file_name: &str,
    reader: Box<dyn Read + Send>,
    what: &str,
    progress: &dyn Progress,
) -> Result<(Manifest, u64)> {
    snapshot::check_path(file_name.as_bytes())
        .ok()
        .filter(|_| !file_name.is_empty() && !file_name.contains('/'))
        .ok_or_else(|| Error::new(ErrorKind::InvalidInput, format!("stream file name {file_name:?} must be a single path component")))?;
    progress.start("backup", None);
    let slot = pipe.new_slot();
    let (size, hash) = pipe.stream(reader, slot, Path::new(what), progress)?;
    if size == 0 {
        return Err(Error::new(ErrorKind::InvalidInput, format!("{what} gave no data; refusing to store an empty stream")));
    }
    pipe.flush_batch()?;
    let chunks = std::mem::take(&mut pipe.slots[slot]);
    pipe.slots.clear();
    let now = chrono::Utc::now();
    let entry = Entry {
        path: file_name.as_bytes().to_vec(),
        mode: 0o644,
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
        mtime_sec: now.timestamp(),
        mtime_nsec: now.timestamp_subsec_nanos(),
        kind: EntryKind::File { size, chunks, hash, sparse: false },
    };
    progress.finish();
    Ok((Manifest { entries: vec![entry] }, size))
}
