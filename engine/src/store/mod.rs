//! The on-disk store: layout, config, manifests and snapshot files. Packs and the index live in
//! submodules.
//!
//! ```text
//! config              format version, store id, chunker parameters, compression level
//! packs/xx/<id>       pack files (id = BLAKE3 of the pack bytes)
//! index/<id>          index segments (id = BLAKE3 of the segment bytes)
//! manifests/xx/<id>   per-source manifests (id = BLAKE3 of the manifest file)
//! snapshots/<name>    one file per snapshot, written last: the commit point
//! locks/              flock target + one info file per holder
//! tmp/                temp files before they are renamed into place
//! ```

pub mod index;
pub mod lock;
pub mod pack;

use crate::chunking::ChunkParams;
use crate::compress;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::fsutil;
use rpger_formats::config::StoreConfig;
use rpger_formats::snapshot::{self, Manifest, Snapshot};
use rpger_formats::Id;
use std::fs;
use std::path::{Path, PathBuf};

/// Largest manifest file accepted on read.
const MAX_MANIFEST_FILE: u64 = 1 << 30;
/// Largest decompressed manifest accepted on read.
const MAX_MANIFEST_PAYLOAD: usize = 4 << 30;
/// Largest snapshot file accepted on read.
const MAX_SNAPSHOT_FILE: u64 = 16 << 20;
/// Largest config file accepted on read.
const MAX_CONFIG_FILE: u64 = 64 << 10;

/// zstd level of new whole chunks when `init` is not told otherwise. Level 2 against 3, measured
/// in the engine (BENCHMARKS.md): the shared dataset's first night 1.14-1.4 x faster and 7 nights
/// 0.4 % larger (685 against 682 MiB); a 645 MiB source tree as fast and 3 % larger (106 against
/// 103 MiB), its backup bound by opening files rather than by compression. Database dumps are
/// what the store is for. Deltas use level 1 whatever this says (`pipeline::DELTA_LEVEL`).
pub const DEFAULT_ZSTD_LEVEL: i32 = 2;

/// Settings chosen at `init`.
#[derive(Debug, Clone, Copy)]
pub struct InitOptions {
    /// Chunker parameters.
    pub chunk: ChunkParams,
    /// zstd level for new blobs.
    pub zstd_level: i32,
    /// Target pack size in bytes.
    pub pack_target_size: u32,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions { chunk: ChunkParams::DEFAULT, zstd_level: DEFAULT_ZSTD_LEVEL, pack_target_size: 32 << 20 }
    }
}

/// Where a snapshot name sorts: by its second, then by the `_N` suffix of runs in that second
/// taken as a number (`_10` after `_9`).
fn snapshot_order(name: &str) -> (&str, u64) {
    match name.rsplit_once('_') {
        Some((base, n)) if !n.is_empty() && n.len() < 10 && n.bytes().all(|c| c.is_ascii_digit()) => (base, n.parse().unwrap_or(0)),
        _ => (name, 0),
    }
}

/// An opened store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    config: StoreConfig,
}

const DIRS: [&str; 7] = ["packs", "index", "manifests", "snapshots", "features", "locks", "tmp"];

impl Store {
    /// Creates a new store in `root` (which may exist if empty).
    ///
    /// # Errors
    /// [`ErrorKind::AlreadyExists`] when `root` already holds a store; [`ErrorKind::InvalidInput`]
    /// when it holds anything else; I/O errors with the path.
    pub fn init(root: &Path, opts: InitOptions) -> Result<Store> {
        if root.join("config").exists() {
            return Err(Error::new(ErrorKind::AlreadyExists, format!("{} already holds an rpger-store store", root.display())));
        }
        if let Ok(mut rd) = fs::read_dir(root) {
            if rd.next().is_some() {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("{} is not empty and is not a store; refusing to init there", root.display()),
                ));
            }
        }
        fs::create_dir_all(root).at("create store directory", root)?;
        for d in DIRS {
            let p = root.join(d);
            fs::create_dir_all(&p).at("create", &p)?;
        }
        let config = StoreConfig {
            store_id: random_id()?,
            chunk_min: opts.chunk.min,
            chunk_avg: opts.chunk.avg,
            chunk_max: opts.chunk.max,
            zstd_level: opts.zstd_level,
            pack_target_size: opts.pack_target_size,
            created_unix_ns: now_ns(),
        };
        config.validate().map_err(|e| Error::with_cause(ErrorKind::InvalidInput, "store settings", e))?;
        // config is written last: it is what makes the directory a store.
        fsutil::write_atomic(&root.join("tmp"), &root.join("config"), &config.encode())?;
        Ok(Store { root: root.to_path_buf(), config })
    }

    /// Opens an existing store.
    ///
    /// # Errors
    /// [`ErrorKind::NotAStore`] when there is no config; [`ErrorKind::Corrupt`] when it does not decode.
    pub fn open(root: &Path) -> Result<Store> {
        let cfg_path = root.join("config");
        if !cfg_path.is_file() {
            let why = if root.is_dir() { "it has no config file" } else { "it does not exist" };
            return Err(Error::new(
                ErrorKind::NotAStore,
                format!("{} is not an rpger-store store ({why}); create one with `rpger-store init`", root.display()),
            ));
        }
        let bytes = fsutil::read_limited(&cfg_path, MAX_CONFIG_FILE)?;
        let config = StoreConfig::decode(&bytes).map_err(|e| Error::corrupt(format!("store config {}", cfg_path.display()), e))?;
        for d in DIRS {
            let p = root.join(d);
            if !p.is_dir() {
                fs::create_dir_all(&p).at("create missing store directory", &p)?;
            }
        }
        Ok(Store { root: root.to_path_buf(), config })
    }

    /// The store directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The store's config.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Chunker parameters of this store.
    pub fn chunk_params(&self) -> ChunkParams {
        ChunkParams { min: self.config.chunk_min, avg: self.config.chunk_avg, max: self.config.chunk_max }
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub(crate) fn locks_dir(&self) -> PathBuf {
        self.root.join("locks")
    }

    /// Path of a pack file.
    pub fn pack_path(&self, id: &Id) -> PathBuf {
        let hex = id.to_hex();
        self.root.join("packs").join(&hex[..2]).join(hex)
    }

    fn manifest_path(&self, id: &Id) -> PathBuf {
        let hex = id.to_hex();
        self.root.join("manifests").join(&hex[..2]).join(hex)
    }

    /// Path of a snapshot file.
    pub fn snapshot_path(&self, name: &str) -> PathBuf {
        self.root.join("snapshots").join(name)
    }

    /// Stores a manifest (compressed, content-addressed) and returns its id. An identical
    /// manifest already stored costs nothing.
    ///
    /// # Errors
    /// I/O errors with the path.
    pub fn write_manifest(&self, m: &Manifest) -> Result<Id> {
        let payload = compress::compress_all(&m.to_payload(), self.config.zstd_level);
        let bytes = snapshot::seal_manifest(snapshot::MANIFEST_ZSTD, &payload);
        let id = Id::of(&bytes);
        let path = self.manifest_path(&id);
        if !path.exists() {
            let dir = path.parent().unwrap_or(&self.root);
            if !dir.is_dir() {
                fs::create_dir_all(dir).at("create", dir)?;
                fsutil::fsync_dir(&self.root.join("manifests"))?;
            }
            fsutil::write_atomic(&self.tmp_dir(), &path, &bytes)?;
        }
        Ok(id)
    }

    /// Reads and validates a manifest, checking its content address.
    ///
    /// # Errors
    /// [`ErrorKind::Missing`] or [`ErrorKind::Corrupt`] naming the manifest.
    pub fn read_manifest(&self, id: &Id) -> Result<Manifest> {
        let path = self.manifest_path(id);
        let bytes = fsutil::read_limited(&path, MAX_MANIFEST_FILE).map_err(|e| e.context(format!("manifest {}", id.short())))?;
        let what = || format!("manifest {}", path.display());
        if Id::of(&bytes) != *id {
            return Err(Error::new(ErrorKind::Corrupt, format!("{}: content does not match its id", what())));
        }
        let (comp, payload) = snapshot::open_manifest(&bytes).map_err(|e| Error::corrupt(what(), e))?;
        let plain;
        let payload = if comp == snapshot::MANIFEST_ZSTD {
            plain = compress::decompress_all(payload, MAX_MANIFEST_PAYLOAD).map_err(|e| e.context(what()))?;
            &plain[..]
        } else {
            payload
        };
        Manifest::from_payload(payload).map_err(|e| Error::corrupt(what(), e))
    }

    /// Names of all committed snapshots, oldest first. Temp files and foreign names are skipped.
    ///
    /// # Errors
    /// I/O errors reading the directory.
    pub fn list_snapshots(&self) -> Result<Vec<String>> {
        let dir = self.root.join("snapshots");
        let mut names = vec![];
        for e in fs::read_dir(&dir).at("list", &dir)? {
            let e = e.at("list", &dir)?;
            if let Some(n) = e.file_name().to_str() {
                if snapshot::validate_name(n).is_ok() {
                    names.push(n.to_string());
                }
            }
        }
        names.sort_by(|a, b| snapshot_order(a).cmp(&snapshot_order(b)));
        Ok(names)
    }

    /// Reads one snapshot; `latest` means the newest.
    ///
    /// # Errors
    /// [`ErrorKind::Missing`] when there is no such snapshot; [`ErrorKind::Corrupt`] when it does
    /// not decode or its name does not match its file name.
    pub fn read_snapshot(&self, name: &str) -> Result<Snapshot> {
        let name = if name == "latest" {
            self.list_snapshots()?
                .pop()
                .ok_or_else(|| Error::new(ErrorKind::Missing, format!("store {} has no snapshots yet", self.root.display())))?
        } else {
            snapshot::validate_name(name).map_err(|e| Error::new(ErrorKind::InvalidInput, format!("snapshot {e}")))?;
            name.to_string()
        };
        let path = self.snapshot_path(&name);
        if !path.exists() {
            return Err(Error::new(ErrorKind::Missing, format!("no snapshot named {name} in {}", self.root.display())));
        }
        let bytes = fsutil::read_limited(&path, MAX_SNAPSHOT_FILE)?;
        let s = Snapshot::decode(&bytes).map_err(|e| Error::corrupt(format!("snapshot {}", path.display()), e))?;
        if s.name != name {
            return Err(Error::new(ErrorKind::Corrupt, format!("snapshot {} says its name is {}", path.display(), s.name)));
        }
        Ok(s)
    }

    /// Commits a snapshot: the last write of a backup. If its name is taken (two runs in the same
    /// second) `_1`, `_2`, ... is appended. Returns the final snapshot.
    ///
    /// # Errors
    /// I/O errors with the path.
    pub fn commit_snapshot(&self, mut snap: Snapshot) -> Result<Snapshot> {
        let base = snap.name.clone();
        // After every snapshot of that second, so `latest` is the newest even when an earlier
        // one of them was forgotten and its name is free again.
        let after = self.list_snapshots()?.iter().map(|n| snapshot_order(n)).filter(|(b, _)| *b == base).map(|(_, n)| n + 1).max();
        for n in after.unwrap_or(0)..after.unwrap_or(0) + 10_000 {
            if n > 0 {
                snap.name = format!("{base}_{n}");
            }
            if fsutil::write_new(&self.tmp_dir(), &self.snapshot_path(&snap.name), &snap.encode())? {
                return Ok(snap);
            }
        }
        Err(Error::new(ErrorKind::Io, format!("could not find a free snapshot name after {base}")))
    }

    /// Bytes available to this user on the store's filesystem.
    ///
    /// # Errors
    /// When the filesystem cannot be queried.
    pub fn free_bytes(&self) -> Result<u64> {
        let v = rustix::fs::statvfs(&self.root).at("query free space of", &self.root)?;
        Ok(v.f_bavail.saturating_mul(v.f_frsize))
    }

    /// Total bytes of all files in the store.
    ///
    /// # Errors
    /// I/O errors while walking.
    pub fn disk_usage(&self) -> Result<u64> {
        fn walk(p: &Path) -> std::io::Result<u64> {
            let mut total = 0;
            for e in fs::read_dir(p)? {
                let e = e?;
                let md = e.metadata()?;
                total += if md.is_dir() { walk(&e.path())? } else { md.len() };
            }
            Ok(total)
        }
        walk(&self.root).at("measure", &self.root)
    }
}

/// 32 random bytes from the kernel.
fn random_id() -> Result<Id> {
    let mut b = [0u8; 32];
    let mut filled = 0;
    while filled < b.len() {
        filled += rustix::rand::getrandom(&mut b[filled..], rustix::rand::GetRandomFlags::empty())
            .map_err(|e| Error::with_cause(ErrorKind::Io, "getrandom", e))?;
    }
    Ok(Id(b))
}

/// Now, Unix nanoseconds.
pub(crate) fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(name: &str) -> Snapshot {
        Snapshot {
            name: name.into(),
            time_unix_ns: 0,
            hostname: "h".into(),
            tool_version: "t".into(),
            sources: vec![],
            new_stored_bytes: 0,
            new_raw_bytes: 0,
            labels: vec![],
        }
    }

    #[test]
    fn runs_in_one_second_sort_in_order_and_latest_is_the_newest() {
        let t = tempfile::tempdir().unwrap();
        let s = Store::init(&t.path().join("s"), InitOptions::default()).unwrap();
        let base = "2026-12-01_05-41-09";
        let names: Vec<String> = (0..12).map(|_| s.commit_snapshot(snap(base)).unwrap().name).collect();
        assert_eq!(names[0], base);
        assert_eq!(names[11], format!("{base}_11"));
        s.commit_snapshot(snap("2026-12-01_05-41-08")).unwrap();
        let mut listed = s.list_snapshots().unwrap();
        assert_eq!(listed.remove(0), "2026-12-01_05-41-08");
        assert_eq!(listed, names, "_10 sorts after _9");
        // The first of the second forgotten: the next run must not take its free name.
        fs::remove_file(s.snapshot_path(base)).unwrap();
        let next = s.commit_snapshot(snap(base)).unwrap().name;
        assert_eq!(next, format!("{base}_12"));
        assert_eq!(s.read_snapshot("latest").unwrap().name, next);
    }
}
