//! test-restore: the last rung of the verification ladder. A snapshot's Redis source is
//! restored into a scratch directory and loaded by a real `redis-server` started for the
//! purpose on 127.0.0.1; its key counts per database must be the ones `INFO keyspace` reported
//! when the backup was taken. The server and the scratch copy are always removed.
//!
//! MongoDB (needs `mongod` and `mongorestore`) and Chroma (needs the Chroma server) are not
//! loaded by this build: they are reported as not tested, with `verify --dumps` as what does
//! check their files.

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::progress::Progress;
use crate::restore::{self, RestoreOptions};
use crate::sources::redis;
use crate::store::Store;
use rpger_formats::snapshot::{EntryKind, Snapshot};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Options of one test-restore.
#[derive(Debug, Clone)]
pub struct TestRestoreOptions {
    /// Snapshot name or `latest`.
    pub snapshot: String,
    /// Only this source.
    pub only: Option<String>,
    /// The `redis-server` to load Redis dumps with.
    pub redis_server: PathBuf,
    /// When set, Redis dumps are loaded by `redis-server` in a temporary container of this
    /// local image (the stack's own Redis image) instead of `redis_server` on this host.
    pub redis_image: Option<String>,
    /// Where the snapshot is restored for the test (the system's temporary directory when
    /// `None`); removed afterwards.
    pub scratch: Option<PathBuf>,
    /// Longest wait for a server to load its data.
    pub timeout: Duration,
    /// How long to wait for a conflicting lock.
    pub lock_wait: Duration,
}

/// What happened to one source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The database loaded the restored dump and holds what the snapshot recorded.
    Passed(String),
    /// It did not load, or holds something else.
    Failed(String),
    /// This build cannot load this kind of source.
    NotTested(String),
}

/// One source's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceResult {
    /// Source name.
    pub source: String,
    /// What happened.
    pub outcome: Outcome,
}

/// Test-restores a snapshot's sources.
///
/// # Errors
/// When the test cannot run: unknown snapshot or source, no scratch directory, a restore that
/// fails. A dump that does not load is a [`Outcome::Failed`] result.
pub fn test_restore(store: &Store, opts: &TestRestoreOptions, progress: &dyn Progress) -> Result<(String, Vec<SourceResult>)> {
    // `read_snapshot` resolves `latest`; the name it gives is the one every later step uses.
    let snap = store.read_snapshot(&opts.snapshot)?;
    let name = snap.name.clone();
    if let Some(only) = &opts.only {
        if !snap.sources.iter().any(|s| &s.name == only) {
            return Err(Error::new(ErrorKind::InvalidInput, format!("snapshot {name} has no source {only}")));
        }
    }
    let scratch = match &opts.scratch {
        Some(d) => tempfile::Builder::new().prefix("rpger-store-test-restore-").tempdir_in(d),
        None => tempfile::Builder::new().prefix("rpger-store-test-restore-").tempdir(),
    }
    .map_err(|e| Error::with_cause(ErrorKind::Io, "create a scratch directory for the test-restore", e))?;
    let mut out = Vec::new();
    for src in snap.sources.iter().filter(|s| opts.only.as_ref().is_none_or(|o| &s.name == o)) {
        let manifest = store.read_manifest(&src.manifest)?;
        let paths: Vec<&[u8]> =
            manifest.entries.iter().filter(|e| matches!(e.kind, EntryKind::File { .. })).map(|e| e.path.as_slice()).collect();
        let outcome = if paths.contains(&&b"dump.rdb"[..]) {
            let target = scratch.path().join(out.len().to_string());
            let r = restore::restore(
                store,
                &RestoreOptions {
                    snapshot: name.clone(),
                    target: target.clone(),
                    only: Some(src.name.clone()),
                    overwrite: false,
                    lock_wait: opts.lock_wait,
                },
                progress,
            )
            .map_err(|e| e.context(format!("restore {} of {name} for the test", src.name)))?;
            let dir = target.join(&src.name);
            let recorded = recorded_keyspace(&snap, &src.name);
            if !r.failures.is_empty() {
                Outcome::Failed(format!("the restore could not write: {}", r.failures.join("; ")))
            } else if let Some(image) = &opts.redis_image {
                load_redis_in_container(&dir, &recorded, image, opts)?
            } else {
                load_redis(&dir, &recorded, opts)?
            }
        } else if paths.iter().any(|p| p.starts_with(b"mongodb_backup/") || p.ends_with(b".archive")) {
            Outcome::NotTested("loading MongoDB dumps needs mongod and mongorestore, which this build does not drive yet; `verify --dumps` checks every document".into())
        } else if paths.iter().any(|p| p.ends_with(b"chroma.sqlite3")) {
            Outcome::NotTested("loading Chroma needs the Chroma server, which this build does not drive yet; `verify --dumps` runs SQLite's integrity_check".into())
        } else {
            Outcome::NotTested("no database dump this build can load (a Redis source holds dump.rdb at its top)".into())
        };
        out.push(SourceResult { source: src.name.clone(), outcome });
    }
    Ok((name, out))
}

/// `dbN -> keys` as `INFO keyspace` said when the backup was taken (`redis://` and
/// `docker-redis:` sources record it; a plain directory has none).
pub(crate) fn recorded_keyspace(snap: &Snapshot, source: &str) -> Vec<(String, u64)> {
    let prefix = format!("{source}.keyspace.");
    let mut v: Vec<(String, u64)> =
        snap.labels.iter().filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), redis::keys_of(v)?))).collect();
    v.sort();
    v
}

/// A redis-server that is killed when dropped, whatever happened.
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `redis-server` on the restored directory with only `dump.rdb` (no AOF, no saving)
/// and compares what it loaded with `recorded`.
///
/// # Errors
/// When the server cannot be started at all (no binary, no free port): the test did not run.
fn load_redis(dir: &Path, recorded: &[(String, u64)], opts: &TestRestoreOptions) -> Result<Outcome> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| Error::with_cause(ErrorKind::Io, "find a free port on 127.0.0.1", e))?
        .port();
    let log = dir.join("redis-server.log");
    let child = std::fs::File::create(&log).at("create", &log).and_then(|f| {
        Command::new(&opts.redis_server)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--protected-mode", "yes", "--daemonize", "no"])
            .args(["--appendonly", "no", "--save", "", "--dbfilename", "dump.rdb", "--dir"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(f)
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                Error::with_cause(
                    ErrorKind::Missing,
                    format!("cannot run {} (--redis-server sets another)", opts.redis_server.display()),
                    e,
                )
            })
    })?;
    let mut server = Server { child };
    let start = Instant::now();
    let (mut keys, version) = loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Ok(Outcome::Failed(format!("redis-server exited ({status}) without loading dump.rdb: {}", log_tail(&log))));
        }
        match redis::probe_own(port) {
            Ok(Some(got)) => break got,
            Ok(None) if start.elapsed() < opts.timeout => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                return Ok(Outcome::Failed(format!("redis-server had not loaded dump.rdb after {:?}: {}", opts.timeout, log_tail(&log))))
            }
            Err(e) => return Ok(Outcome::Failed(e.to_string())),
        }
    };
    let secs = start.elapsed().as_secs_f64();
    drop(server);
    Ok(compare(&mut keys, &version, secs, recorded, ""))
}

/// What a loaded server holds against what the backup recorded; `place` says where it ran when
/// not on this host.
fn compare(keys: &mut [(String, u64)], version: &str, secs: f64, recorded: &[(String, u64)], place: &str) -> Outcome {
    keys.sort();
    let shown = |v: &[(String, u64)]| {
        if v.is_empty() {
            "no keys".to_string()
        } else {
            v.iter().map(|(db, n)| format!("{db} {n} keys")).collect::<Vec<_>>().join(", ")
        }
    };
    let loaded = format!("redis-server {version}{place} loaded dump.rdb in {secs:.1} s: {}", shown(keys));
    if recorded.is_empty() {
        Outcome::Passed(format!("{loaded} (the snapshot recorded no key counts to compare)"))
    } else if keys == recorded {
        Outcome::Passed(format!("{loaded}, as recorded at backup"))
    } else {
        Outcome::Failed(format!("{loaded}, but the backup recorded {}", shown(recorded)))
    }
}

/// [`load_redis`] in a temporary container of `image`: the restored directory is bind-mounted
/// at /data and `redis-server` is run there with only `dump.rdb` (no AOF, no saving); the
/// container is removed on every path (a watchdog removes it even if we are killed).
///
/// # Errors
/// When the container cannot be started at all (no engine, no such local image).
fn load_redis_in_container(dir: &Path, recorded: &[(String, u64)], image: &str, opts: &TestRestoreOptions) -> Result<Outcome> {
    use crate::sources::docker;
    let dir = std::fs::canonicalize(dir).at("resolve", dir)?;
    let name = format!("rpger-store-test-restore-{}-{}", std::process::id(), crate::store::now_ns());
    let args =
        ["--dir", "/data", "--port", "6379", "--protected-mode", "no", "--appendonly", "no", "--save", "", "--dbfilename", "dump.rdb"];
    let c = docker::run_temporary(
        &name,
        image,
        vec!["redis-server".into()],
        args.iter().map(|a| a.to_string()).collect(),
        vec![format!("{}:/data", dir.display())],
    )?;
    let start = Instant::now();
    let why = |c: &docker::Temporary| why_from_log(&c.log_text(50));
    let (mut keys, version) = loop {
        if !c.running()? {
            return Ok(Outcome::Failed(format!(
                "redis-server in container {} ({image}) exited without loading dump.rdb: {}",
                c.name(),
                why(&c)
            )));
        }
        let spec = redis::RedisSpec { host: c.address()?, port: 6379, data_dir: None, timeout: opts.timeout };
        match redis::probe(&spec) {
            Ok(Some(got)) => break got,
            Ok(None) if start.elapsed() < opts.timeout => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                return Ok(Outcome::Failed(format!(
                    "redis-server in container {} had not loaded dump.rdb after {:?}: {}",
                    c.name(),
                    opts.timeout,
                    why(&c)
                )))
            }
            Err(e) => return Ok(Outcome::Failed(e.to_string())),
        }
    };
    let secs = start.elapsed().as_secs_f64();
    drop(c);
    Ok(compare(&mut keys, &version, secs, recorded, &format!(" in a temporary container of {image}")))
}

/// Why the server stopped, from its log: its last warnings (`#` lines) other than the start-up
/// banner, else its last lines.
fn log_tail(log: &Path) -> String {
    why_from_log(&std::fs::read_to_string(log).unwrap_or_default())
}

/// [`log_tail`] of a log's text.
fn why_from_log(text: &str) -> String {
    let banner = ["oO0OoO0OoO0Oo", "Redis version=", "Configuration loaded", "Server initialized", "WARNING"];
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains(" # ") && !banner.iter().any(|b| l.contains(b))).collect();
    let lines: Vec<&str> = if warnings.is_empty() { text.lines().filter(|l| !l.trim().is_empty()).collect() } else { warnings };
    let tail = lines[lines.len().saturating_sub(2)..].join(" | ");
    if tail.is_empty() {
        "it logged nothing".into()
    } else {
        tail
    }
}
