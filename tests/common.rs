//! Helpers shared by the integration tests: running the binary, comparing trees field by field.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Output of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {}", self.stdout))
    }
}

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rpger-store"));
    c.env_remove("RPGER_STORE");
    c
}

/// Runs `rpger-store --store STORE ARGS...`.
pub fn run<S: AsRef<OsStr>>(store: &Path, args: &[S]) -> Run {
    let out = bin().arg("--store").arg(store).args(args).stdin(Stdio::null()).output().expect("run rpger-store");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Like [`run`] but the command must succeed.
pub fn ok<S: AsRef<OsStr>>(store: &Path, args: &[S]) -> Run {
    let r = run(store, args);
    assert_eq!(r.code, 0, "rpger-store {:?} failed:\n{}", args.iter().map(|a| a.as_ref().to_owned()).collect::<Vec<_>>(), r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    r
}

/// A failing command: the exit code, and stderr that is a clear error, not a panic.
pub fn fails<S: AsRef<OsStr>>(store: &Path, args: &[S], code: i32) -> Run {
    let r = run(store, args);
    assert_eq!(r.code, code, "expected exit {code}; stdout {} stderr {}", r.stdout, r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert!(r.stderr.contains("error"), "no error message: {}", r.stderr);
    r
}

pub fn init_store(dir: &Path) -> PathBuf {
    let store = dir.join("store");
    ok(&store, &["init"]);
    store
}

pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Everything `lstat` says about a path that restore promises to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub mtime_nsec: i64,
    pub size: u64,
    pub content: Option<blake3::Hash>,
    pub target: Option<Vec<u8>>,
    /// For hard-linked files: the first path (in sorted order) of the same inode.
    pub link_group: Option<Vec<u8>>,
}

/// Walks `root` without following symlinks; keys are relative paths as bytes ("" = root).
pub fn tree(root: &Path) -> BTreeMap<Vec<u8>, Node> {
    let mut raw: Vec<(Vec<u8>, fs::Metadata, PathBuf)> = vec![];
    let mut stack = vec![(Vec::new(), root.to_path_buf())];
    raw.push((vec![], fs::symlink_metadata(root).unwrap(), root.to_path_buf()));
    while let Some((rel, dir)) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let mut r = rel.clone();
            if !r.is_empty() {
                r.push(b'/');
            }
            r.extend_from_slice(e.file_name().as_bytes());
            let md = fs::symlink_metadata(e.path()).unwrap();
            if md.is_dir() {
                stack.push((r.clone(), e.path()));
            }
            raw.push((r, md, e.path()));
        }
    }
    raw.sort_by(|a, b| a.0.cmp(&b.0));
    let mut first_of_ino: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (rel, md, path) in raw {
        let ft = md.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else {
            "other"
        };
        let link_group = (ft.is_file() && md.nlink() > 1).then(|| first_of_ino.entry(md.ino()).or_insert_with(|| rel.clone()).clone());
        out.insert(
            rel,
            Node {
                kind,
                mode: md.mode() & 0o7777,
                uid: md.uid(),
                gid: md.gid(),
                mtime: md.mtime(),
                mtime_nsec: md.mtime_nsec(),
                size: if ft.is_dir() { 0 } else { md.len() },
                content: ft.is_file().then(|| blake3::hash(&fs::read(&path).unwrap())),
                target: ft.is_symlink().then(|| fs::read_link(&path).unwrap().as_os_str().as_bytes().to_vec()),
                link_group,
            },
        );
    }
    out
}

/// Asserts two trees are identical, naming the first differing path and field.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let (a, b) = (tree(expected), tree(actual));
    let ka: Vec<_> = a.keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
    let kb: Vec<_> = b.keys().map(|k| String::from_utf8_lossy(k).into_owned()).collect();
    assert_eq!(ka, kb, "different paths in {} and {}", expected.display(), actual.display());
    for (k, na) in &a {
        let nb = &b[k];
        assert_eq!(na, nb, "entry {:?} differs", String::from_utf8_lossy(k));
    }
}

/// Sets a path's mtime (not following symlinks) to the nanosecond.
pub fn set_mtime(path: &Path, sec: i64, nsec: i64) {
    use rustix::fs::{utimensat, AtFlags, Timespec, Timestamps, CWD};
    let ts = Timestamps {
        last_access: Timespec { tv_sec: sec, tv_nsec: nsec as _ },
        last_modification: Timespec { tv_sec: sec, tv_nsec: nsec as _ },
    };
    utimensat(CWD, path, &ts, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

/// Deterministic pseudo-random bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = rpger_engine::demo::Rng::new(seed);
    let mut v = vec![0u8; len];
    rng.fill(&mut v);
    v
}

/// Count of files under `dir` (recursively).
pub fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                n += count_files(&e.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

/// Names of the store's snapshots, oldest first.
pub fn snapshot_names(store: &Path) -> Vec<String> {
    ok(store, &["--json", "snapshots"]).json()["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect()
}

/// Restores snapshot `name` into a scratch dir under `work` and compares its mongodb, redis and
/// chroma sources field by field with the night they were taken from.
pub fn restores_exactly(store: &Path, work: &Path, name: &str, night: &Path) {
    let target = work.join(format!("check-{name}"));
    let _ = fs::remove_dir_all(&target);
    ok(store, &["restore", name, target.to_str().unwrap()]);
    for s in ["mongodb", "redis", "chroma"] {
        assert_same_tree(&night.join(s), &target.join(s));
    }
    fs::remove_dir_all(&target).unwrap();
}

/// (delta chunk, its bases) for every delta blob in the store.
pub fn deltas(store: &Path) -> Vec<(rpger_engine::Id, Vec<rpger_engine::Id>)> {
    let s = rpger_engine::store::Store::open(store).unwrap();
    let mut out = vec![];
    for d in fs::read_dir(store.join("packs")).unwrap().flatten() {
        for f in fs::read_dir(d.path()).unwrap().flatten() {
            let pack: rpger_engine::Id = f.file_name().to_str().unwrap().parse().unwrap();
            let bytes = fs::read(f.path()).unwrap();
            for b in rpger_engine::store::pack::read_trailer(&s, &pack)
                .unwrap()
                .1
                .into_iter()
                .filter(|b| b.encoding == rpger_formats::pack::Encoding::ZstdDelta)
            {
                let blob = &bytes[b.offset as usize..(b.offset + b.len) as usize];
                out.push((b.id, rpger_formats::delta::decode_blob(blob).unwrap().0));
            }
        }
    }
    out
}

/// Chunk ids used by the files of the snapshots now in the store.
pub fn referenced(store: &Path) -> std::collections::HashSet<rpger_engine::Id> {
    let s = rpger_engine::store::Store::open(store).unwrap();
    let mut out = std::collections::HashSet::new();
    for name in s.list_snapshots().unwrap() {
        for src in s.read_snapshot(&name).unwrap().sources {
            for e in s.read_manifest(&src.manifest).unwrap().entries {
                if let rpger_engine::EntryKind::File { chunks, .. } = e.kind {
                    out.extend(chunks);
                }
            }
        }
    }
    out
}

/// Stored bytes of the chunks kept only as bases of deltas that kept files use.
pub fn base_only_bytes(store: &Path) -> u64 {
    let kept = referenced(store);
    let s = rpger_engine::store::Store::open(store).unwrap();
    let index = rpger_engine::store::index::Index::load(&s).unwrap();
    let bases: std::collections::HashSet<rpger_engine::Id> =
        deltas(store).into_iter().filter(|(d, _)| kept.contains(d)).flat_map(|(_, b)| b).filter(|b| !kept.contains(b)).collect();
    bases.iter().map(|b| index.get(b).map(|l| l.len as u64).unwrap_or(0)).sum()
}
