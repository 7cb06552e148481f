//! Restore: write a snapshot (or one source of it) into a target directory, exactly.
//!
//! Safety: every path is resolved component by component from a directory fd with
//! `O_NOFOLLOW`, so a restore never writes outside the target — not through `..` (rejected when
//! the manifest is decoded), not through a symlink already in the target, not through a symlink
//! restored earlier in the same run (symlinks are created last, and even a hostile manifest that
//! puts a file under one fails to open it as a directory).
//!
//! Order: directories (mode 0700 while filled) -> file contents in parallel -> symlinks and hard
//! links -> directory metadata deepest first (so a read-only dir or an mtime is set after its
//! contents are written). `chown` precedes `chmod`, which keeps setuid/setgid bits.

use crate::delta::{BaseCache, ChunkReader};
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::progress::Progress;
use crate::store::index::Index;
use crate::store::lock::{self, LockMode};
use crate::store::pack::PackReader;
use crate::store::Store;
use rayon::prelude::*;
use rpger_formats::index::Location;
use rpger_formats::snapshot::{Entry, EntryKind};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, UTIME_OMIT};
use rustix::io::Errno;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// What to restore where.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Snapshot name or `latest`.
    pub snapshot: String,
    /// Target directory; source `NAME` lands in `TARGET/NAME`.
    pub target: PathBuf,
    /// Restore only this source.
    pub only: Option<String>,
    /// Allow a non-empty target and replace what the snapshot holds.
    pub overwrite: bool,
    /// How long to wait for a conflicting lock.
    pub lock_wait: Duration,
}

/// What a restore did.
#[derive(Debug, Clone, Default)]
pub struct RestoreReport {
    /// Snapshot restored.
    pub snapshot: String,
    /// Sources restored.
    pub sources: Vec<String>,
    /// Regular files written.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symlinks.
    pub symlinks: u64,
    /// Hard links.
    pub hardlinks: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Whether uid/gid were applied (only when running as root).
    pub owners_restored: bool,
    /// Entries that could not be restored (damaged or missing data, a blocked path), each
    /// `SNAPSHOT SOURCE PATH: cause`. Everything else was restored.
    pub failures: Vec<String>,
}

/// Restores a snapshot.
///
/// # Errors
/// [`ErrorKind::InvalidInput`] for a non-empty target without `overwrite` or an unknown source;
/// errors reading the snapshot, a manifest or the index. Files whose data is damaged are not an
/// error: they are listed in [`RestoreReport::failures`] and every other file is restored.
pub fn restore(store: &Store, opts: &RestoreOptions, progress: &dyn Progress) -> Result<RestoreReport> {
    let _lock = lock::acquire(&store.locks_dir(), LockMode::Shared, "restore", opts.lock_wait)?;
    let snap = store.read_snapshot(&opts.snapshot)?;
    let sources: Vec<_> = match &opts.only {
        Some(only) => {
            let s = snap.sources.iter().find(|s| &s.name == only).ok_or_else(|| {
                let names: Vec<_> = snap.sources.iter().map(|s| s.name.as_str()).collect();
                Error::new(ErrorKind::InvalidInput, format!("snapshot {} has no source {only} (it has: {})", snap.name, names.join(", ")))
            })?;
            vec![s.clone()]
        }
        None => snap.sources.clone(),
    };
    prepare_target(&opts.target, opts.overwrite)?;
    let target_fd = rustix::fs::open(&opts.target, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .at("open target", &opts.target)?;
    // `f_type` is 32 bits wide on some targets (and sign-extends there): compare its low 32.
    #[allow(clippy::unnecessary_cast)]
    let preallocate = rustix::fs::fstatfs(&target_fd).map(|st| preallocation_fits(st.f_type as i64 & 0xffff_ffff)).unwrap_or(false);
    let (index, _damaged) = Index::load_lenient(store)?;
    let reader = PackReader::new(store);
    let is_root = rustix::process::geteuid().is_root();
    let mut report = RestoreReport { snapshot: snap.name.clone(), owners_restored: is_root, ..Default::default() };
    let total: u64 = sources.iter().map(|s| s.logical_bytes).sum();
    progress.start("restore", Some(total));
    for src in &sources {
        let manifest = store.read_manifest(&src.manifest).map_err(|e| e.context(format!("snapshot {} source {}", snap.name, src.name)))?;
        let dest = opts.target.join(&src.name);
        let ctx = Ctx { index: &index, reader: &reader, overwrite: opts.overwrite, is_root, dest: &dest, progress, preallocate };
        make_dir(target_fd.as_fd(), src.name.as_bytes(), opts.overwrite, &dest)?;
        let root = open_dir(target_fd.as_fd(), src.name.as_bytes(), &dest)?;
        // A source of one file (a file, stdin, a command) has no root entry of its own: its
        // directory gets the usual 0755 instead of the 0700 it is filled with.
        if manifest.entries.first().is_none_or(|e| !e.path.is_empty()) {
            rustix::fs::fchmod(&root, Mode::from_raw_mode(0o755)).at("set mode of", &dest)?;
        }
        let errs = restore_tree(&ctx, root.as_fd(), &manifest.entries, &mut report);
        report.failures.extend(errs.into_iter().map(|e| format!("{} {}/{e}", snap.name, src.name)));
        report.sources.push(src.name.clone());
    }
    progress.finish();
    Ok(report)
}

struct Ctx<'a> {
    index: &'a Index,
    reader: &'a PackReader,
    overwrite: bool,
    is_root: bool,
    dest: &'a Path,
    progress: &'a dyn Progress,
    /// Whether files are allocated whole before they are written (see [`preallocation_fits`]).
    preallocate: bool,
}

impl Ctx<'_> {
    fn show(&self, rel: &[u8]) -> PathBuf {
        use std::os::unix::ffi::OsStrExt;
        self.dest.join(std::ffi::OsStr::from_bytes(rel))
    }
}

/// Creates the target or checks it may be written to.
fn prepare_target(target: &Path, overwrite: bool) -> Result<()> {
    match fs::read_dir(target) {
        Ok(mut rd) => {
            if rd.next().is_some() && !overwrite {
                return Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("target {} is not empty; pass --overwrite to replace what the snapshot holds", target.display()),
                ));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => fs::create_dir_all(target).at("create target", target),
        Err(e) => Err(Error::io("open target", target, e)),
    }
}

fn restore_tree(ctx: &Ctx, root: BorrowedFd, entries: &[Entry], report: &mut RestoreReport) -> Vec<String> {
    let mut errors = vec![];
    let mut note = |path: &[u8], e: Error| errors.push(format!("{}: {e}", String::from_utf8_lossy(path)));
    // 1. directories
    let mut dir_ok = vec![];
    for e in entries.iter().filter(|e| matches!(e.kind, EntryKind::Dir)) {
        if e.path.is_empty() {
            dir_ok.push(e);
            continue;
        }
        let r = with_parent(root, &e.path, ctx, |parent, name| make_dir(parent, name, ctx.overwrite, &ctx.show(&e.path)));
        match r {
            Ok(()) => {
                report.dirs += 1;
                dir_ok.push(e);
            }
            Err(err) => note(&e.path, err),
        }
    }
    // 2. file contents, in parallel
    let file_errors = Mutex::new(vec![]);
    let written = Mutex::new((0u64, 0u64));
    entries.par_iter().filter(|e| matches!(e.kind, EntryKind::File { .. })).for_each(|e| {
        match with_parent(root, &e.path, ctx, |parent, name| restore_file(ctx, parent, name, e)) {
            Ok(bytes) => {
                let mut w = written.lock().unwrap_or_else(|p| p.into_inner());
                w.0 += 1;
                w.1 += bytes;
            }
            Err(err) => file_errors.lock().unwrap_or_else(|p| p.into_inner()).push((e.path.clone(), err)),
        }
    });
    let (files, bytes) = written.into_inner().unwrap_or_else(|p| p.into_inner());
    report.files += files;
    report.bytes += bytes;
    let mut fe = file_errors.into_inner().unwrap_or_else(|p| p.into_inner());
    fe.sort_by(|a, b| a.0.cmp(&b.0));
    for (p, err) in fe {
        note(&p, err);
    }
    // 3. symlinks and hard links (after every file they might point to exists)
    for e in entries {
        let r = match &e.kind {
            EntryKind::Symlink { target } => {
                with_parent(root, &e.path, ctx, |parent, name| restore_symlink(ctx, parent, name, target, e)).map(|_| report.symlinks += 1)
            }
            EntryKind::Hardlink { target } => with_parent(root, &e.path, ctx, |parent, name| {
                with_parent(root, target, ctx, |tparent, tname| {
                    replace_existing(ctx, parent, name, &e.path)?;
                    rustix::fs::linkat(tparent, tname, parent, name, AtFlags::empty()).at("hard link", &ctx.show(&e.path))
                })
            })
            .map(|_| report.hardlinks += 1),
            _ => Ok(()),
        };
        if let Err(err) = r {
            note(&e.path, err);
        }
    }
    // 4. directory metadata, deepest first
    for e in dir_ok.iter().rev() {
        let r = if e.path.is_empty() {
            set_meta_fd(ctx, root, e, &ctx.show(&e.path))
        } else {
            with_parent(root, &e.path, ctx, |parent, name| {
                let fd = open_dir(parent, name, &ctx.show(&e.path))?;
                set_meta_fd(ctx, fd.as_fd(), e, &ctx.show(&e.path))
            })
        };
        if let Err(err) = r {
            note(&e.path, err);
        }
    }
    errors
}

/// Opens the parent directory of `rel` under `root` without following any symlink, and calls
/// `f(parent, last_component)`.
fn with_parent<T>(root: BorrowedFd, rel: &[u8], ctx: &Ctx, f: impl FnOnce(BorrowedFd, &[u8]) -> Result<T>) -> Result<T> {
    let mut comps: Vec<&[u8]> = rel.split(|&b| b == b'/').collect();
    let name = comps.pop().unwrap_or_default();
    let mut cur: Option<OwnedFd> = None;
    for (i, c) in comps.iter().enumerate() {
        let base = cur.as_ref().map(|f| f.as_fd()).unwrap_or(root);
        let shown = ctx.show(&rel[..comps[..=i].iter().map(|c| c.len() + 1).sum::<usize>() - 1]);
        cur = Some(open_dir(base, c, &shown)?);
    }
    let base = cur.as_ref().map(|f| f.as_fd()).unwrap_or(root);
    f(base, name)
}

/// Opens a directory entry as a directory, refusing symlinks.
fn open_dir(parent: BorrowedFd, name: &[u8], shown: &Path) -> Result<OwnedFd> {
    rustix::fs::openat(parent, name, OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).map_err(|e| {
        if e == Errno::LOOP || e == Errno::NOTDIR {
            Error::new(
                ErrorKind::InvalidInput,
                format!("refusing to restore through {}: it is not a directory (a symlink?)", shown.display()),
            )
        } else {
            Error::io("open directory", shown, e.into())
        }
    })
}

/// Creates a directory; with `overwrite` an existing directory is reused and anything else
/// (file, symlink) in its place is removed first.
fn make_dir(parent: BorrowedFd, name: &[u8], overwrite: bool, shown: &Path) -> Result<()> {
    match rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)) {
        Ok(()) => Ok(()),
        Err(Errno::EXIST) if overwrite => {
            let st = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW).at("stat", shown)?;
            if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                return Ok(());
            }
            rustix::fs::unlinkat(parent, name, AtFlags::empty()).at("remove", shown)?;
            rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700)).at("create directory", shown)
        }
        Err(Errno::EXIST) => Err(Error::new(ErrorKind::InvalidInput, format!("{} already exists", shown.display()))),
        Err(e) => Err(Error::io("create directory", shown, e.into())),
    }
}

/// With `overwrite`, removes whatever is at `name` (a symlink is removed, never followed; a
/// directory is removed recursively without following links inside it).
fn replace_existing(ctx: &Ctx, parent: BorrowedFd, name: &[u8], rel: &[u8]) -> Result<()> {
    let shown = ctx.show(rel);
    match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(Error::io("stat", &shown, e.into())),
        Ok(_) if !ctx.overwrite => Err(Error::new(ErrorKind::InvalidInput, format!("{} already exists", shown.display()))),
        Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => remove_tree_at(parent, name, &shown),
        Ok(_) => rustix::fs::unlinkat(parent, name, AtFlags::empty()).at("remove", &shown),
    }
}

fn remove_tree_at(parent: BorrowedFd, name: &[u8], shown: &Path) -> Result<()> {
    let fd = open_dir(parent, name, shown)?;
    let mut children = vec![];
    {
        let dup = rustix::io::dup(&fd).at("dup", shown)?;
        let dir = rustix::fs::Dir::new(dup).at("read directory", shown)?;
        for ent in dir {
            let ent = ent.at("read directory", shown)?;
            let n = ent.file_name().to_bytes();
            if n != b"." && n != b".." {
                children.push((n.to_vec(), ent.file_type()));
            }
        }
    }
    for (n, ft) in children {
        let child_shown = shown.join(String::from_utf8_lossy(&n).as_ref());
        let is_dir = match ft {
            FileType::Directory => true,
            FileType::Unknown => rustix::fs::statat(&fd, n.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                .map(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory)
                .unwrap_or(false),
            _ => false,
        };
        if is_dir {
            remove_tree_at(fd.as_fd(), &n, &child_shown)?;
        } else {
            rustix::fs::unlinkat(&fd, n.as_slice(), AtFlags::empty()).at("remove", &child_shown)?;
        }
    }
    rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR).at("remove directory", shown)
}

fn timestamps(e: &Entry) -> Timestamps {
    Timestamps {
        last_access: Timespec { tv_sec: 0, tv_nsec: UTIME_OMIT },
        last_modification: Timespec { tv_sec: e.mtime_sec, tv_nsec: e.mtime_nsec as _ },
    }
}

/// Owner, then mode (chown clears setuid), then mtime, on an open fd.
fn set_meta_fd(ctx: &Ctx, fd: BorrowedFd, e: &Entry, shown: &Path) -> Result<()> {
    if ctx.is_root {
        rustix::fs::fchown(fd, Some(rustix::fs::Uid::from_raw(e.uid)), Some(rustix::fs::Gid::from_raw(e.gid))).at("set owner of", shown)?;
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(e.mode & 0o7777)).at("set mode of", shown)?;
    rustix::fs::futimens(fd, &timestamps(e)).at("set mtime of", shown)
}

/// Chunks restored and written together by one worker (about 1 MiB at the default chunk size):
/// one pwrite per group instead of one per chunk.
const WRITE_GROUP: usize = 64;
/// Longest run of adjacent blobs read with one pread.
const READ_SPAN: u64 = 4 << 20;

fn restore_file(ctx: &Ctx, parent: BorrowedFd, name: &[u8], e: &Entry) -> Result<u64> {
    // The whole-file hash is not re-computed here: every chunk is checked against its id, and
    // `verify --deep --files` checks whole files.
    let EntryKind::File { size, chunks, sparse, .. } = &e.kind else { return Ok(0) };
    let shown = ctx.show(&e.path);
    replace_existing(ctx, parent, name, &e.path)?;
    let fd = rustix::fs::openat(
        parent,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .at("create", &shown)?;
    let file = File::from(fd);
    // The size first: chunks are then written at their offsets in parallel (a large file keeps
    // every core busy, with no serial hash or write pass). A dense file's blocks are allocated
    // in the same call: on ext4 that takes the per-block allocation out of every later write
    // (about 6 % of a restore's wall time), and a target without room fails here, before any
    // chunk is decoded. A sparse file only gets its length, so its zero chunks stay holes.
    if *sparse || !ctx.preallocate || !preallocate(&file, *size, &shown)? {
        file.set_len(*size).at("set length of", &shown)?;
    }
    let mut offsets = Vec::with_capacity(chunks.len());
    let mut at = 0u64;
    for id in chunks {
        let loc = ctx.index.get(id).ok_or_else(|| Error::new(ErrorKind::Missing, format!("chunk {} is not in the index", id.short())))?;
        offsets.push((id, loc, at));
        at += loc.raw_len as u64;
    }
    if at != *size {
        return Err(Error::new(ErrorKind::Corrupt, format!("the chunks hold {at} bytes, the manifest says {size}")));
    }
    let reader = ChunkReader { index: ctx.index, packs: ctx.reader };
    offsets.par_chunks(WRITE_GROUP).try_for_each_init(
        || (BaseCache::default(), Vec::new(), Vec::new()),
        |(cache, stored, run), group| -> Result<()> {
            // Blobs stored one after the other in a pack are read with one pread; consecutive
            // chunks are gathered and written with one pwrite. A sparse file's all-zero chunks
            // end a run and stay holes.
            let mut run_start = group[0].2;
            run.clear();
            // One allocation for the group, not a doubling series (0.7 % of a restore).
            run.reserve(group.iter().map(|g| g.1.raw_len as usize).sum());
            let mut i = 0;
            while i < group.len() {
                let first = group[i].1;
                let mut end = first.offset as u64 + first.len as u64;
                let mut j = i + 1;
                while j < group.len()
                    && group[j].1.pack == first.pack
                    && group[j].1.offset as u64 == end
                    && end - (first.offset as u64) < READ_SPAN
                {
                    end += group[j].1.len as u64;
                    j += 1;
                }
                let span = Location { len: (end - first.offset as u64) as u32, ..first };
                let stored = ctx.reader.read_blob(group[i].0, &span, stored)?;
                for (id, loc, off) in &group[i..j] {
                    let at = (loc.offset - first.offset) as usize;
                    // Every chunk is checked against its BLAKE3 (its id) before it is written.
                    // It is decoded straight onto the end of the run that is written next.
                    let start = run.len();
                    reader.decode_cached(id, loc, &stored[at..at + loc.len as usize], run, cache)?;
                    let len = (run.len() - start) as u64;
                    ctx.progress.advance(len);
                    if *sparse && run[start..].iter().all(|&b| b == 0) {
                        run.truncate(start);
                        if !run.is_empty() {
                            file.write_all_at(run, run_start).at("write", &shown)?;
                            run.clear();
                        }
                        run_start = off + len;
                    }
                }
                i = j;
            }
            if !run.is_empty() {
                file.write_all_at(run, run_start).at("write", &shown)?;
            }
            Ok(())
        },
    )?;
    let written = at;
    set_meta_fd(ctx, file.as_fd(), e, &shown)?;
    Ok(written)
}

/// Whether allocating a file's blocks before writing it suits a filesystem (`statfs` type).
/// Copy-on-write filesystems are left out: btrfs does not compress what is written into
/// preallocated extents, and ZFS and bcachefs allocate on every write anyway.
fn preallocation_fits(fs_type: i64) -> bool {
    const BTRFS: i64 = 0x9123_683e;
    const ZFS: i64 = 0x2fc1_2fc1;
    const BCACHEFS: i64 = 0xca45_1a4e;
    ![BTRFS, ZFS, BCACHEFS].contains(&fs_type)
}

/// Allocates `size` bytes of blocks for `file` (which also sets its length). `Ok(false)` when the
/// filesystem cannot (the caller then only sets the length); no room is an error.
fn preallocate(file: &File, size: u64, shown: &Path) -> Result<bool> {
    if size == 0 {
        return Ok(false);
    }
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, size) {
        Ok(()) => Ok(true),
        Err(e @ (Errno::NOSPC | Errno::DQUOT | Errno::FBIG | Errno::IO)) => {
            Err(Error::io(&format!("allocate {size} bytes for"), shown, e.into()))
        }
        // EOPNOTSUPP, ENOSYS, EINVAL...: no preallocation here, the writes allocate.
        Err(_) => Ok(false),
    }
}

fn restore_symlink(ctx: &Ctx, parent: BorrowedFd, name: &[u8], target: &[u8], e: &Entry) -> Result<()> {
    let shown = ctx.show(&e.path);
    replace_existing(ctx, parent, name, &e.path)?;
    rustix::fs::symlinkat(target, parent, name).at("create symlink", &shown)?;
    if ctx.is_root {
        rustix::fs::chownat(
            parent,
            name,
            Some(rustix::fs::Uid::from_raw(e.uid)),
            Some(rustix::fs::Gid::from_raw(e.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .at("set owner of", &shown)?;
    }
    rustix::fs::utimensat(parent, name, &timestamps(e), AtFlags::SYMLINK_NOFOLLOW).at("set mtime of", &shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_preallocated_except_on_copy_on_write_filesystems() {
        // ext4, XFS, tmpfs: allocated whole; btrfs, ZFS, bcachefs: written as they come.
        for ok in [0xef53, 0x5846_5342, 0x0102_1994] {
            assert!(preallocation_fits(ok), "{ok:#x}");
        }
        for cow in [0x9123_683e, 0x2fc1_2fc1, 0xca45_1a4e] {
            assert!(!preallocation_fits(cow), "{cow:#x}");
        }
    }
}
