//! Writing packs (one writer per backup, blobs appended in order) and reading blobs back.

use super::Store;
use crate::compress;
use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::fsutil;
use rpger_formats::index::Location;
use rpger_formats::pack::{self, BlobEntry, Encoding};
use rpger_formats::Id;
use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// A pack that has been made durable under its final name.
#[derive(Debug)]
pub struct FinishedPack {
    /// Pack id.
    pub id: Id,
    /// Its blobs.
    pub entries: Vec<BlobEntry>,
    /// File size.
    pub bytes: u64,
}

struct OpenPack {
    tmp: PathBuf,
    out: BufWriter<File>,
    hasher: blake3::Hasher,
    entries: Vec<BlobEntry>,
    len: u64,
}

/// Appends blobs to packs and closes each pack once it reaches the store's target size.
pub struct PackWriter {
    store: Store,
    current: Option<OpenPack>,
}

impl PackWriter {
    /// A writer for `store`.
    pub fn new(store: &Store) -> Self {
        PackWriter { store: store.clone(), current: None }
    }

    fn open(&mut self) -> Result<&mut OpenPack> {
        if self.current.is_none() {
            let tmp = fsutil::tmp_path(&self.store.tmp_dir(), "pack");
            let f = OpenOptions::new().write(true).create_new(true).open(&tmp).at("create pack", &tmp)?;
            let mut p = OpenPack { tmp, out: BufWriter::with_capacity(1 << 20, f), hasher: blake3::Hasher::new(), entries: vec![], len: 0 };
            let h = pack::header();
            p.out.write_all(&h).at("write pack", &p.tmp)?;
            p.hasher.update(&h);
            p.len = h.len() as u64;
            self.current = Some(p);
        }
        Ok(self.current.as_mut().expect("opened above"))
    }

    /// Appends one blob. Returns the pack it closed, if this blob filled one.
    ///
    /// # Errors
    /// I/O errors on the temp pack (e.g. a full disk).
    pub fn add(&mut self, id: Id, encoding: Encoding, stored: &[u8], raw_len: u32) -> Result<Option<FinishedPack>> {
        let target = self.store.config().pack_target_size as u64;
        let p = self.open()?;
        p.out.write_all(stored).at("write pack", &p.tmp)?;
        p.hasher.update(stored);
        p.entries.push(BlobEntry { id, offset: p.len as u32, len: stored.len() as u32, raw_len, encoding });
        p.len += stored.len() as u64;
        // Offsets are u32: close well before 4 GiB whatever the configured target.
        if p.len >= target || p.len >= (1 << 31) || p.entries.len() as u32 >= pack::MAX_ENTRIES - 1 {
            return self.finish();
        }
        Ok(None)
    }

    /// Closes the open pack (if any): trailer, fsync, rename, fsync directory.
    ///
    /// # Errors
    /// I/O errors with the path.
    pub fn finish(&mut self) -> Result<Option<FinishedPack>> {
        let Some(mut p) = self.current.take() else { return Ok(None) };
        let res = (|| {
            let trailer = pack::encode_trailer(&p.entries);
            p.out.write_all(&trailer).at("write pack", &p.tmp)?;
            p.hasher.update(&trailer);
            p.len += trailer.len() as u64;
            let f = p.out.into_inner().map_err(|e| Error::io("flush pack", &p.tmp, e.into_error()))?;
            f.sync_all().at("fsync pack", &p.tmp)?;
            drop(f);
            let id = Id::from(p.hasher.finalize());
            let dest = self.store.pack_path(&id);
            let dir = dest.parent().expect("pack path has a parent");
            if !dir.is_dir() {
                fs::create_dir_all(dir).at("create", dir)?;
                fsutil::fsync_dir(&self.store.root().join("packs"))?;
            }
            fs::rename(&p.tmp, &dest).at("rename pack into place", &dest)?;
            fsutil::fsync_dir(dir)?;
            Ok(FinishedPack { id, entries: std::mem::take(&mut p.entries), bytes: p.len })
        })();
        if res.is_err() {
            let _ = fs::remove_file(&p.tmp);
        }
        res.map(Some)
    }
}

impl Drop for PackWriter {
    fn drop(&mut self) {
        if let Some(p) = self.current.take() {
            let _ = fs::remove_file(&p.tmp);
        }
    }
}

/// Reads and decodes the trailer of a pack file; returns its length and its blobs.
///
/// # Errors
/// [`ErrorKind::Missing`] when the pack does not exist, [`ErrorKind::Corrupt`] when its header,
/// footer or trailer is damaged (truncation included).
pub fn read_trailer(store: &Store, pack: &Id) -> Result<(u64, Vec<BlobEntry>)> {
    let path = store.pack_path(pack);
    let f = File::open(&path).at("open pack", &path)?;
    let len = f.metadata().at("stat pack", &path)?.len();
    let corrupt = |e: rpger_formats::DecodeError| Error::corrupt(format!("pack {}", path.display()), e);
    let mut header = [0u8; pack::HEADER_LEN];
    f.read_exact_at(&mut header, 0)
        .map_err(|_| Error::new(ErrorKind::Corrupt, format!("pack {}: shorter than its header", path.display())))?;
    pack::check_header(&header).map_err(corrupt)?;
    if len < (pack::HEADER_LEN + pack::FOOTER_LEN) as u64 {
        return Err(Error::new(ErrorKind::Corrupt, format!("pack {}: truncated to {len} bytes", path.display())));
    }
    let mut footer = [0u8; pack::FOOTER_LEN];
    f.read_exact_at(&mut footer, len - pack::FOOTER_LEN as u64).at("read pack", &path)?;
    let tl = pack::trailer_len(&footer, len).map_err(corrupt)?;
    let mut trailer = vec![0u8; tl];
    f.read_exact_at(&mut trailer, len - tl as u64).at("read pack", &path)?;
    let entries = pack::decode_trailer(&trailer, len).map_err(corrupt)?;
    Ok((len, entries))
}

/// Decompresses a whole (non-delta) chunk's stored bytes into `out`; checks the BLAKE3 against
/// `id` unless `check` is false.
///
/// # Errors
/// [`ErrorKind::Corrupt`] naming chunk and pack for a blob that does not decompress or does not
/// hash to `id`.
pub fn decode_whole(id: &Id, loc: &Location, stored: &[u8], out: &mut Vec<u8>, check: bool) -> Result<()> {
    out.clear();
    decode_whole_append(id, loc, stored, out, check)
}

/// Like [`decode_whole`] but appended to `out`; on error `out` keeps its old length.
///
/// # Errors
/// As [`decode_whole`].
pub fn decode_whole_append(id: &Id, loc: &Location, stored: &[u8], out: &mut Vec<u8>, check: bool) -> Result<()> {
    let what = || format!("chunk {} in pack {}", id.short(), loc.pack.short());
    let start = out.len();
    compress::decompress_append(loc.encoding, stored, loc.raw_len as usize, out).map_err(|e| e.context(what()))?;
    if check && Id::of(&out[start..]) != *id {
        out.truncate(start);
        return Err(Error::new(ErrorKind::Corrupt, format!("{}: content does not match its hash", what())));
    }
    Ok(())
}

/// Reads blobs from packs; keeps pack files open (shared between threads).
pub struct PackReader {
    store: Store,
    open: Mutex<HashMap<Id, Arc<File>>>,
}

const MAX_OPEN_PACKS: usize = 256;

impl PackReader {
    /// A reader over `store`'s packs.
    pub fn new(store: &Store) -> Self {
        PackReader { store: store.clone(), open: Mutex::new(HashMap::new()) }
    }

    fn file(&self, pack: &Id) -> Result<Arc<File>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = open.get(pack) {
            return Ok(f.clone());
        }
        let path = self.store.pack_path(pack);
        let f = Arc::new(File::open(&path).at("open pack", &path)?);
        if open.len() >= MAX_OPEN_PACKS {
            open.clear();
        }
        open.insert(*pack, f.clone());
        Ok(f)
    }

    /// Reads and decompresses one chunk into `out`, reusing `stored` as the read buffer. Checks
    /// the BLAKE3 against `id` unless `check` is false (the caller proved this blob already).
    ///
    /// # Errors
    /// As [`PackReader::read_chunk`].
    pub fn read_chunk_into(&self, id: &Id, loc: &Location, stored: &mut Vec<u8>, out: &mut Vec<u8>, check: bool) -> Result<()> {
        self.read_blob_into(id, loc, stored)?;
        decode_whole(id, loc, stored, out, check)
    }

    /// Reads the stored bytes of one blob into `stored`.
    ///
    /// # Errors
    /// [`ErrorKind::Missing`] for a missing pack, [`ErrorKind::Corrupt`] for a short one.
    pub fn read_blob_into(&self, id: &Id, loc: &Location, stored: &mut Vec<u8>) -> Result<()> {
        let n = self.read_blob(id, loc, stored)?.len();
        stored.truncate(n);
        Ok(())
    }

    /// Reads up to `span` bytes of `pack` from `offset` on into `buf` (fewer only at the pack's
    /// end), so that blobs stored next to each other are read with one system call.
    ///
    /// # Errors
    /// [`ErrorKind::Missing`] for a missing pack, [`ErrorKind::Io`] for a failed read.
    pub fn read_span(&self, pack: &Id, offset: u64, span: usize, buf: &mut Vec<u8>) -> Result<()> {
        let f = self.file(pack)?;
        buf.resize(span, 0);
        let mut got = 0;
        while got < span {
            match f.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("read", &self.store.pack_path(pack), e)),
            }
        }
        buf.truncate(got);
        Ok(())
    }

    /// Reads the stored bytes of one blob into the front of `buf` and returns them. `buf` only
    /// ever grows: a hot loop that reuses it does not zero it again for every read (1 % of a
    /// restore).
    ///
    /// # Errors
    /// As [`PackReader::read_blob_into`].
    pub fn read_blob<'b>(&self, id: &Id, loc: &Location, buf: &'b mut Vec<u8>) -> Result<&'b [u8]> {
        let what = || format!("chunk {} in pack {}", id.short(), loc.pack.short());
        let f = self.file(&loc.pack).map_err(|e| e.context(what()))?;
        let len = loc.len as usize;
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let blob = &mut buf[..len];
        f.read_exact_at(blob, loc.offset as u64).map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::UnexpectedEof { ErrorKind::Corrupt } else { ErrorKind::Io };
            Error::with_cause(kind, format!("{} (pack file {})", what(), self.store.pack_path(&loc.pack).display()), e)
        })?;
        Ok(blob)
    }

    /// Reads, decompresses and checks one chunk: the result hashes to `id`.
    ///
    /// # Errors
    /// [`ErrorKind::Missing`] for a missing pack, [`ErrorKind::Corrupt`] for a blob that is short,
    /// does not decompress or does not hash to `id`; the message names chunk and pack.
    pub fn read_chunk(&self, id: &Id, loc: &Location) -> Result<Vec<u8>> {
        let (mut stored, mut out) = (Vec::new(), Vec::new());
        self.read_chunk_into(id, loc, &mut stored, &mut out, true)?;
        Ok(out)
    }
}
