//! Durable file writes: temp name + fsync + rename + fsync of the directory.

use crate::error::{IoContext, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temp-file path in `tmp_dir` unique to this process and call.
pub(crate) fn tmp_path(tmp_dir: &Path, what: &str) -> PathBuf {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    tmp_dir.join(format!("{what}-{}-{n}.tmp", std::process::id()))
}

/// fsyncs a directory so a rename inside it is durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).at("fsync directory", dir)
}

/// Writes `bytes` to a new temp file in `tmp_dir` and fsyncs it.
fn write_tmp(tmp_dir: &Path, what: &str, bytes: &[u8]) -> Result<PathBuf> {
    let tmp = tmp_path(tmp_dir, what);
    let res = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp).at("create", &tmp)?;
        f.write_all(bytes).at("write", &tmp)?;
        f.sync_all().at("fsync", &tmp)
    })();
    match res {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Writes `bytes` to `dest` atomically: write to a temp file in `tmp_dir`, fsync, rename,
/// fsync the destination directory. `dest`'s parent must exist.
pub(crate) fn write_atomic(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = write_tmp(tmp_dir, "write", bytes)?;
    let res = fs::rename(&tmp, dest).at("rename into place", dest).and_then(|_| fsync_dir(dest.parent().unwrap_or(Path::new("."))));
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// Like [`write_atomic`] but never replaces an existing `dest`: returns `Ok(false)` when it
/// already exists. Uses link(2), which fails atomically if the name is taken.
pub(crate) fn write_new(tmp_dir: &Path, dest: &Path, bytes: &[u8]) -> Result<bool> {
    let tmp = write_tmp(tmp_dir, "new", bytes)?;
    let res = match fs::hard_link(&tmp, dest) {
        Ok(()) => fsync_dir(dest.parent().unwrap_or(Path::new("."))).map(|_| true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(crate::Error::io("link into place", dest, e)),
    };
    let _ = fs::remove_file(&tmp);
    res
}

/// Reads a whole file, refusing files larger than `limit` (a corrupt store must not make us
/// allocate without bound).
pub(crate) fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>> {
    let len = fs::metadata(path).at("stat", path)?.len();
    if len > limit {
        return Err(crate::Error::new(
            crate::ErrorKind::Corrupt,
            format!("{} is {len} bytes, more than the {limit}-byte limit for such a file", path.display()),
        ));
    }
    fs::read(path).at("read", path)
}
