//! Backup: walk each source, chunk (FastCDC), hash (BLAKE3), dedup against the index, compress
//! (zstd) new chunks in parallel, append them to packs, then commit index -> manifests ->
//! snapshot, in that order, so a crash at any point leaves only unreferenced data behind.

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::pipeline::{self, Feeder};
use crate::progress::Progress;
use crate::store::index::Index;
use crate::store::lock::{self, LockMode};
use crate::store::{now_ns, Store};
use rpger_formats::snapshot::{self, Entry, EntryKind, Manifest, Snapshot, SourceRef};
use rpger_formats::Id;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, Metadata};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

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
    /// A Redis server: `BGSAVE`, then its dump file and AOF (see [`crate::sources::redis`]).
    Redis(crate::sources::redis::RedisSpec),
    /// A directory whose writer is stopped (SIGSTOP) while it is read and always resumed
    /// afterwards (Chroma: its SQLite file and HNSW segments form one state).
    Frozen {
        /// The data directory.
        path: PathBuf,
        /// The writer's process id.
        pid: i32,
    },
    /// A host directory of a Docker container (bind-mounted), read while the container is paused
    /// and unpaused on every path (Chroma on a Docker host).
    PausedContainer {
        /// Container name or id.
        container: String,
        /// The data directory on this host.
        path: PathBuf,
    },
    /// `sh -c command` writing a mongodump `--archive` to stdout, demultiplexed while it streams
    /// into `mongodb_backup/<db>/<collection>.bson` and `.metadata.json`, every namespace's CRC
    /// checked (see [`crate::sources::mongo`]).
    MongoDump {
        /// Shell command line, e.g. `mongodump --archive --numParallelCollections=1`.
        command: String,
    },
    /// The standard output of `sh -c command`, streamed (no temp file) into one file named
    /// `file_name`. A non-zero exit, a signal or an empty output fails the source.
    Command {
        /// Name of the stored file.
        file_name: String,
        /// Shell command line.
        command: String,
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
    /// Snapshot time, Unix nanoseconds (default: now), e.g. to import legacy backup folders with
    /// their original dates.
    pub time_unix_ns: Option<i64>,
    /// Annotations stored in the snapshot.
    pub labels: Vec<(String, String)>,
    /// How long to wait for a conflicting lock.
    pub lock_wait: Duration,
    /// Commit the sources that succeeded when others fail; the snapshot is then labelled
    /// `partial` (and never counts toward retention).
    pub allow_partial: bool,
}

impl BackupOptions {
    /// Options for `sources` with the defaults: UTC names, now, no labels, no lock wait, all or
    /// nothing.
    pub fn new(sources: Vec<SourceSpec>) -> Self {
        BackupOptions { sources, local_time: false, time_unix_ns: None, labels: vec![], lock_wait: Duration::ZERO, allow_partial: false }
    }
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
    /// With `allow_partial`: the sources that failed and why (empty otherwise).
    pub failed: Vec<(String, String)>,
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
    let start_ns = opts.time_unix_ns.unwrap_or_else(now_ns);
    let _lock = lock::acquire(&store.locks_dir(), LockMode::Shared, "backup", opts.lock_wait)?;
    let (index, _damaged) = Index::load_lenient(store)?;
    let mut specs = opts.sources;
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    let allow_partial = opts.allow_partial;
    let ((sources, skipped, bytes_read, source_labels, failed), stats) = pipeline::run(store, index, |feeder| {
        let mut skipped = vec![];
        let mut walked = vec![];
        let mut failed: Vec<(String, String)> = vec![];
        for spec in specs {
            let name = spec.name.clone();
            let w = match spec.input {
                SourceInput::Path(p) => backup_path(feeder, &p, None, &mut skipped, progress),
                SourceInput::Redis(spec) => crate::sources::redis::prepare(&spec).and_then(|prep| {
                    let mut w = backup_path(feeder, &prep.data_dir, Some(&prep.include), &mut skipped, progress)?;
                    w.labels = prep.labels;
                    Ok(w)
                }),
                SourceInput::Stream { file_name, reader } => backup_stream(feeder, &file_name, reader, "stdin", progress),
                SourceInput::Command { file_name, command } => backup_command(feeder, &file_name, &command, progress),
                SourceInput::MongoDump { command } => backup_mongodump(feeder, &command, progress),
                SourceInput::PausedContainer { container, path } => {
                    if !path.is_dir() {
                        Err(Error::new(ErrorKind::Missing, format!("data directory {} does not exist", path.display())))
                    } else {
                        let _paused = crate::sources::docker::pause(&container)?;
                        // Unpaused when this block ends, on success and on error alike.
                        backup_path(feeder, &path, None, &mut skipped, progress)
                    }
                }
                SourceInput::Frozen { path, pid } => {
                    if !path.is_dir() {
                        Err(Error::new(ErrorKind::Missing, format!("data directory {} does not exist", path.display())))
                    } else {
                        let _frozen = crate::sources::freeze::freeze(pid)?;
                        // Dropped when this block ends, on success and on error alike.
                        backup_path(feeder, &path, None, &mut skipped, progress)
                    }
                }
            }
            .map_err(|e| {
                // Bad source data (a cut or corrupt dump) is a failed source, not a damaged store.
                let e = if e.kind() == ErrorKind::Corrupt { e.with_kind(ErrorKind::InvalidInput) } else { e };
                e.context(format!("source {name}"))
            });
            match w {
                Ok(w) => walked.push((name, w)),
                Err(e) if allow_partial => failed.push((name, e.to_string())),
                Err(e) => return Err(e),
            }
        }
        if walked.is_empty() {
            let why: Vec<String> = failed.iter().map(|(_, e)| e.clone()).collect();
            return Err(Error::new(ErrorKind::InvalidInput, format!("every source failed; nothing is committed: {}", why.join("; "))));
        }
        // Packs and index go first: a manifest must only reference durable chunks. One flush
        // for all sources keeps small sources from closing small packs.
        let mut slots = feeder.flush()?;
        let mut sources = vec![];
        let mut source_labels = vec![];
        for (name, Walked { mut manifest, logical, files, labels }) in walked {
            source_labels.extend(labels.into_iter().map(|(k, v)| (format!("{name}.{k}"), v)));
            for (ei, slot) in files {
                if let EntryKind::File { chunks, .. } = &mut manifest.entries[ei].kind {
                    *chunks = std::mem::take(&mut slots[slot]);
                }
            }
            manifest.validate().map_err(|e| Error::with_cause(ErrorKind::InvalidInput, format!("source {name}"), e))?;
            let id = store.write_manifest(&manifest)?;
            sources.push(SourceRef { name, manifest: id, logical_bytes: logical, entries: manifest.entries.len() as u64 });
        }
        if !failed.is_empty() {
            let names: Vec<&str> = failed.iter().map(|(n, _)| n.as_str()).collect();
            source_labels.push(("partial".into(), format!("failed sources: {}", names.join(","))));
            source_labels.extend(failed.iter().map(|(n, e)| (format!("{n}.error"), e.clone())));
        }
        Ok((sources, skipped, feeder.bytes_read, source_labels, failed))
    })?;
    let time = chrono::DateTime::from_timestamp_nanos(start_ns);
    let name = if opts.local_time {
        time.with_timezone(&chrono::Local).format("%Y-%m-%d_%H-%M-%S").to_string()
    } else {
        time.format("%Y-%m-%d_%H-%M-%S").to_string()
    };
    let mut labels = opts.labels;
    labels.extend(source_labels);
    labels.sort();
    let snap = Snapshot {
        name,
        time_unix_ns: start_ns,
        hostname: rustix::system::uname().nodename().to_string_lossy().into_owned(),
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        sources,
        new_stored_bytes: stats.new_stored,
        new_raw_bytes: stats.new_raw,
        labels,
    };
    let snapshot = store.commit_snapshot(snap)?;
    Ok(BackupReport { snapshot, bytes_read, chunks: stats.chunks, new_chunks: stats.new_chunks, packs: stats.packs, skipped, failed })
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

/// A walked source: its manifest (file entries still lack their chunk lists), logical size, for
/// each file (entry index, pipeline slot), and facts to record in the snapshot.
struct Walked {
    manifest: Manifest,
    logical: u64,
    files: Vec<(usize, usize)>,
    labels: Vec<(String, String)>,
}

/// Backs up a directory tree or a single file; with `include`, only those top-level names of
/// the directory (and what is under them).
fn backup_path(
    pipe: &mut Feeder,
    root: &Path,
    include: Option<&[String]>,
    skipped: &mut Vec<String>,
    progress: &dyn Progress,
) -> Result<Walked> {
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
                if rel.is_empty() && include.is_some_and(|inc| !inc.iter().any(|n| n.as_bytes() == e.file_name().as_bytes())) {
                    continue;
                }
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
    progress.finish();
    Ok(Walked { manifest: Manifest { entries }, logical, files, labels: vec![] })
}

/// Backs up one stream as a single file.
fn backup_stream(pipe: &mut Feeder, file_name: &str, reader: Box<dyn Read + Send>, what: &str, progress: &dyn Progress) -> Result<Walked> {
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
    let now = chrono::Utc::now();
    let entry = Entry {
        path: file_name.as_bytes().to_vec(),
        mode: 0o644,
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
        mtime_sec: now.timestamp(),
        mtime_nsec: now.timestamp_subsec_nanos(),
        kind: EntryKind::File { size, chunks: vec![], hash, sparse: false },
    };
    progress.finish();
    Ok(Walked { manifest: Manifest { entries: vec![entry] }, logical: size, files: vec![(0, slot)], labels: vec![] })
}

/// Runs `sh -c command`, hands its standard output to `consume`, and fails unless the command
/// exits 0; the error quotes the tail of its stderr.
fn run_gated<T>(command: &str, consume: impl FnOnce(std::process::ChildStdout, &str) -> Result<T>) -> Result<T> {
    use std::process::{Command, Stdio};
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::with_cause(ErrorKind::Io, format!("cannot start command `{command}`"), e))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    // Drain stderr beside the data so a chatty command cannot block on a full pipe; keep its tail.
    let err_tail = std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = stderr.read_to_end(&mut all);
        let tail = &all[all.len().saturating_sub(2000)..];
        String::from_utf8_lossy(tail).trim().replace('\n', " | ")
    });
    let what = format!("command `{command}`");
    let res = consume(stdout, &what);
    // Whatever happened to the stream, reap the child; a stream error kills it first.
    if res.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| Error::with_cause(ErrorKind::Io, format!("waiting for {what}"), e))?;
    let tail = err_tail.join().unwrap_or_default();
    let tail = if tail.is_empty() { String::new() } else { format!(": {tail}") };
    if !status.success() {
        let how = match status.code() {
            Some(c) => format!("exited with status {c}"),
            None => "was killed by a signal".to_string(),
        };
        return Err(Error::new(ErrorKind::InvalidInput, format!("{what} {how}; nothing is committed{tail}")));
    }
    res
}

/// Runs `sh -c command` and stores its standard output; gated on the exit status.
fn backup_command(pipe: &mut Feeder, file_name: &str, command: &str, progress: &dyn Progress) -> Result<Walked> {
    run_gated(command, |stdout, what| backup_stream(pipe, file_name, Box::new(stdout), what, progress))
}

/// Runs a mongodump `--archive` command and stores the demultiplexed collections in mongodump's
/// directory layout under `mongodb_backup/`.
fn backup_mongodump(pipe: &mut Feeder, command: &str, progress: &dyn Progress) -> Result<Walked> {
    use crate::pipeline::SlotStream;
    use crate::sources::mongo::{self, Event};
    progress.start("backup", None);
    // path -> (slot, size, hash)
    let mut done: Vec<(Vec<u8>, usize, u64, Id)> = vec![];
    let mut labels = vec![];
    let mut namespaces = 0u64;
    run_gated(command, |stdout, what| {
        let mut open: HashMap<(String, String), SlotStream> = HashMap::new();
        let path = |db: &str, coll: &str, ext: &str| {
            let mut p = b"mongodb_backup/".to_vec();
            if !db.is_empty() {
                p.extend_from_slice(mongo::component(db).as_bytes());
                p.push(b'/');
            }
            p.extend_from_slice(format!("{}{ext}", mongo::component(coll)).as_bytes());
            p
        };
        mongo::demux(stdout, |ev| {
            match ev {
                Event::Header(h) => labels.extend(h.into_iter().map(|(k, v)| (format!("archive.{k}"), v))),
                Event::Metadata { db, collection, json } => {
                    let mut s = pipe.open_stream();
                    pipe.stream_write(&mut s, json.as_bytes(), progress)?;
                    let (slot, size, hash) = pipe.stream_close(s, progress)?;
                    done.push((path(&db, &collection, ".metadata.json"), slot, size, hash));
                }
                Event::Docs { db, collection, bytes } => {
                    let key = (db, collection);
                    if !open.contains_key(&key) {
                        let s = pipe.open_stream();
                        open.insert(key.clone(), s);
                    }
                    let s = open.get_mut(&key).expect("inserted above");
                    pipe.stream_write(s, &bytes, progress)?;
                }
                Event::End { db, collection, .. } => {
                    let s = match open.remove(&(db.clone(), collection.clone())) {
                        Some(s) => s,
                        None => pipe.open_stream(), // an empty collection
                    };
                    let (slot, size, hash) = pipe.stream_close(s, progress)?;
                    done.push((path(&db, &collection, ".bson"), slot, size, hash));
                    namespaces += 1;
                }
            }
            Ok(())
        })
        .map_err(|e| e.context(what))
    })?;
    labels.push(("archive.namespaces".into(), namespaces.to_string()));
    let now = chrono::Utc::now();
    let (uid, gid) = (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw());
    let meta = |path: Vec<u8>, mode: u32, kind: EntryKind| Entry {
        path,
        mode,
        uid,
        gid,
        mtime_sec: now.timestamp(),
        mtime_nsec: now.timestamp_subsec_nanos(),
        kind,
    };
    let mut dirs: std::collections::BTreeSet<Vec<u8>> = [b"".to_vec(), b"mongodb_backup".to_vec()].into();
    for (p, ..) in &done {
        if let Some(i) = p.iter().rposition(|&c| c == b'/') {
            dirs.insert(p[..i].to_vec());
        }
    }
    let mut entries: Vec<(Entry, Option<usize>)> = dirs.into_iter().map(|d| (meta(d, 0o755, EntryKind::Dir), None)).collect();
    let mut logical = 0;
    for (p, slot, size, hash) in done {
        logical += size;
        entries.push((meta(p, 0o644, EntryKind::File { size, chunks: vec![], hash, sparse: false }), Some(slot)));
    }
    entries.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    let files = entries.iter().enumerate().filter_map(|(i, (_, s))| s.map(|s| (i, s))).collect();
    progress.finish();
    Ok(Walked { manifest: Manifest { entries: entries.into_iter().map(|(e, _)| e).collect() }, logical, files, labels })
}
