//! A backup that fills the disk fails with a clear error and leaves the store as valid as it
//! was: earlier snapshots restore, verify passes, and once space is freed the next backup works.
//! A restore into a full target names the file that did not fit and restores the others.

use crate::common::*;
use std::fs;
use std::process::Command;

/// A small tmpfs, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

fn mount_tmpfs(size: &str) -> Option<Tmpfs> {
    if !is_root() {
        eprintln!("WARNING: full-disk test SKIPPED: mounting a tmpfs needs root (CI runs as root)");
        return None;
    }
    let d = tempfile::tempdir().unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(d.path())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("WARNING: full-disk test SKIPPED: `mount -t tmpfs` failed (no CAP_SYS_ADMIN in this container?)");
        return None;
    }
    Some(Tmpfs(d))
}

#[test]
fn a_full_disk_fails_the_backup_cleanly_and_keeps_the_store() {
    let Some(fs_) = mount_tmpfs("24m") else { return };
    let t = tempfile::tempdir().unwrap();
    let store = fs_.0.path().join("store");
    ok(&store, &["init"]);
    let small = t.path().join("small");
    fs::create_dir(&small).unwrap();
    fs::write(small.join("a.bin"), noise(1, 4 << 20)).unwrap();
    let first =
        ok(&store, &["--json", "backup", "--source", &format!("db={}", small.display())]).json()["snapshot"].as_str().unwrap().to_string();
    // 40 MiB of incompressible data cannot fit in what is left of 24 MiB.
    let big = t.path().join("big");
    fs::create_dir(&big).unwrap();
    fs::write(big.join("b.bin"), noise(2, 40 << 20)).unwrap();
    // The space check refuses first, with the numbers...
    let r = fails(&store, &["backup", "--source", &format!("db={}", big.display())], 2);
    assert!(r.stderr.contains("not enough free space") && r.stderr.contains("available") && r.stderr.contains("needed"), "{}", r.stderr);
    // ...and without it the disk really fills.
    let r = fails(&store, &["backup", "--no-space-check", "--source", &format!("db={}", big.display())], 2);
    assert!(r.stderr.contains("No space left on device"), "{}", r.stderr);
    assert!(r.stderr.trim_end().lines().count() == 1, "{}", r.stderr);
    let names: Vec<String> = ok(&store, &["--json", "snapshots"]).json()["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec![first.clone()], "a failed backup must not commit a snapshot");
    assert_eq!(count_files(&store.join("tmp")), 0, "temp files left behind");
    ok(&store, &["verify", "--deep", "--all", "--log-dir", t.path().join("logs").to_str().unwrap()]);
    let target = t.path().join("r");
    ok(&store, &["restore", &first, target.to_str().unwrap()]);
    assert_same_tree(&small, &target.join("db"));
    // Space comes back (prune removes what the failed run left); the next backup succeeds.
    ok(&store, &["prune"]);
    fs::write(big.join("b.bin"), noise(3, 6 << 20)).unwrap();
    // (the space check's 16 MiB of slack would not fit on this 24 MiB filesystem)
    ok(&store, &["backup", "--no-space-check", "--source", &format!("db={}", big.display())]);
    ok(&store, &["verify", "--deep", "--all", "--log-dir", t.path().join("logs").to_str().unwrap()]);
}

#[test]
fn a_restore_into_a_full_target_names_the_file_that_does_not_fit_and_restores_the_rest() {
    let Some(fs_) = mount_tmpfs("8m") else { return };
    let t = tempfile::tempdir().unwrap();
    let store = init_store(t.path());
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("big.bin"), noise(4, 12 << 20)).unwrap();
    fs::write(src.join("small.bin"), noise(5, 100_000)).unwrap();
    ok(&store, &["backup", "--source", &format!("db={}", src.display())]);
    let target = fs_.0.path().join("r");
    let r = fails(&store, &["restore", "latest", target.to_str().unwrap()], 1);
    // The file is refused before any of its chunks is decoded, with its size and path.
    assert!(
        r.stderr.contains(&format!("allocate {} bytes for", 12 << 20))
            && r.stderr.contains("big.bin")
            && r.stderr.contains("No space left"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("1 entries of"), "{}", r.stderr);
    assert_eq!(fs::read(target.join("db/small.bin")).unwrap(), noise(5, 100_000));
    // Nothing of the big file's data was written: the target's space is still free for a retry.
    assert!(fs::metadata(target.join("db/big.bin")).map(|m| m.len() == 0).unwrap_or(true));
    ok(&store, &["verify", "--deep", "--all", "--log-dir", t.path().join("logs").to_str().unwrap()]);
}
