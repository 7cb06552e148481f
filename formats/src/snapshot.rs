//! Snapshot files (the commit point of a backup) and per-source manifests (the file tree of one
//! source), both serde/postcard inside the common envelope.
//!
//! A manifest file's body is `compression u8 | payload`; compression 0 means the payload is the
//! postcard bytes, 1 means a zstd frame of them (the engine owns zstd; this crate stays pure).
//! Decoding a manifest validates every path, so a hostile store cannot smuggle `..`, an absolute
//! path or a duplicate name past it.

use crate::envelope::{self, Kind};
use crate::{DecodeError, Id};
use serde::{Deserialize, Serialize};

/// Envelope identity of a snapshot file.
pub const SNAPSHOT_KIND: Kind = Kind { name: "snapshot", magic: *b"RPGSSNAP", min_version: 1, current_version: 1 };
/// Envelope identity of a manifest file.
pub const MANIFEST_KIND: Kind = Kind { name: "manifest", magic: *b"RPGSMANI", min_version: 1, current_version: 1 };
/// Longest path accepted in a manifest, in bytes.
pub const MAX_PATH_LEN: usize = 4096;
/// Longest snapshot or source name.
pub const MAX_NAME_LEN: usize = 100;

/// One committed snapshot: which manifest holds each source, and summary figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// `YYYY-MM-DD_HH-MM-SS` start time, with `_N` appended when that second was taken.
    pub name: String,
    /// Start time, Unix nanoseconds.
    pub time_unix_ns: i64,
    /// Host that made it.
    pub hostname: String,
    /// Version of the tool that wrote it.
    pub tool_version: String,
    /// The sources, sorted by name.
    pub sources: Vec<SourceRef>,
    /// Bytes of blobs this backup added to packs (after compression).
    pub new_stored_bytes: u64,
    /// Uncompressed bytes of the chunks this backup added.
    pub new_raw_bytes: u64,
    /// Free-form annotations (`key`, `value`), sorted by key.
    pub labels: Vec<(String, String)>,
}

/// One named source inside a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRef {
    /// Source name, e.g. `mongodb`; restored into `TARGET/<name>`.
    pub name: String,
    /// Id of its manifest file.
    pub manifest: Id,
    /// Sum of the sizes of its regular files.
    pub logical_bytes: u64,
    /// Number of entries.
    pub entries: u64,
}

impl Snapshot {
    /// Logical size of all sources.
    pub fn logical_bytes(&self) -> u64 {
        self.sources.iter().map(|s| s.logical_bytes).sum()
    }

    /// Encodes into a sealed envelope.
    pub fn encode(&self) -> Vec<u8> {
        envelope::seal(&SNAPSHOT_KIND, &postcard::to_stdvec(self).unwrap_or_default())
    }

    /// Decodes and validates names.
    ///
    /// # Errors
    /// [`DecodeError`] on bad framing or an invalid snapshot or source name.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (_, body) = envelope::open(&SNAPSHOT_KIND, bytes)?;
        let s: Snapshot =
            postcard::from_bytes(body).map_err(|e| DecodeError::Invalid { kind: SNAPSHOT_KIND.name, reason: e.to_string() })?;
        validate_name(&s.name).map_err(|r| DecodeError::Invalid { kind: SNAPSHOT_KIND.name, reason: r })?;
        let mut prev: Option<&str> = None;
        for src in &s.sources {
            validate_name(&src.name).map_err(|r| DecodeError::Invalid { kind: SNAPSHOT_KIND.name, reason: r })?;
            if prev.is_some_and(|p| p >= src.name.as_str()) {
                return Err(DecodeError::Invalid { kind: SNAPSHOT_KIND.name, reason: "sources not sorted or duplicated".into() });
            }
            prev = Some(&src.name);
        }
        Ok(s)
    }
}

/// Checks a snapshot or source name: 1..=100 of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
/// These names become file and directory names, so nothing else is allowed.
///
/// # Errors
/// A message saying what is wrong.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("name {name:?} must be 1 to {MAX_NAME_LEN} characters"));
    }
    if name.starts_with('.') || name.starts_with('-') || !name.chars().all(ok_char) {
        return Err(format!("name {name:?} may only use letters, digits, '.', '_' and '-' and must not start with '.' or '-'"));
    }
    Ok(())
}

/// The tree of one source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Manifest {
    /// Entries sorted by path bytes (so every directory precedes its contents). The root of a
    /// directory source has the empty path.
    pub entries: Vec<Entry>,
}

/// One file, directory, symlink or hard link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative path, `/`-separated, raw bytes (names need not be UTF-8).
    pub path: Vec<u8>,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// Numeric owner.
    pub uid: u32,
    /// Numeric group.
    pub gid: u32,
    /// Modification time, seconds since the epoch (may be far in the future or before 1970).
    pub mtime_sec: i64,
    /// Nanoseconds part of the modification time.
    pub mtime_nsec: u32,
    /// What the entry is.
    pub kind: EntryKind,
}

/// Kind-specific data of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file.
    File {
        /// Length in bytes.
        size: u64,
        /// The file's chunks in order.
        chunks: Vec<Id>,
        /// BLAKE3 of the whole file.
        hash: Id,
        /// The file had holes: restore zero chunks as holes.
        sparse: bool,
    },
    /// A symbolic link; the target is kept verbatim and never followed.
    Symlink {
        /// Link target bytes.
        target: Vec<u8>,
    },
    /// A further name for a regular file stored earlier in the same manifest.
    Hardlink {
        /// Path of that earlier file entry.
        target: Vec<u8>,
    },
}

impl Manifest {
    /// Postcard bytes of the manifest (the payload before compression).
    pub fn to_payload(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// Decodes payload bytes and validates every path.
    ///
    /// # Errors
    /// [`DecodeError::Invalid`] naming the first bad path.
    pub fn from_payload(payload: &[u8]) -> Result<Self, DecodeError> {
        let m: Manifest =
            postcard::from_bytes(payload).map_err(|e| DecodeError::Invalid { kind: MANIFEST_KIND.name, reason: e.to_string() })?;
        m.validate()?;
        Ok(m)
    }

    /// Checks paths: relative, no empty, `.` or `..` component, no NUL, strictly sorted;
    /// hard links name an earlier regular file; file sizes are consistent with chunk counts.
    ///
    /// # Errors
    /// [`DecodeError::Invalid`] naming the first bad entry.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let bad = |path: &[u8], reason: &str| DecodeError::Invalid {
            kind: MANIFEST_KIND.name,
            reason: format!("entry {:?}: {reason}", String::from_utf8_lossy(path)),
        };
        let mut prev: Option<&[u8]> = None;
        for (i, e) in self.entries.iter().enumerate() {
            check_path(&e.path).map_err(|r| bad(&e.path, &r))?;
            if prev.is_some_and(|p| p >= e.path.as_slice()) {
                return Err(bad(&e.path, "paths not strictly sorted (duplicate or out of order)"));
            }
            prev = Some(&e.path);
            if e.path.is_empty() && e.kind != EntryKind::Dir {
                return Err(bad(&e.path, "the root entry must be a directory"));
            }
            match &e.kind {
                EntryKind::Hardlink { target } => {
                    let pos = self.entries[..i].binary_search_by(|x| x.path.as_slice().cmp(target));
                    match pos.map(|p| &self.entries[p].kind) {
                        Ok(EntryKind::File { .. }) => {}
                        _ => return Err(bad(&e.path, "hard link target is not an earlier regular file")),
                    }
                }
                EntryKind::File { size, chunks, .. } => {
                    let max = chunks.len() as u64 * crate::pack::MAX_RAW_LEN as u64;
                    if *size > max || (*size > 0 && chunks.is_empty()) {
                        return Err(bad(&e.path, "file size does not match its chunk list"));
                    }
                }
                EntryKind::Symlink { target } if target.is_empty() || target.contains(&0) => {
                    return Err(bad(&e.path, "symlink target is empty or contains NUL"));
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Checks one manifest path; `""` is the source root.
///
/// # Errors
/// A message saying what is wrong.
pub fn check_path(path: &[u8]) -> Result<(), String> {
    if path.is_empty() {
        return Ok(());
    }
    if path.len() > MAX_PATH_LEN {
        return Err("path too long".into());
    }
    if path.contains(&0) {
        return Err("path contains NUL".into());
    }
    for comp in path.split(|&b| b == b'/') {
        match comp {
            b"" => return Err("absolute path or empty component".into()),
            b"." | b".." => return Err(format!("path component {:?} is not allowed", String::from_utf8_lossy(comp))),
            _ => {}
        }
    }
    Ok(())
}

/// Manifest compression tag: payload stored as it is.
pub const MANIFEST_PLAIN: u8 = 0;
/// Manifest compression tag: payload is one zstd frame.
pub const MANIFEST_ZSTD: u8 = 1;

/// Seals a manifest file from an (optionally compressed) payload.
pub fn seal_manifest(compression: u8, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(payload.len() + 1);
    body.push(compression);
    body.extend_from_slice(payload);
    envelope::seal(&MANIFEST_KIND, &body)
}

/// Opens a manifest file: returns the compression tag and the payload.
///
/// # Errors
/// [`DecodeError`] on bad framing or an unknown compression tag.
pub fn open_manifest(bytes: &[u8]) -> Result<(u8, &[u8]), DecodeError> {
    let (_, body) = envelope::open(&MANIFEST_KIND, bytes)?;
    match body.split_first() {
        Some((&c, payload)) if c == MANIFEST_PLAIN || c == MANIFEST_ZSTD => Ok((c, payload)),
        Some((&c, _)) => Err(DecodeError::Invalid { kind: MANIFEST_KIND.name, reason: format!("unknown compression {c}") }),
        None => Err(DecodeError::Truncated { kind: MANIFEST_KIND.name, needed: 1, got: 0 }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry { path: path.as_bytes().to_vec(), mode: 0o644, uid: 1, gid: 2, mtime_sec: -5, mtime_nsec: 7, kind }
    }

    fn file() -> EntryKind {
        EntryKind::File { size: 3, chunks: vec![Id([1; 32])], hash: Id([2; 32]), sparse: false }
    }

    #[test]
    fn manifest_round_trip() {
        let m = Manifest {
            entries: vec![
                entry("", EntryKind::Dir),
                entry("a", file()),
                entry("b", EntryKind::Hardlink { target: b"a".to_vec() }),
                entry("c", EntryKind::Symlink { target: b"../x".to_vec() }),
            ],
        };
        assert_eq!(Manifest::from_payload(&m.to_payload()).unwrap(), m);
    }

    #[test]
    fn hostile_paths_rejected() {
        for p in ["../etc/passwd", "a/../../b", "/etc/passwd", "a//b", "a/./b", "a/"] {
            let m = Manifest { entries: vec![entry(p, file())] };
            let err = Manifest::from_payload(&m.to_payload()).unwrap_err();
            assert!(matches!(err, DecodeError::Invalid { .. }), "{p}: {err}");
        }
        let m = Manifest { entries: vec![entry("b", file()), entry("a", file())] };
        assert!(m.validate().is_err());
        let m = Manifest { entries: vec![entry("a", EntryKind::Hardlink { target: b"b".to_vec() }), entry("b", file())] };
        assert!(m.validate().is_err());
    }

    #[test]
    fn snapshot_round_trip_and_name_rules() {
        let s = Snapshot {
            name: "2026-11-26_02-00-00".into(),
            time_unix_ns: 1,
            hostname: "h".into(),
            tool_version: "0.1.0".into(),
            sources: vec![SourceRef { name: "redis".into(), manifest: Id([3; 32]), logical_bytes: 9, entries: 2 }],
            new_stored_bytes: 1,
            new_raw_bytes: 2,
            labels: vec![],
        };
        assert_eq!(Snapshot::decode(&s.encode()).unwrap(), s);
        for bad in ["", "..", "../x", "a/b", ".hidden", "-x", "a b"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Snapshot::decode(&bytes);
            let _ = Manifest::from_payload(&bytes);
            let _ = open_manifest(&bytes);
        }
    }
}
