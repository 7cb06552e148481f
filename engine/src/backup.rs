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
    /// `mongodump --archive --numParallelCollections=1` run inside a container (Docker exec,
    /// no TTY), demultiplexed like [`SourceInput::MongoDump`]. With `$RPGER_MONGODB_URI` set, the
    /// URI (credentials included) reaches mongodump through a `--config` file written into the
    /// container for the run and removed afterwards, never through a command line.
    DockerMongoDump {
        /// Container name or id.
        container: String,
        /// More mongodump arguments (e.g. `--db=rpger`), no secrets.
        args: Vec<String>,
    },
    /// Redis in a container: `BGSAVE` over RESP to the container's address, then the dump file
    /// and the AOF copied out of the container as a tar stream.
    DockerRedis {
        /// Container name or id.
        container: String,
        /// Redis port inside the container.
        port: u16,
        /// Longest wait for `BGSAVE`.
        timeout: Duration,
    },
    /// A path inside a container, copied out as a tar stream while the container is paused and
    /// unpaused on every path (Chroma without a bind mount).
    DockerCopy {
        /// Container name or id.
        container: String,
        /// Absolute path inside the container.
        path: String,
    },
    /// The standard output of `sh -c command` run inside a container (Docker exec, no TTY),
    /// stored as `file_name`; gated like [`SourceInput::Command`].
    DockerExec {
        /// Container name or id.
        container: String,
        /// Name of the stored file.
        file_name: String,
        /// Shell command line, run by the container's `sh`.
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

/// Snapshot label (after `SOURCE.`) with the bytes delta encoding saved on that source's new
/// chunks, estimated against compressing them alone.
pub const DELTA_SAVED_LABEL: &str = "delta_saved_bytes";

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
    /// Store a new chunk as a delta against a similar chunk already stored, when that is
    /// clearly smaller than compressing it alone.
    pub delta: bool,
}

impl BackupOptions {
    /// Options for `sources` with the defaults: UTC names, now, no labels, no lock wait, all or
    /// nothing.
    pub fn new(sources: Vec<SourceSpec>) -> Self {
        BackupOptions {
            sources,
            local_time: false,
            time_unix_ns: None,
            labels: vec![],
            lock_wait: Duration::ZERO,
            allow_partial: false,
            delta: true,
        }
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
    let popts = pipeline::PipelineOptions { delta: opts.delta };
    let ((sources, skipped, bytes_read, source_labels, failed), stats) = pipeline::run(store, index, popts, |feeder| {
        let mut skipped = vec![];
        let mut walked = vec![];
        let mut failed: Vec<(String, String)> = vec![];
        for spec in specs {
            let name = spec.name.clone();
            let w = backup_source(feeder, spec.input, &mut skipped, progress).map_err(|e| {
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
            let saved: u64 = files.iter().map(|(_, slot)| feeder.delta_saved.get(*slot).copied().unwrap_or(0)).sum();
            if saved > 0 {
                source_labels.push((format!("{name}.{DELTA_SAVED_LABEL}"), saved.to_string()));
            }
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

/// Backs up one source's data; `?` here fails only this source (see `allow_partial`).
fn backup_source(feeder: &mut Feeder, input: SourceInput, skipped: &mut Vec<String>, progress: &dyn Progress) -> Result<Walked> {
    match input {
        SourceInput::Path(p) => backup_path(feeder, &p, None, skipped, progress),
        SourceInput::Redis(spec) => crate::sources::redis::prepare(&spec).and_then(|prep| {
            let mut w = backup_path(feeder, &prep.data_dir, Some(&prep.include), skipped, progress)?;
            w.labels = prep.labels;
            Ok(w)
        }),
        SourceInput::Stream { file_name, reader } => backup_stream(feeder, &file_name, reader, "stdin", progress),
        SourceInput::Command { file_name, command } => {
            run_gated(spawn_local(&command)?, |r, what| backup_stream(feeder, &file_name, r, what, progress))
        }
        SourceInput::MongoDump { command } => backup_mongodump(feeder, spawn_local(&command)?, progress),
        SourceInput::DockerExec { container, file_name, command } => {
            let argv = vec!["sh".to_string(), "-c".to_string(), command];
            run_gated(spawn_exec(&container, argv, vec![])?, |r, what| backup_stream(feeder, &file_name, r, what, progress))
        }
        SourceInput::DockerMongoDump { container, args } => docker_mongodump(feeder, &container, args, progress),
        SourceInput::DockerRedis { container, port, timeout } => docker_redis(feeder, &container, port, timeout, skipped, progress),
        SourceInput::DockerCopy { container, path } => {
            let _paused = crate::sources::docker::pause(&container)?;
            // Unpaused when this block ends, on success and on error alike.
            let (reader, task) = crate::sources::docker::download(&container, &path)?;
            let what = task.what().to_string();
            let w = backup_tar(feeder, reader, None, &what, skipped, progress);
            finish_download(w, task)
        }
        SourceInput::PausedContainer { container, path } => {
            if !path.is_dir() {
                Err(Error::new(ErrorKind::Missing, format!("data directory {} does not exist", path.display())))
            } else {
                let _paused = crate::sources::docker::pause(&container)?;
                // Unpaused when this block ends, on success and on error alike.
                backup_path(feeder, &path, None, skipped, progress)
            }
        }
        SourceInput::Frozen { path, pid } => {
            if !path.is_dir() {
                Err(Error::new(ErrorKind::Missing, format!("data directory {} does not exist", path.display())))
            } else {
                let _frozen = crate::sources::freeze::freeze(pid)?;
                // Dropped when this block ends, on success and on error alike.
                backup_path(feeder, &path, None, skipped, progress)
            }
        }
    }
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
    let (size, hash) = pipe.stream(reader, slot, Path::new(what), None, progress)?;
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

/// A running producer of a source's bytes whose success is only known at its end (a command's
/// exit status).
struct Gated {
    reader: Box<dyn Read + Send>,
    what: String,
    /// Called after the reader is dropped, with `true` when reading failed (then the producer is
    /// stopped, and its own failure, if any, is reported instead of our stopping it).
    finish: Box<dyn FnOnce(bool) -> Result<()>>,
}

/// Starts `sh -c command` on this host.
fn spawn_local(command: &str) -> Result<Gated> {
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
    let w = what.clone();
    let finish = move |aborted: bool| -> Result<()> {
        let mut status = child.try_wait().ok().flatten();
        if aborted && status.is_none() {
            // A cut stream usually means the command is exiting on its own: give it a moment,
            // so its status and message are reported rather than our kill.
            let t0 = std::time::Instant::now();
            while status.is_none() && t0.elapsed() < Duration::from_secs(2) {
                std::thread::sleep(Duration::from_millis(20));
                status = child.try_wait().ok().flatten();
            }
            if status.is_none() {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(()); // our stop: the reading error is the cause
            }
        }
        let status = match status {
            Some(s) => s,
            None => child.wait().map_err(|e| Error::with_cause(ErrorKind::Io, format!("waiting for {w}"), e))?,
        };
        let tail = err_tail.join().unwrap_or_default();
        let tail = if tail.is_empty() { String::new() } else { format!(": {tail}") };
        if status.success() {
            return Ok(());
        }
        let how = match status.code() {
            Some(c) => format!("exited with status {c}"),
            None => "was killed by a signal".to_string(),
        };
        Err(Error::new(ErrorKind::InvalidInput, format!("{w} {how}; nothing is committed{tail}")))
    };
    Ok(Gated { reader: Box::new(stdout), what, finish: Box::new(finish) })
}

/// Starts `argv` inside `container` (Docker exec, no TTY).
fn spawn_exec(container: &str, argv: Vec<String>, env: Vec<String>) -> Result<Gated> {
    let (reader, task) = crate::sources::docker::exec(container, argv, env)?;
    let what = task.what().to_string();
    let finish = move |_aborted: bool| -> Result<()> {
        match task.finish() {
            // Our own stop (the reader was dropped early): the reading error is the cause.
            Err(e) if e.kind() == ErrorKind::Interrupted => Ok(()),
            r => r,
        }
    };
    Ok(Gated { reader: Box::new(reader), what, finish: Box::new(finish) })
}

/// Hands the producer's bytes to `consume`, then fails unless the producer succeeded too; a
/// producer's failure (exit status and stderr) explains a cut stream better than the cut.
fn run_gated<T>(g: Gated, consume: impl FnOnce(Box<dyn Read + Send>, &str) -> Result<T>) -> Result<T> {
    let res = consume(g.reader, &g.what);
    let end = (g.finish)(res.is_err());
    match (res, end) {
        (Ok(v), Ok(())) => Ok(v),
        (Err(e), Ok(())) => Err(e),
        (_, Err(e)) => Err(e),
    }
}

/// mongodump in a container, credentials (if any) through a config file written for the run.
fn docker_mongodump(pipe: &mut Feeder, container: &str, args: Vec<String>, progress: &dyn Progress) -> Result<Walked> {
    crate::sources::docker::with_mongo_uri(container, "mongodump", |auth| {
        let mut argv: Vec<String> = vec!["mongodump".into(), "--archive".into(), "--numParallelCollections=1".into()];
        argv.extend(args);
        argv.extend(auth);
        spawn_exec(container, argv, vec![]).and_then(|g| backup_mongodump(pipe, g, progress))
    })
}

/// Redis in a container: BGSAVE over the network, then its files out of the container.
fn docker_redis(
    pipe: &mut Feeder,
    container: &str,
    port: u16,
    timeout: Duration,
    skipped: &mut Vec<String>,
    progress: &dyn Progress,
) -> Result<Walked> {
    use crate::sources::{docker, redis};
    let host = docker::address(container)?;
    let spec = redis::RedisSpec { host, port, data_dir: None, timeout };
    let saved = redis::save(&spec).map_err(|e| e.context(format!("container {container}")))?;
    let dir = saved.dir.clone().ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("redis in container {container}: CONFIG GET dir is not allowed, so its data directory is unknown"),
        )
    })?;
    let (reader, task) = docker::download(container, &dir)?;
    let what = task.what().to_string();
    let w = backup_tar(pipe, reader, Some(&saved.names), &what, skipped, progress);
    let mut w = finish_download(w, task)?;
    if !w.manifest.entries.iter().any(|e| e.path == saved.names[0].as_bytes()) {
        return Err(Error::new(
            ErrorKind::Missing,
            format!("redis in container {container}: saved, but {dir}/{} is not there", saved.names[0]),
        ));
    }
    w.labels = saved.labels;
    Ok(w)
}

/// A download's own failure (missing path, cut connection) explains a short tar stream best.
fn finish_download(w: Result<Walked>, task: crate::sources::docker::EngineTask) -> Result<Walked> {
    match (w, task.finish()) {
        (Ok(w), Ok(())) => Ok(w),
        (Err(e), Err(t)) if t.kind() == ErrorKind::Interrupted => Err(e),
        (_, Err(t)) => Err(t),
        (Err(e), Ok(())) => Err(e),
    }
}

/// Backs up a tar stream (the Docker engine's archive of a container path). The archive's top
/// directory becomes the source's root; with `include`, only those names under it are kept.
fn backup_tar(
    pipe: &mut Feeder,
    reader: impl Read,
    include: Option<&[String]>,
    what: &str,
    skipped: &mut Vec<String>,
    progress: &dyn Progress,
) -> Result<Walked> {
    let bad = |e: std::io::Error| Error::with_cause(ErrorKind::InvalidInput, format!("tar stream of {what}"), e);
    progress.start("backup", None);
    let mut archive = tar::Archive::new(reader);
    // (entry, slot of its content); hard links resolved once every path is known
    let mut entries: Vec<(Entry, Option<usize>)> = vec![];
    let mut links: Vec<(Vec<u8>, Vec<u8>)> = vec![];
    let mut top: Option<Vec<u8>> = None;
    let mut logical = 0u64;
    for item in archive.entries().map_err(bad)? {
        let mut item = item.map_err(bad)?;
        let h = item.header().clone();
        let raw: Vec<u8> = item.path_bytes().iter().copied().collect::<Vec<u8>>();
        let mut p: &[u8] = raw.strip_suffix(b"/").unwrap_or(&raw);
        while let Some(rest) = p.strip_prefix(b"./") {
            p = rest;
        }
        // The first entry names what was asked for: a directory (its name is dropped, so the
        // source root is its content) or a single file (kept under its own name).
        let top = top.get_or_insert_with(|| if h.entry_type().is_dir() { p.to_vec() } else { vec![] });
        let rel: Vec<u8> = if top.is_empty() {
            p.to_vec()
        } else if p == top.as_slice() {
            vec![]
        } else if let Some(r) = p.strip_prefix(top.as_slice()).and_then(|r| r.strip_prefix(b"/")) {
            r.to_vec()
        } else {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("tar stream of {what}: {:?} is outside {:?}", String::from_utf8_lossy(p), String::from_utf8_lossy(top)),
            ));
        };
        if let Some(inc) = include {
            let first = rel.split(|&c| c == b'/').next().unwrap_or_default();
            if !rel.is_empty() && !inc.iter().any(|n| n.as_bytes() == first) {
                continue;
            }
        }
        let meta = |kind: EntryKind| -> Result<Entry> {
            Ok(Entry {
                path: rel.clone(),
                mode: h.mode().map_err(bad)? & 0o7777,
                uid: h.uid().map_err(bad)? as u32,
                gid: h.gid().map_err(bad)? as u32,
                mtime_sec: h.mtime().map_err(bad)? as i64,
                mtime_nsec: 0,
                kind,
            })
        };
        let t = h.entry_type();
        if t.is_dir() {
            entries.push((meta(EntryKind::Dir)?, None));
        } else if t.is_symlink() {
            let target = item.link_name_bytes().map(|c| c.into_owned()).unwrap_or_default();
            entries.push((meta(EntryKind::Symlink { target })?, None));
        } else if t.is_hard_link() {
            let target = item.link_name_bytes().map(|c| c.into_owned()).unwrap_or_default();
            let target = match target.strip_prefix(top.as_slice()).and_then(|r| r.strip_prefix(b"/")) {
                Some(r) if !top.is_empty() => r.to_vec(),
                _ => target,
            };
            links.push((rel.clone(), target));
            entries.push((meta(EntryKind::Dir)?, None)); // kind set below
        } else if t.is_file() || t == tar::EntryType::Continuous || t.is_gnu_sparse() {
            let slot = pipe.new_slot();
            let name = Path::new(std::ffi::OsStr::from_bytes(&rel)).to_path_buf();
            let hint = item.size();
            let (size, hash) = pipe.stream(&mut item, slot, &Path::new(what).join(&name), Some(hint), progress)?;
            logical += size;
            entries.push((meta(EntryKind::File { size, chunks: vec![], hash, sparse: false })?, Some(slot)));
        } else {
            skipped.push(format!("{what}: {} (not a regular file, directory or link)", String::from_utf8_lossy(&rel)));
        }
    }
    if top.is_none() {
        return Err(Error::new(ErrorKind::InvalidInput, format!("tar stream of {what} is empty")));
    }
    entries.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    // A manifest's hard link points at the first path (in manifest order) of its file, which
    // holds the content; a tar names the first path *it* wrote.
    let mut groups: std::collections::BTreeMap<Vec<u8>, Vec<Vec<u8>>> = Default::default();
    for (link, target) in links {
        groups.entry(target).or_default().push(link);
    }
    let find = |entries: &[(Entry, Option<usize>)], p: &[u8]| entries.binary_search_by(|e| e.0.path.as_slice().cmp(p)).ok();
    for (file, links) in groups {
        let fi = find(&entries, &file).filter(|&i| matches!(entries[i].0.kind, EntryKind::File { .. })).ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidInput,
                format!("tar stream of {what}: hard link to {:?}, which is not a file in it", String::from_utf8_lossy(&file)),
            )
        })?;
        let first = links.iter().chain(std::iter::once(&file)).min().expect("not empty").clone();
        let holder = find(&entries, &first).expect("every link is an entry");
        if holder != fi {
            let kind = std::mem::replace(&mut entries[fi].0.kind, EntryKind::Dir);
            entries[holder].0.kind = kind;
            entries[holder].1 = entries[fi].1.take();
        }
        for p in links.iter().chain(std::iter::once(&file)).filter(|p| **p != first) {
            let i = find(&entries, p).expect("every link is an entry");
            entries[i].0.kind = EntryKind::Hardlink { target: first.clone() };
            entries[i].1 = None;
        }
    }
    let files = entries.iter().enumerate().filter_map(|(i, (_, s))| s.map(|s| (i, s))).collect();
    progress.finish();
    Ok(Walked { manifest: Manifest { entries: entries.into_iter().map(|(e, _)| e).collect() }, logical, files, labels: vec![] })
}

/// Reads a mongodump `--archive` from `dump` and stores the demultiplexed collections in
/// mongodump's directory layout under `mongodb_backup/`.
fn backup_mongodump(pipe: &mut Feeder, dump: Gated, progress: &dyn Progress) -> Result<Walked> {
    use crate::pipeline::SlotStream;
    use crate::sources::mongo::{self, Event};
    progress.start("backup", None);
    // path -> (slot, size, hash)
    let mut done: Vec<(Vec<u8>, usize, u64, Id)> = vec![];
    let mut labels = vec![];
    let mut namespaces = 0u64;
    run_gated(dump, |stdout, what| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use crate::store::InitOptions;

    fn tar_of(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        b.into_inner().unwrap()
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o640);
        h.set_uid(999);
        h.set_gid(1000);
        h.set_mtime(1_700_000_000);
        h
    }

    fn walk(bytes: &[u8], include: Option<&[String]>) -> Result<Manifest> {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::init(&dir.path().join("s"), InitOptions::default()).unwrap();
        let (index, _) = Index::load_lenient(&store).unwrap();
        let (w, _) = pipeline::run(&store, index, pipeline::PipelineOptions { delta: false }, |f| {
            let mut w = backup_tar(f, bytes, include, "test", &mut vec![], &NoProgress)?;
            let mut slots = f.flush()?;
            for (ei, slot) in &w.files {
                if let EntryKind::File { chunks, .. } = &mut w.manifest.entries[*ei].kind {
                    *chunks = std::mem::take(&mut slots[*slot]);
                }
            }
            Ok(w)
        })?;
        w.manifest.validate().map_err(|e| Error::with_cause(ErrorKind::InvalidInput, "manifest", e))?;
        Ok(w.manifest)
    }

    #[test]
    fn a_tar_stream_becomes_the_source_tree() {
        let bytes = tar_of(|b| {
            b.append_data(&mut header(tar::EntryType::Directory, 0), "data/", &b""[..]).unwrap();
            b.append_data(&mut header(tar::EntryType::Regular, 5), "data/z.rdb", &b"hello"[..]).unwrap();
            let mut l = header(tar::EntryType::Link, 0);
            b.append_link(&mut l, "data/a-link", "data/z.rdb").unwrap();
            let mut s = header(tar::EntryType::Symlink, 0);
            b.append_link(&mut s, "data/sym", "../elsewhere").unwrap();
            b.append_data(&mut header(tar::EntryType::Directory, 0), "data/aof/", &b""[..]).unwrap();
            b.append_data(&mut header(tar::EntryType::Regular, 3), "data/aof/x", &b"abc"[..]).unwrap();
        });
        let m = walk(&bytes, None).unwrap();
        let paths: Vec<String> = m.entries.iter().map(|e| String::from_utf8_lossy(&e.path).into_owned()).collect();
        assert_eq!(paths, ["", "a-link", "aof", "aof/x", "sym", "z.rdb"]);
        // The first path in manifest order holds the content; the tar's first one links to it.
        assert!(matches!(&m.entries[1].kind, EntryKind::File { size: 5, .. }));
        assert!(matches!(&m.entries[5].kind, EntryKind::Hardlink { target } if target == b"a-link"));
        assert!(matches!(&m.entries[4].kind, EntryKind::Symlink { target } if target == b"../elsewhere"));
        assert_eq!((m.entries[3].mode, m.entries[3].uid, m.entries[3].gid, m.entries[3].mtime_sec), (0o640, 999, 1000, 1_700_000_000));
        // Only the named top-level entries.
        let m = walk(&bytes, Some(&["aof".to_string()])).unwrap();
        let paths: Vec<String> = m.entries.iter().map(|e| String::from_utf8_lossy(&e.path).into_owned()).collect();
        assert_eq!(paths, ["", "aof", "aof/x"]);
    }

    #[test]
    fn hostile_or_broken_tar_streams_are_refused() {
        let outside = tar_of(|b| {
            b.append_data(&mut header(tar::EntryType::Directory, 0), "data/", &b""[..]).unwrap();
            let mut h = header(tar::EntryType::Regular, 4);
            // Written raw: tar::Builder itself refuses `..`.
            h.as_gnu_mut().unwrap().name[..18].copy_from_slice(b"data/../etc/passwd");
            h.set_cksum();
            b.append(&h, &b"root"[..]).unwrap();
        });
        let e = walk(&outside, None).unwrap_err();
        assert!(e.to_string().contains(".."), "{e}");
        let mut cut = tar_of(|b| {
            b.append_data(&mut header(tar::EntryType::Regular, 100_000), "big", &vec![7u8; 100_000][..]).unwrap();
        });
        cut.truncate(20_000);
        assert!(walk(&cut, None).is_err(), "a cut stream must fail");
        assert!(walk(&[], None).unwrap_err().to_string().contains("empty"));
        let dangling = tar_of(|b| {
            b.append_data(&mut header(tar::EntryType::Directory, 0), "d/", &b""[..]).unwrap();
            b.append_link(&mut header(tar::EntryType::Link, 0), "d/l", "d/missing").unwrap();
        });
        assert!(walk(&dangling, None).unwrap_err().to_string().contains("missing"));
    }
}
