//! Restore back into the live databases: what the legacy restore script did with
//! `--mongodb-only`, `--redis-only` and `--chroma-only`, for the sources a backup knows how to
//! reach again.
//!
//! Order of work, for every kind of target: the snapshot's data is first read out of the store
//! into a staging copy (every chunk checked against its id, every file against its hash); only
//! when that copy is whole is the live database touched, and what it held before is kept, never
//! deleted:
//!
//! - a host directory (a container's bind mount, or a plain directory whose writer the operator
//!   stopped): the container is stopped, the directory is swapped for the staged copy by two
//!   renames in its parent, the replaced one kept beside it, and the container started again;
//! - a path inside a container (`docker-copy`, and Redis's data directory): the container is
//!   stopped, the path is saved into the keep directory as a tar archive, the staged files are
//!   written in (owners, modes and times as backed up), and the container started; Redis must
//!   then load them and answer with the key counts the backup recorded;
//! - MongoDB in a container: the current databases are dumped into the keep directory
//!   (`mongodump --archive`), then the snapshot's archive is fed to `mongorestore --archive
//!   --drop` in the container (collections of the archive are replaced, others left alone).

use crate::backup::SourceInput;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::progress::Progress;
use crate::restore::{self, RestoreOptions};
use crate::sources::{docker, mongo, redis};
use crate::store::Store;
use rpger_formats::snapshot::{Entry, EntryKind, Snapshot};
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where one source goes back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbTarget {
    /// A directory on this host, swapped whole; with `container`, that container (which
    /// bind-mounts it) is stopped around the swap.
    HostDir {
        /// The live directory.
        dir: PathBuf,
        /// The container using it.
        container: Option<String>,
    },
    /// A directory inside a container, written through the engine while the container is
    /// stopped.
    ContainerPath {
        /// Container name or id.
        container: String,
        /// Absolute path inside the container.
        path: String,
    },
    /// Redis in a container: its data directory (`CONFIG GET dir`) as [`DbTarget::ContainerPath`],
    /// then the key counts it loads compared with those recorded at backup.
    ContainerRedis {
        /// Container name or id.
        container: String,
        /// Redis port inside the container.
        port: u16,
    },
    /// MongoDB in a container: `mongorestore --archive --drop` fed the snapshot's archive.
    ContainerMongo {
        /// Container name or id.
        container: String,
    },
}

impl DbTarget {
    /// Where a source backed up through `input` goes back to.
    ///
    /// # Errors
    /// [`ErrorKind::Unsupported`] for sources this build cannot put back, with what to do instead.
    pub fn for_source(name: &str, input: &SourceInput) -> Result<DbTarget> {
        let unsupported = |why: &str| {
            Err(Error::new(
                ErrorKind::Unsupported,
                format!("source {name}: restoring into the database is not supported for {why}; `restore --only {name} DIR` writes its files into a directory"),
            ))
        };
        match input {
            SourceInput::Path(p) if p.is_dir() => Ok(DbTarget::HostDir { dir: p.clone(), container: None }),
            SourceInput::Path(p) => unsupported(&format!("{} (not a directory)", p.display())),
            SourceInput::PausedContainer { container, path } => {
                Ok(DbTarget::HostDir { dir: path.clone(), container: Some(container.clone()) })
            }
            SourceInput::DockerCopy { container, path } => Ok(DbTarget::ContainerPath { container: container.clone(), path: path.clone() }),
            SourceInput::DockerRedis { container, port, .. } => Ok(DbTarget::ContainerRedis { container: container.clone(), port: *port }),
            SourceInput::DockerMongoDump { container, .. } => Ok(DbTarget::ContainerMongo { container: container.clone() }),
            SourceInput::Redis(_) => unsupported(
                "a redis:// server (the server must be stopped and started around the copy, which this build does not do on a plain host)",
            ),
            SourceInput::Frozen { .. } => {
                unsupported("a frozen: directory (its server must be stopped, not frozen, while its files are replaced)")
            }
            SourceInput::MongoDump { .. } => unsupported(
                "a mongodump: command (use `rpger-store mongodb-archive SNAPSHOT --source NAME | mongorestore --archive --drop`)",
            ),
            SourceInput::Command { .. } | SourceInput::DockerExec { .. } | SourceInput::Stream { .. } => {
                unsupported("a command's or stdin's output (there is no database to put it back into)")
            }
        }
    }

    /// Checks, before anything is touched, what can be checked up front: the container exists,
    /// is not paused, would survive a stop, and (for Redis and MongoDB) runs; a host directory's
    /// parent exists.
    ///
    /// # Errors
    /// The first problem, naming the container or directory.
    pub fn check(&self) -> Result<()> {
        let container = match self {
            DbTarget::HostDir { dir, container } => {
                let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
                if !parent.is_dir() {
                    return Err(Error::new(ErrorKind::Missing, format!("{} does not exist", parent.display())));
                }
                match container {
                    Some(c) => c,
                    None => return Ok(()),
                }
            }
            DbTarget::ContainerPath { container, .. }
            | DbTarget::ContainerRedis { container, .. }
            | DbTarget::ContainerMongo { container } => container,
        };
        let d = docker::Docker::connect()?;
        let (running, paused) = d.state(container)?;
        if paused {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("container {container} is paused; unpause it (or let its backup finish) first"),
            ));
        }
        if matches!(self, DbTarget::ContainerRedis { .. } | DbTarget::ContainerMongo { .. }) && !running {
            return Err(Error::new(ErrorKind::InvalidInput, format!("container {container} is not running; start it first")));
        }
        if !matches!(self, DbTarget::ContainerMongo { .. }) && d.auto_removed(container)? {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("container {container} was started with --rm, so stopping it would delete it; recreate it without --rm first"),
            ));
        }
        Ok(())
    }

    /// One line saying what a restore into this target does, for the plan shown before it runs.
    pub fn describe(&self) -> String {
        match self {
            DbTarget::HostDir { dir, container: Some(c) } => {
                format!("stop container {c}, replace {} (the old one is kept beside it), start {c}", dir.display())
            }
            DbTarget::HostDir { dir, container: None } => {
                format!("replace {} (the old one is kept beside it; its writer must be stopped)", dir.display())
            }
            DbTarget::ContainerPath { container, path } => {
                format!("stop container {container}, save {path} into the keep directory, write the snapshot's files into it, start {container}")
            }
            DbTarget::ContainerRedis { container, .. } => format!(
                "stop container {container}, save Redis's data files into the keep directory, write the snapshot's, start {container}, compare its key counts"
            ),
            DbTarget::ContainerMongo { container } => format!(
                "dump the current databases of container {container} into the keep directory, then `mongorestore --archive --drop` the snapshot's archive in it"
            ),
        }
    }
}

/// Options of one restore into a database.
#[derive(Debug, Clone)]
pub struct DbRestoreOptions {
    /// Snapshot name or `latest`.
    pub snapshot: String,
    /// The source to put back.
    pub source: String,
    /// Where it goes.
    pub target: DbTarget,
    /// Where the staging copy is made (the system's temporary directory when `None`; host
    /// directories are always staged beside themselves, so the swap is a rename).
    pub scratch: Option<PathBuf>,
    /// Where what a container path or MongoDB held before is saved (created if missing).
    pub keep_dir: PathBuf,
    /// How long a container may take to stop before it is killed.
    pub stop_grace: Duration,
    /// How long a database may take to come back and load.
    pub timeout: Duration,
    /// How long to wait for a conflicting store lock.
    pub lock_wait: Duration,
}

/// What a restore into a database did.
#[derive(Debug, Clone, Default)]
pub struct DbRestoreReport {
    /// The snapshot it came from (`latest` resolved).
    pub snapshot: String,
    /// The source.
    pub source: String,
    /// What was done, in a sentence.
    pub done: String,
    /// Where the data it replaced is kept.
    pub kept: Option<PathBuf>,
    /// Things the operator should know that did not stop the restore.
    pub warnings: Vec<String>,
}

/// Puts one source of a snapshot back into its database.
///
/// # Errors
/// Anything that stopped it, naming the snapshot, source, directory or container. An error
/// raised before the live data was touched leaves it as it was; after, the message says what
/// was replaced and where the old data is kept.
pub fn restore_into(store: &Store, opts: &DbRestoreOptions, progress: &dyn Progress) -> Result<DbRestoreReport> {
    let snap = store.read_snapshot(&opts.snapshot)?;
    let Some(src) = snap.sources.iter().find(|s| s.name == opts.source) else {
        return Err(Error::new(ErrorKind::InvalidInput, format!("snapshot {} has no source {}", snap.name, opts.source)));
    };
    let manifest = store.read_manifest(&src.manifest)?;
    let mut report = DbRestoreReport { snapshot: snap.name.clone(), source: opts.source.clone(), ..Default::default() };
    let what = format!("restore {} of {} into", opts.source, snap.name);
    match &opts.target {
        DbTarget::HostDir { dir, container } => into_host_dir(store, &snap, opts, dir, container.as_deref(), &mut report, progress)
            .map_err(|e| e.context(format!("{what} {}", dir.display())))?,
        DbTarget::ContainerPath { container, path } => {
            into_container(store, &snap, opts, &manifest.entries, container, path, &mut report, progress)
                .map_err(|e| e.context(format!("{what} {path} of container {container}")))?;
        }
        DbTarget::ContainerRedis { container, port } => {
            into_redis(store, &snap, opts, &manifest.entries, container, *port, &mut report, progress)
                .map_err(|e| e.context(format!("{what} Redis in container {container}")))?
        }
        DbTarget::ContainerMongo { container } => into_mongo(store, &snap, opts, container, &mut report)
            .map_err(|e| e.context(format!("{what} MongoDB in container {container}")))?,
    }
    Ok(report)
}

/// Restores the source into `staging/<source>` and insists every file came back whole.
fn stage(
    store: &Store,
    snap: &Snapshot,
    opts: &DbRestoreOptions,
    staging: &Path,
    progress: &dyn Progress,
) -> Result<restore::RestoreReport> {
    let r = restore::restore(
        store,
        &RestoreOptions {
            snapshot: snap.name.clone(),
            target: staging.to_path_buf(),
            only: Some(opts.source.clone()),
            overwrite: false,
            lock_wait: opts.lock_wait,
        },
        progress,
    )?;
    if !r.failures.is_empty() {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!(
                "{} file(s) could not be read back out of the store, so the live data was not touched: {}",
                r.failures.len(),
                r.failures.join("; ")
            ),
        ));
    }
    Ok(r)
}

/// A scratch directory for staging, under `opts.scratch` or the system's temporary directory.
fn scratch(opts: &DbRestoreOptions) -> Result<tempfile::TempDir> {
    let b = tempfile::Builder::new().prefix("rpger-store-restore-db-").to_owned();
    match &opts.scratch {
        Some(d) => b.tempdir_in(d),
        None => b.tempdir(),
    }
    .map_err(|e| Error::with_cause(ErrorKind::Io, "create a scratch directory for the staging copy", e))
}

/// `base.before-restore-<time>` (or `-2`, `-3`... when taken) in `parent`.
fn kept_name(parent: &Path, base: &str, ext: &str) -> PathBuf {
    let t = chrono::Local::now().format("%Y-%m-%d_%H-%M-%S");
    let mut n = 1;
    loop {
        let suffix = if n == 1 { String::new() } else { format!("-{n}") };
        let p = parent.join(format!("{base}.before-restore-{t}{suffix}{ext}"));
        if std::fs::symlink_metadata(&p).is_err() {
            return p;
        }
        n += 1;
    }
}

/// Stops `container` when it runs; says whether it has to be started again.
fn stop_if_running(d: &docker::Docker, container: &str, grace: Duration) -> Result<bool> {
    if d.auto_removed(container)? {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("container {container} was started with --rm, so stopping it would delete it; recreate it without --rm first"),
        ));
    }
    match d.state(container)? {
        (_, true) => Err(Error::new(
            ErrorKind::InvalidInput,
            format!("container {container} is paused; unpause it (or let its backup finish) first"),
        )),
        (true, false) => d.stop(container, grace).map(|()| true),
        (false, false) => Ok(false),
    }
}

fn into_host_dir(
    store: &Store,
    snap: &Snapshot,
    opts: &DbRestoreOptions,
    dir: &Path,
    container: Option<&str>,
    report: &mut DbRestoreReport,
    progress: &dyn Progress,
) -> Result<()> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let base =
        dir.file_name().ok_or_else(|| Error::new(ErrorKind::InvalidInput, "the directory has no name"))?.to_string_lossy().into_owned();
    // Staged beside the live directory: same file system, so the swap is two renames.
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{base}.rpger-restore-"))
        .tempdir_in(parent)
        .map_err(|e| Error::io("create a staging directory in", parent, e))?;
    let staged = stage(store, snap, opts, staging.path(), progress)?;
    if !staged.owners_restored {
        report.warnings.push("owners (uid/gid) were not restored: that needs root".into());
    }
    let d = container.map(|_| docker::Docker::connect()).transpose()?;
    let restart = match (&d, container) {
        (Some(d), Some(c)) => stop_if_running(d, c, opts.stop_grace)?,
        _ => false,
    };
    let swapped = swap(dir, &staging.path().join(&opts.source), parent, &base);
    let started = match (&d, container) {
        (Some(d), Some(c)) if restart => d.start(c).map_err(|e| e.context("after the swap")),
        _ => Ok(()),
    };
    let kept = swapped?;
    started.map_err(|e| match &kept {
        Some(k) => e.context(format!("the directory was replaced (the old one is kept in {})", k.display())),
        None => e,
    })?;
    report.done = format!(
        "{} replaced by the snapshot's {} files ({} bytes){}",
        dir.display(),
        staged.files,
        staged.bytes,
        match container {
            Some(c) if restart => format!("; container {c} stopped and started again"),
            Some(c) => format!("; container {c} was not running and is left stopped"),
            None => String::new(),
        }
    );
    report.kept = kept;
    Ok(())
}

/// Moves `dir` aside (when it exists) and `staged` into its place; on a failed second rename
/// the first is undone. Returns where the old directory went.
fn swap(dir: &Path, staged: &Path, parent: &Path, base: &str) -> Result<Option<PathBuf>> {
    let kept = if std::fs::symlink_metadata(dir).is_ok() {
        let kept = kept_name(parent, base, "");
        std::fs::rename(dir, &kept).at("move aside (is it a mount point?)", dir)?;
        Some(kept)
    } else {
        None
    };
    if let Err(e) = std::fs::rename(staged, dir) {
        if let Some(k) = &kept {
            let _ = std::fs::rename(k, dir);
        }
        return Err(Error::io("move the restored copy into place at", dir, e));
    }
    crate::fsutil::fsync_dir(parent)?;
    Ok(kept)
}

#[allow(clippy::too_many_arguments)]
fn into_container(
    store: &Store,
    snap: &Snapshot,
    opts: &DbRestoreOptions,
    entries: &[Entry],
    container: &str,
    path: &str,
    report: &mut DbRestoreReport,
    progress: &dyn Progress,
) -> Result<bool> {
    let staging = scratch(opts)?;
    let staged = stage(store, snap, opts, staging.path(), progress)?;
    let d = docker::Docker::connect()?;
    let restart = stop_if_running(&d, container, opts.stop_grace)?;
    let written = save_and_write(opts, entries, &staging.path().join(&opts.source), container, path, report);
    let started = if restart { d.start(container) } else { Ok(()) };
    written?;
    started.map_err(|e| match &report.kept {
        Some(k) => e.context(format!("the files were written (what the path held is kept in {})", k.display())),
        None => e,
    })?;
    report.done = format!(
        "{path} of container {container} holds the snapshot's {} files ({} bytes){}",
        staged.files,
        staged.bytes,
        if restart {
            format!("; container {container} stopped and started again")
        } else {
            format!("; container {container} was not running and is left stopped")
        }
    );
    report.warnings.push(format!("files in {path} that the snapshot does not hold were left in place"));
    Ok(restart)
}

/// With the container stopped: saves `path` into the keep directory, then writes the staged
/// files in. A failed write puts the saved archive back.
fn save_and_write(
    opts: &DbRestoreOptions,
    entries: &[Entry],
    staged: &Path,
    container: &str,
    path: &str,
    report: &mut DbRestoreReport,
) -> Result<()> {
    std::fs::create_dir_all(&opts.keep_dir).at("create the keep directory", &opts.keep_dir)?;
    let label: String =
        format!("{container}{path}").chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect();
    let kept = kept_name(&opts.keep_dir, &label, ".tar");
    {
        let (mut r, task) = docker::download(container, path)?;
        let mut f = std::fs::File::create(&kept).at("create", &kept)?;
        let copied = std::io::copy(&mut r, &mut f).at("write", &kept);
        drop(r);
        task.finish().map_err(|e| e.context("save the data it replaces"))?;
        copied?;
        f.sync_all().at("sync", &kept)?;
    }
    report.kept = Some(kept.clone());
    let (w, task) = docker::upload(container, path)?;
    let sent = write_tar(w, entries, staged);
    match task.finish().and(sent) {
        Ok(()) => Ok(()),
        Err(e) => {
            // The archive of the old content unpacks into the parent of `path`.
            let parent = path.rsplit_once('/').map(|(p, _)| if p.is_empty() { "/" } else { p }).unwrap_or("/");
            let back = docker::upload(container, parent).and_then(|(mut w, task)| {
                // The writer is closed before the task is waited for, whatever happened.
                let copied = std::fs::File::open(&kept).and_then(|mut f| std::io::copy(&mut f, &mut w));
                let closed = w.close();
                task.finish()?;
                copied.and(closed).map(drop).map_err(|e| Error::with_cause(ErrorKind::Io, "put the saved data back", e))
            });
            Err(match back {
                Ok(()) => e.context(format!("writing failed; what it held was put back from {}", kept.display())),
                Err(b) => e.context(format!("writing failed and putting back {} failed too ({b})", kept.display())),
            })
        }
    }
}

/// Streams the staged files as a tar archive whose headers carry the owners, modes and times
/// of the backup (the engine unpacks them as given).
fn write_tar(w: docker::EngineWriter, entries: &[Entry], staged: &Path) -> Result<()> {
    let io = |what: &str, e: std::io::Error| Error::with_cause(ErrorKind::Io, format!("stream {what} into the container"), e);
    let mut tar = tar::Builder::new(w);
    tar.follow_symlinks(false);
    for e in entries.iter().filter(|e| !e.path.is_empty()) {
        // Names are bytes (need not be UTF-8) and go into the archive as they are.
        let name = Path::new(OsStr::from_bytes(&e.path));
        let shown = name.display().to_string();
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode);
        h.set_uid(u64::from(e.uid));
        h.set_gid(u64::from(e.gid));
        h.set_mtime(u64::try_from(e.mtime_sec).unwrap_or(0));
        match &e.kind {
            EntryKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                tar.append_data(&mut h, name, std::io::empty()).map_err(|x| io(&shown, x))?;
            }
            EntryKind::File { size, .. } => {
                let p = staged.join(name);
                let f = std::fs::File::open(&p).at("read the staged copy of", &p)?;
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(*size);
                tar.append_data(&mut h, name, f).map_err(|x| io(&shown, x))?;
            }
            EntryKind::Symlink { target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                tar.append_link(&mut h, name, Path::new(OsStr::from_bytes(target))).map_err(|x| io(&shown, x))?;
            }
            EntryKind::Hardlink { target } => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                tar.append_link(&mut h, name, Path::new(OsStr::from_bytes(target))).map_err(|x| io(&shown, x))?;
            }
        }
    }
    let w = tar.into_inner().map_err(|x| io("the archive's end", x))?;
    w.close().map_err(|x| io("the archive's end", x))
}

#[allow(clippy::too_many_arguments)]
fn into_redis(
    store: &Store,
    snap: &Snapshot,
    opts: &DbRestoreOptions,
    entries: &[Entry],
    container: &str,
    port: u16,
    report: &mut DbRestoreReport,
    progress: &dyn Progress,
) -> Result<()> {
    if !entries.iter().any(|e| e.path == b"dump.rdb") {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("source {} holds no dump.rdb at its top: not a Redis backup", opts.source),
        ));
    }
    if docker::Docker::connect()?.state(container)? != (true, false) {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("container {container} is not running unpaused; start it first (its data directory is asked of the running server)"),
        ));
    }
    let spec = |host: String| redis::RedisSpec { host, port, data_dir: None, timeout: opts.timeout };
    // The data directory and the AOF setting are asked of the running server.
    let before = spec(docker::address(container)?);
    let dir = redis::config_get(&before, "dir")?.ok_or_else(|| {
        Error::new(
            ErrorKind::InvalidInput,
            format!("CONFIG GET dir is refused, so the data directory is unknown; use docker-copy:{container}:/DIR"),
        )
    })?;
    let aof = redis::config_get(&before, "appendonly")?.is_some_and(|v| v == "yes");
    let restarted = into_container(store, snap, opts, entries, container, &dir, report, progress)?;
    if !restarted {
        report.warnings.push("the container was not running, so the key counts were not compared".into());
        return Ok(());
    }
    // A restarted container may get a new address.
    let after = spec(docker::address(container)?);
    let start = Instant::now();
    let (mut keys, version) = loop {
        match redis::probe(&after)? {
            Some(got) => break got,
            None if start.elapsed() < opts.timeout => std::thread::sleep(Duration::from_millis(100)),
            None => {
                return Err(Error::new(
                    ErrorKind::Io,
                    format!("Redis did not answer within {:?} after the files were written", opts.timeout),
                ))
            }
        }
    };
    keys.sort();
    let recorded = crate::testrestore::recorded_keyspace(snap, &opts.source);
    let shown = |v: &[(String, u64)]| v.iter().map(|(db, n)| format!("{db} {n} keys")).collect::<Vec<_>>().join(", ");
    report.done.push_str(&format!("; Redis {version} loaded {}", if keys.is_empty() { "no keys".into() } else { shown(&keys) }));
    if recorded.is_empty() {
        report.warnings.push("the snapshot recorded no key counts to compare".into());
    } else if keys == recorded {
        report.done.push_str(", as recorded at backup");
    } else if aof {
        // The AOF copied with the dump may hold writes made after the save whose counts were recorded.
        report.warnings.push(format!("it loaded its AOF, which may hold writes made after the recorded save ({})", shown(&recorded)));
    } else {
        return Err(Error::new(
            ErrorKind::Corrupt,
            format!(
                "Redis loaded {} but the backup recorded {}; what it held is kept in {}",
                shown(&keys),
                shown(&recorded),
                report.kept.as_ref().map(|k| k.display().to_string()).unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

fn into_mongo(store: &Store, snap: &Snapshot, opts: &DbRestoreOptions, container: &str, report: &mut DbRestoreReport) -> Result<()> {
    // The whole archive is built and checked before anything is dropped.
    let staging = scratch(opts)?;
    let archive = staging.path().join("snapshot.archive");
    {
        let f = std::fs::File::create(&archive).at("create", &archive)?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, f);
        mongo::export_archive(store, &snap.name, &opts.source, &mut w, opts.lock_wait)?;
        w.flush().at("write", &archive)?;
    }
    std::fs::create_dir_all(&opts.keep_dir).at("create the keep directory", &opts.keep_dir)?;
    let kept = kept_name(&opts.keep_dir, &format!("{container}-mongodump"), ".archive");
    docker::with_mongo_uri(container, "mongodump", |auth| {
        let mut argv = vec!["mongodump".to_string(), "--archive".into(), "--numParallelCollections=1".into()];
        argv.extend(auth);
        let (mut r, task) = docker::exec(container, argv, vec![])?;
        let mut f = std::fs::File::create(&kept).at("create", &kept)?;
        let copied = std::io::copy(&mut r, &mut f).at("write", &kept);
        drop(r);
        task.finish().map_err(|e| e.context("dump what it holds before replacing it"))?;
        copied?;
        f.sync_all().at("sync", &kept)
    })?;
    report.kept = Some(kept.clone());
    let said = docker::with_mongo_uri(container, "mongorestore", |auth| {
        let mut argv = vec!["mongorestore".to_string(), "--archive".into(), "--drop".into()];
        argv.extend(auth);
        let (mut w, task) = docker::exec_fed(container, argv, vec![])?;
        // The writer is closed before the task is waited for, whatever happened.
        let sent = std::fs::File::open(&archive).and_then(|mut f| std::io::copy(&mut f, &mut w));
        let closed = w.close();
        let said = task.finish()?;
        sent.and(closed).map_err(|e| Error::with_cause(ErrorKind::Io, "stream the archive", e))?;
        Ok(said)
    })
    .map_err(|e| e.context(format!("what MongoDB held before is kept in {}", kept.display())))?;
    let last = said.rsplit(" | ").find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
    report.done = format!(
        "mongorestore --archive --drop in container {container} took the snapshot's archive{}",
        if last.is_empty() { String::new() } else { format!(": {last}") }
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_swap_puts_the_live_directory_back() {
        let t = tempfile::tempdir().unwrap();
        let live = t.path().join("chroma");
        std::fs::create_dir(&live).unwrap();
        std::fs::write(live.join("chroma.sqlite3"), b"live").unwrap();
        let err = swap(&live, &t.path().join("no-staged-copy"), t.path(), "chroma").unwrap_err();
        assert!(err.to_string().contains("move the restored copy into place"), "{err}");
        assert_eq!(std::fs::read(live.join("chroma.sqlite3")).unwrap(), b"live");
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1, "nothing left beside it");
    }

    #[test]
    fn a_swap_keeps_the_old_directory_under_a_name_not_yet_taken() {
        let t = tempfile::tempdir().unwrap();
        let live = t.path().join("redis");
        for round in 0..3 {
            std::fs::create_dir_all(&live).unwrap();
            std::fs::write(live.join("dump.rdb"), format!("night {round}")).unwrap();
            let staged = t.path().join("staged");
            std::fs::create_dir(&staged).unwrap();
            std::fs::write(staged.join("dump.rdb"), b"snapshot").unwrap();
            let kept = swap(&live, &staged, t.path(), "redis").unwrap().unwrap();
            assert_eq!(std::fs::read(kept.join("dump.rdb")).unwrap(), format!("night {round}").as_bytes());
            std::fs::remove_dir_all(&live).unwrap();
        }
        // Three swaps within a second or so: three distinct kept directories.
        assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 3);
    }

    #[test]
    fn sources_that_cannot_go_back_are_refused_with_what_to_do() {
        let inputs = [
            SourceInput::Redis(redis::RedisSpec::parse("redis://127.0.0.1:6379").unwrap()),
            SourceInput::Frozen { path: "/data".into(), pid: 1 },
            SourceInput::MongoDump { command: "mongodump --archive".into() },
            SourceInput::Command { file_name: "out".into(), command: "true".into() },
            SourceInput::Path("/no/such/dir".into()),
        ];
        for input in &inputs {
            let e = DbTarget::for_source("db", input).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::Unsupported);
            assert!(e.to_string().contains("restore --only db"), "{e}");
        }
        let t = DbTarget::for_source("chroma", &SourceInput::PausedContainer { container: "c".into(), path: "/d/chroma".into() }).unwrap();
        assert_eq!(t, DbTarget::HostDir { dir: "/d/chroma".into(), container: Some("c".into()) });
        let t = DbTarget::for_source("m", &SourceInput::DockerMongoDump { container: "c".into(), args: vec!["--db=x".into()] }).unwrap();
        assert_eq!(t, DbTarget::ContainerMongo { container: "c".into() });
    }
}
