//! `verify --dumps`: each database dump in a snapshot is read back through the store and
//! checked by its own format, so a dump that was already broken when it was backed up (a cut
//! `dump.rdb`, a torn SQLite copy, a half-written `.bson`) is found before it is needed.
//!
//! The byte-level checks live in `rpger_formats::dumps`; this module finds the dumps, streams
//! them out of the store and, for SQLite, has SQLite itself check a scratch copy.

use crate::delta::ChunkReader;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::sources::mongo;
use crate::store::index::Index;
use crate::store::pack::PackReader;
use rayon::prelude::*;
use rpger_formats::dumps::{self, aof, bson, rdb, sqlite};
use rpger_formats::Id;
use std::collections::{HashMap, HashSet};
use std::io::{BufReader, Read, Write};
use std::path::Path;

/// One file of a snapshot, as the dump check sees it.
#[derive(Debug, Clone)]
pub struct DumpFile {
    /// Snapshot name.
    pub snapshot: String,
    /// Source name.
    pub source: String,
    /// Path inside the source.
    pub path: Vec<u8>,
    /// The file's chunks, in order.
    pub chunks: Vec<Id>,
    /// Its whole-file BLAKE3 (equal hashes are checked once).
    pub hash: Id,
    /// Its length.
    pub size: u64,
}

/// What the check of one dump found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpCheck {
    /// Snapshot name.
    pub snapshot: String,
    /// Source name.
    pub source: String,
    /// Path inside the source.
    pub path: String,
    /// The format it was checked as, e.g. `redis rdb`.
    pub kind: &'static str,
    /// What it holds (`Ok`), or why it would not load (`Err`).
    pub outcome: std::result::Result<String, String>,
}

/// The dump formats this check knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Rdb,
    Aof,
    AofManifest,
    Bson,
    BsonMetadata,
    MongoArchive,
    Sqlite,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Rdb => "redis rdb",
            Kind::Aof => "redis aof",
            Kind::AofManifest => "redis aof manifest",
            Kind::Bson => "mongodb bson",
            Kind::BsonMetadata => "mongodb metadata",
            Kind::MongoArchive => "mongodump archive",
            Kind::Sqlite => "sqlite",
        }
    }

    /// By name first; SQLite databases and mongodump archives, whatever their names, and RDB
    /// files by their first bytes.
    fn of(path: &[u8], head: &[u8]) -> Option<Kind> {
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        if sqlite::looks_like(head) {
            Some(Kind::Sqlite)
        } else if head.starts_with(&mongo::MAGIC) {
            Some(Kind::MongoArchive)
        } else if name.ends_with(b".rdb") || (rdb::looks_like(head) && !name.ends_with(b".aof")) {
            Some(Kind::Rdb)
        } else if name.ends_with(b".aof") {
            Some(Kind::Aof)
        } else if name.starts_with(b"appendonly") && name.ends_with(b".manifest") {
            Some(Kind::AofManifest)
        } else if name.ends_with(b".metadata.json") {
            Some(Kind::BsonMetadata)
        } else if name.ends_with(b".bson") {
            Some(Kind::Bson)
        } else {
            None
        }
    }
}

/// A file's bytes, read chunk by chunk out of the store (each chunk checked against its id).
struct FileStream<'a> {
    chunks: ChunkReader<'a>,
    ids: std::slice::Iter<'a, Id>,
    buf: Vec<u8>,
    stored: Vec<u8>,
    at: usize,
}

impl<'a> FileStream<'a> {
    fn new(index: &'a Index, packs: &'a PackReader, ids: &'a [Id]) -> Self {
        FileStream { chunks: ChunkReader { index, packs }, ids: ids.iter(), buf: Vec::new(), stored: Vec::new(), at: 0 }
    }
}

impl Read for FileStream<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.buf.len() {
            let Some(id) = self.ids.next() else { return Ok(0) };
            let loc =
                self.chunks.index.get(id).ok_or_else(|| std::io::Error::other(format!("chunk {} is not in the index", id.short())))?;
            self.chunks.read_into(id, &loc, &mut self.stored, &mut self.buf, true).map_err(std::io::Error::other)?;
            self.at = 0;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Checks every dump among `files`. Files whose content (whole-file hash) repeats across
/// snapshots are read once. `scratch` is where SQLite databases are copied for SQLite to check
/// (the system's temporary directory when `None`).
///
/// Returns a check per dump and the bytes read.
///
/// # Errors
/// Only when the check cannot run at all (no scratch directory); a dump that does not check
/// out is a [`DumpCheck`] with an `Err` outcome.
pub fn check_all(index: &Index, packs: &PackReader, files: &[DumpFile], scratch: Option<&Path>) -> Result<(Vec<DumpCheck>, u64)> {
    let reader = ChunkReader { index, packs };
    // First chunk of each file: enough to recognise the formats known by their magic.
    let kinds: Vec<Option<Kind>> = files
        .par_iter()
        .map(|f| {
            let head = match f.chunks.first() {
                Some(id) => reader.read(id).unwrap_or_default(),
                None => Vec::new(),
            };
            Kind::of(&f.path, &head)
        })
        .collect();
    let mut once: HashMap<(Id, Kind), usize> = HashMap::new();
    for (i, (f, k)) in files.iter().zip(&kinds).enumerate() {
        if let Some(k) = k {
            // SQLite's check depends on the journal files beside it, so it is per file.
            if *k != Kind::Sqlite {
                once.entry((f.hash, *k)).or_insert(i);
            }
        }
    }
    let todo: Vec<(usize, Kind)> = kinds
        .iter()
        .enumerate()
        .filter_map(|(i, k)| k.map(|k| (i, k)))
        .filter(|&(i, k)| k == Kind::Sqlite || once.get(&(files[i].hash, k)) == Some(&i))
        .collect();
    let siblings: HashSet<(&str, &str, &[u8])> =
        files.iter().map(|f| (f.snapshot.as_str(), f.source.as_str(), f.path.as_slice())).collect();
    let scratch_dir = match scratch {
        Some(d) => tempfile::Builder::new().prefix("rpger-store-dumps-").tempdir_in(d),
        None => tempfile::Builder::new().prefix("rpger-store-dumps-").tempdir(),
    }
    .map_err(|e| Error::with_cause(ErrorKind::Io, "create a scratch directory for the SQLite check", e))?;
    let checked: HashMap<usize, std::result::Result<String, String>> = todo
        .par_iter()
        .map(|&(i, kind)| {
            let f = &files[i];
            let outcome = match kind {
                Kind::Sqlite => check_sqlite(index, packs, f, files, scratch_dir.path(), i),
                Kind::AofManifest => check_aof_manifest(index, packs, f, &siblings),
                _ => check_stream(kind, &mut FileStream::new(index, packs, &f.chunks)),
            };
            (i, outcome)
        })
        .collect();
    let bytes = todo.iter().map(|&(i, _)| files[i].size).sum();
    let mut out = Vec::new();
    for (i, (f, k)) in files.iter().zip(&kinds).enumerate() {
        let Some(k) = *k else { continue };
        let first = if k == Kind::Sqlite { i } else { once[&(f.hash, k)] };
        out.push(DumpCheck {
            snapshot: f.snapshot.clone(),
            source: f.source.clone(),
            path: String::from_utf8_lossy(&f.path).into_owned(),
            kind: k.name(),
            outcome: checked[&first].clone(),
        });
    }
    Ok((out, bytes))
}

/// The formats checked by reading the file once, front to back.
fn check_stream(kind: Kind, r: &mut FileStream) -> std::result::Result<String, String> {
    let err = |e: dumps::CheckError| e.to_string();
    match kind {
        Kind::Rdb => rdb::check(r).map_err(err).map(|s| {
            let crc = match s.checksum {
                rdb::Checksum::Matched(c) => format!("CRC-64 0x{c:016x} matches"),
                rdb::Checksum::Disabled => "written with rdbchecksum no: no CRC to compare".into(),
                rdb::Checksum::NotInVersion => "no CRC in this version".into(),
            };
            let unknown = if s.known_version { "" } else { " (a version newer than this build knows)" };
            format!("RDB version {}{unknown}, {} bytes, {crc}", s.version, s.bytes)
        }),
        Kind::Aof => {
            let mut r = BufReader::with_capacity(64 * 1024, r);
            let head = std::io::BufRead::fill_buf(&mut r).map_err(|e| e.to_string())?;
            if rdb::looks_like(head) {
                // Redis before 7 with aof-use-rdb-preamble: an RDB, then RESP commands. Where
                // the RDB ends is only known by parsing every value in it.
                return Ok("starts with an RDB preamble; not checked further".into());
            }
            aof::check(&mut r).map_err(err).map(|s| format!("{} commands, {} bytes", s.commands, s.bytes))
        }
        Kind::Bson => bson::check_file(r).map_err(err).map(|s| format!("{} documents, {} bytes", s.documents, s.bytes)),
        Kind::BsonMetadata => {
            // mongodump's metadata is options and index definitions: kilobytes.
            const LIMIT: u64 = 16 << 20;
            let mut text = Vec::new();
            r.take(LIMIT + 1).read_to_end(&mut text).map_err(|e| format!("cannot read it: {e}"))?;
            if text.len() as u64 > LIMIT {
                return Err(format!("over {LIMIT} bytes: not a metadata file mongorestore would read"));
            }
            if text.iter().all(u8::is_ascii_whitespace) {
                // What the demultiplexer writes for a namespace whose prelude entry has no
                // metadata (the oplog); mongorestore skips an empty file.
                return Ok("empty (no options or indexes)".into());
            }
            match serde_json::from_slice::<serde_json::Value>(&text) {
                Ok(serde_json::Value::Object(m)) => {
                    let indexes = m.get("indexes").and_then(|i| i.as_array()).map_or(0, Vec::len);
                    Ok(format!("{indexes} index definitions"))
                }
                Ok(_) => Err("not a JSON object (mongorestore expects one)".into()),
                Err(e) => Err(format!("not valid JSON: {e}")),
            }
        }
        Kind::MongoArchive => {
            let (mut namespaces, mut documents) = (0u64, 0u64);
            mongo::demux(r, |ev| {
                if let mongo::Event::End { docs, .. } = ev {
                    namespaces += 1;
                    documents += docs;
                }
                Ok(())
            })
            .map_err(|e| e.to_string())?;
            Ok(format!("{namespaces} collections, {documents} documents, every CRC-64 matches"))
        }
        Kind::AofManifest | Kind::Sqlite => Err("internal: checked elsewhere".into()),
    }
}

/// Redis 7's manifest: it parses, and every file it names is in the same directory of the
/// same snapshot and source (Redis refuses to start otherwise).
fn check_aof_manifest(
    index: &Index,
    packs: &PackReader,
    f: &DumpFile,
    siblings: &HashSet<(&str, &str, &[u8])>,
) -> std::result::Result<String, String> {
    let mut text = Vec::new();
    FileStream::new(index, packs, &f.chunks).take(1 << 20).read_to_end(&mut text).map_err(|e| format!("cannot read it: {e}"))?;
    let entries = aof::parse_manifest(&text).map_err(|e| e.to_string())?;
    let dir = match f.path.iter().rposition(|&b| b == b'/') {
        Some(p) => &f.path[..=p],
        None => &[][..],
    };
    for e in &entries {
        let path = [dir, e.file.as_bytes()].concat();
        if !siblings.contains(&(f.snapshot.as_str(), f.source.as_str(), path.as_slice())) {
            return Err(format!("names {} (type {}), which the snapshot does not hold", e.file, e.kind));
        }
    }
    Ok(format!("{} files listed, all present", entries.len()))
}

/// A SQLite database: its header, then `PRAGMA integrity_check` by SQLite itself on a scratch
/// copy (with any `-journal` or `-wal` stored beside it, which SQLite applies on open).
fn check_sqlite(
    index: &Index,
    packs: &PackReader,
    f: &DumpFile,
    files: &[DumpFile],
    scratch: &Path,
    n: usize,
) -> std::result::Result<String, String> {
    let journals: Vec<(&str, &DumpFile)> = ["-journal", "-wal"]
        .into_iter()
        .filter_map(|suffix| {
            let want = [f.path.as_slice(), suffix.as_bytes()].concat();
            files.iter().find(|g| g.snapshot == f.snapshot && g.source == f.source && g.path == want).map(|g| (suffix, g))
        })
        .collect();
    let dir = scratch.join(n.to_string());
    let copy = || -> Result<std::path::PathBuf> {
        std::fs::create_dir_all(&dir).at("create", &dir)?;
        let db = dir.join("db");
        copy_out(index, packs, f, &db)?;
        for (suffix, g) in &journals {
            copy_out(index, packs, g, &dir.join(format!("db{suffix}")))?;
        }
        Ok(db)
    };
    let result = copy().map_err(|e| format!("cannot copy it out for SQLite: {e}")).and_then(|db| {
        let mut head = [0u8; sqlite::HEADER_LEN];
        let n = std::fs::File::open(&db).and_then(|mut h| dumps::fill(&mut h, &mut head)).map_err(|e| e.to_string())?;
        let s = sqlite::check_header(&head[..n], f.size, !journals.is_empty()).map_err(|e| e.to_string())?;
        let verdict = integrity_check(&db)?;
        let pages = s.pages.map_or(String::new(), |p| format!(", {p} pages"));
        Ok(format!("page size {}{pages}, integrity_check ok{verdict}", s.page_size))
    });
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// Writes file `f` out of the store to `to`.
fn copy_out(index: &Index, packs: &PackReader, f: &DumpFile, to: &Path) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(to).at("create", to)?);
    std::io::copy(&mut FileStream::new(index, packs, &f.chunks), &mut out).at("write", to)?;
    out.flush().at("write", to)
}

/// Runs `PRAGMA integrity_check` (SQLite reads every page and index); on success, says what
/// the database holds when it is Chroma's.
fn integrity_check(db: &Path) -> std::result::Result<String, String> {
    use rusqlite::{Connection, OpenFlags};
    // Read-write: a hot journal beside the copy must be rolled back (or a WAL replayed) on
    // open, as the server would on start. It is a scratch copy.
    let c = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE).map_err(|e| format!("SQLite cannot open it: {e}"))?;
    let mut st = c.prepare("PRAGMA integrity_check").map_err(|e| format!("SQLite cannot read it: {e}"))?;
    let rows: Vec<String> =
        st.query_map([], |r| r.get::<_, String>(0)).and_then(|rows| rows.collect()).map_err(|e| format!("SQLite cannot read it: {e}"))?;
    if rows != ["ok"] {
        // One row per problem, and a row may hold several lines; the first few say where.
        let lines: Vec<&str> =
            rows.iter().flat_map(|r| r.lines()).map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("***")).collect();
        let more = if lines.len() > 3 { format!("; ... ({} problems in all)", lines.len()) } else { String::new() };
        return Err(format!("integrity_check: {}{more}", lines[..lines.len().min(3)].join("; ")));
    }
    // Chroma keeps one row per stored vector in `embeddings`.
    let count = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0)).ok();
    Ok(match (count("SELECT count(*) FROM collections"), count("SELECT count(*) FROM embeddings")) {
        (Some(cols), Some(rows)) => format!("; Chroma: {cols} collections, {rows} embeddings"),
        _ => String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dumps_are_recognised_by_name_or_first_bytes() {
        assert_eq!(Kind::of(b"redis/dump.rdb", b"REDIS0011"), Some(Kind::Rdb));
        assert_eq!(Kind::of(b"dump-copy", b"REDIS0011\xfa"), Some(Kind::Rdb));
        assert_eq!(Kind::of(b"appendonlydir/appendonly.aof.1.base.rdb", b"REDIS0011"), Some(Kind::Rdb));
        assert_eq!(Kind::of(b"appendonly.aof", b"REDIS0011"), Some(Kind::Aof));
        assert_eq!(Kind::of(b"appendonlydir/appendonly.aof.1.incr.aof", b"*2\r\n"), Some(Kind::Aof));
        assert_eq!(Kind::of(b"appendonlydir/appendonly.aof.manifest", b"file "), Some(Kind::AofManifest));
        assert_eq!(Kind::of(b"mongodb_backup/rpger/characters.bson", b"\x10\0\0\0"), Some(Kind::Bson));
        assert_eq!(Kind::of(b"mongodb_backup/rpger/characters.metadata.json", b"{"), Some(Kind::BsonMetadata));
        assert_eq!(Kind::of(b"mongodb.archive", &mongo::MAGIC), Some(Kind::MongoArchive));
        assert_eq!(Kind::of(b"chroma/chroma.sqlite3", sqlite::MAGIC), Some(Kind::Sqlite));
        assert_eq!(Kind::of(b"chroma/notes.db", b"hello"), None);
        assert_eq!(Kind::of(b"chroma/x/header.bin", b"\0\0"), None);
    }
}
