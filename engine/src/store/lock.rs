//! Store locks: `flock` on `locks/lock` (the kernel releases it when a process dies, so a crash
//! never leaves a lock behind) plus one readable file per holder saying who holds it, so a
//! refused lock names its holder instead of being broken.

use crate::error::{Error, ErrorKind, IoContext, Result};
use rustix::fs::{flock, FlockOperation};
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Shared (backup, restore, verify) or exclusive (prune).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Many holders at once.
    Shared,
    /// One holder, nobody else.
    Exclusive,
}

/// A held lock; released on drop.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
    info_path: PathBuf,
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.info_path);
    }
}

fn hostname() -> String {
    rustix::system::uname().nodename().to_string_lossy().into_owned()
}

/// Takes the lock, waiting up to `wait` for a conflicting holder to finish.
///
/// # Errors
/// [`ErrorKind::Locked`] naming the holders when the wait runs out.
pub fn acquire(locks_dir: &Path, mode: LockMode, command: &str, wait: Duration) -> Result<StoreLock> {
    let path = locks_dir.join("lock");
    let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).at("open lock file", &path)?;
    let op = match mode {
        LockMode::Shared => FlockOperation::NonBlockingLockShared,
        LockMode::Exclusive => FlockOperation::NonBlockingLockExclusive,
    };
    let start = Instant::now();
    loop {
        match flock(&file, op) {
            Ok(()) => break,
            Err(rustix::io::Errno::WOULDBLOCK) if start.elapsed() < wait => std::thread::sleep(Duration::from_millis(100)),
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let holders = describe_holders(locks_dir);
                return Err(Error::new(
                    ErrorKind::Locked,
                    format!("store is locked by {holders} (lock file {}); it is released when that process ends", path.display()),
                ));
            }
            Err(e) => return Err(Error::io("lock", &path, e.into())),
        }
    }
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let info_path = locks_dir.join(format!("{}-{}-{seq}.info", hostname(), std::process::id()));
    let info = format!(
        "pid={}\nhost={}\ncommand={command}\nmode={}\nsince={}\n",
        std::process::id(),
        hostname(),
        if mode == LockMode::Shared { "shared" } else { "exclusive" },
        chrono::Utc::now().to_rfc3339(),
    );
    fs::write(&info_path, info).at("write lock info", &info_path)?;
    Ok(StoreLock { _file: file, info_path })
}

/// "pid 12 on host (backup, shared, since ...)" for every info file whose process is alive.
/// Info files of dead processes on this host are reported as stale, never deleted here.
fn describe_holders(locks_dir: &Path) -> String {
    let mut live = vec![];
    let me = hostname();
    if let Ok(rd) = fs::read_dir(locks_dir) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.ends_with(".info") {
                continue;
            }
            let text = fs::read_to_string(e.path()).unwrap_or_default();
            let field = |k: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap_or("?").to_string();
            let pid: i32 = field("pid").parse().unwrap_or(0);
            let host = field("host");
            let alive = host != me || rustix::process::Pid::from_raw(pid).is_some_and(|p| rustix::process::test_kill_process(p).is_ok());
            let desc = format!("pid {pid} on {host} ({}, {}, since {})", field("command"), field("mode"), field("since"));
            if alive {
                live.push(desc);
            }
        }
    }
    if live.is_empty() {
        "another process (no readable holder information)".to_string()
    } else {
        live.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_locks_coexist_and_exclusive_names_the_holder() {
        let d = tempfile::tempdir().unwrap();
        let a = acquire(d.path(), LockMode::Shared, "backup", Duration::ZERO).unwrap();
        let b = acquire(d.path(), LockMode::Shared, "restore", Duration::ZERO).unwrap();
        let err = acquire(d.path(), LockMode::Exclusive, "prune", Duration::from_millis(200)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Locked);
        let msg = err.to_string();
        assert!(msg.contains(&format!("pid {}", std::process::id())) && msg.contains("backup"), "{msg}");
        drop((a, b));
        let c = acquire(d.path(), LockMode::Exclusive, "prune", Duration::ZERO).unwrap();
        assert!(acquire(d.path(), LockMode::Shared, "backup", Duration::ZERO).is_err());
        drop(c);
        assert!(fs::read_dir(d.path()).unwrap().flatten().all(|e| !e.file_name().to_string_lossy().ends_with(".info")));
    }
}
