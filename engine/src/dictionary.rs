//! Per-source compression dictionaries: chunks stored whole compress against a dictionary trained
//! on the source's own data.
//!
//! A 16 KiB chunk compressed alone cannot reuse what the chunks around it share (BSON field names,
//! SQLite page layouts, RDB key prefixes). A dictionary of that common content, trained once per
//! source, shrank night 1 of the shared dataset by about 6 % (BSON by 12-21 %). The dictionary is
//! an ordinary chunk, stored whole and named by its BLAKE3, and a chunk compressed with it is an
//! ordinary delta with the dictionary as its one base: readers, `verify --deep` (which names every
//! file built on a damaged dictionary) and the chain depth bound need nothing new. Only `prune`
//! must know the dictionaries ([`registered`]), as no file uses them.
//!
//! `dicts/<source name>` holds the dictionary's id in hex. The file only steers compression: a
//! lost or damaged one makes the next backup train a new dictionary, never loses data.

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::fsutil;
use crate::store::index::Index;
use crate::store::Store;
use rpger_formats::Id;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use zstd::zstd_safe::{CCtx, CDict, CParameter, DictAttachPref, ResetDirective};

/// Bytes of a dictionary: 64 KiB, four average chunks. On the shared dataset's night 1, 110 KiB
/// saved under 1 % more than 64 KiB; every chunk compressed with it carries the dictionary's
/// index tables in each worker's cache.
pub const DICT_SIZE: usize = 64 << 10;
/// Samples a dictionary is trained on. 300 and 1000 samples of 16 KiB trained dictionaries within
/// 0.5 % of each other on every source of the shared dataset; 300 train in about 0.2 s.
pub const SAMPLES: usize = 300;
/// Bytes of each sample (an average chunk).
pub const SAMPLE_LEN: usize = 16 << 10;
/// Sample bytes below which no dictionary is trained: a smaller source would pay more for its
/// dictionary than it saves.
pub const MIN_SAMPLE_BYTES: usize = 1 << 20;
/// Least gain, in percent of the plain-compressed size of held-out samples, for which a source
/// gets a dictionary. Compressing with one is 20-25 % slower at level 2 (zstd searches its
/// tables as well as the chunk's own); on the shared dataset MongoDB's BSON gains 12-21 %,
/// Redis's RDB and Chroma's SQLite 3-7 %.
pub const MIN_GAIN_PERCENT: usize = 8;
/// Largest `dicts/` file read (a hex id and a newline).
const MAX_REGISTRY_FILE: u64 = 1024;

/// A trained dictionary, ready to compress with.
pub struct Dictionary {
    /// BLAKE3 of [`Dictionary::bytes`]: the chunk id deltas name as their base.
    pub id: Id,
    /// Raw-content dictionary bytes (a delta's prefix).
    pub bytes: Vec<u8>,
    cdict: CDict<'static>,
}

impl Dictionary {
    /// Prepares `bytes` (raw content) for compression at `level`.
    pub fn new(bytes: Vec<u8>, level: i32) -> Dictionary {
        // zstd reads a buffer that starts with its dictionary magic as a structured dictionary;
        // trained ones have their magic cleared, so these bytes are always raw content, exactly
        // the prefix a delta's reader gives the decoder.
        let cdict = CDict::create(&bytes, level);
        Dictionary { id: Id::of(&bytes), bytes, cdict }
    }

    /// The zstd frame of `data` compressed with this dictionary; `None` if zstd refuses.
    pub fn compress(&self, data: &[u8]) -> Option<Vec<u8>> {
        thread_local! {
            static CCTX: RefCell<Option<CCtx<'static>>> = const { RefCell::new(None) };
        }
        CCTX.with(|c| {
            let mut c = c.borrow_mut();
            let cctx = c.get_or_insert_with(CCtx::create);
            let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
            // Attached, the dictionary's tables are searched in place; zstd would otherwise copy
            // them into the context for every chunk over 16 KiB at level 2 (most chunks).
            let r = cctx
                .set_parameter(CParameter::ForceAttachDict(DictAttachPref::ForceAttach))
                .and_then(|_| cctx.ref_cdict(&self.cdict))
                .and_then(|_| cctx.compress2(&mut out, data));
            // Drops the dictionary reference whatever happened.
            if cctx.reset(ResetDirective::SessionAndParameters).is_err() {
                *c = None;
            }
            r.ok().map(|_| out)
        })
    }
}

/// What training on a source's samples gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Trained {
    /// A dictionary's raw-content bytes.
    Dictionary(Vec<u8>),
    /// A dictionary that saves under [`MIN_GAIN_PERCENT`]: the source goes without.
    DoesNotPay,
    /// Too little data to tell (a later, larger backup tries again).
    TooLittle,
}

/// Trains a raw-content dictionary of at most [`DICT_SIZE`] bytes on two thirds of `samples`
/// and keeps it if it compresses the other third, at `level`, at least [`MIN_GAIN_PERCENT`]
/// smaller than plain compression does.
pub fn train(samples: &[&[u8]], level: i32) -> Trained {
    let total: usize = samples.iter().map(|s| s.len()).sum();
    if total < MIN_SAMPLE_BYTES || samples.len() < 12 {
        return Trained::TooLittle;
    }
    // Every third sample is held out, to judge the dictionary on data it was not trained on.
    let mut flat = Vec::with_capacity(total);
    let (mut sizes, mut held_out) = (vec![], vec![]);
    for (i, s) in samples.iter().enumerate() {
        if i % 3 == 2 {
            held_out.push(*s);
        } else {
            flat.extend_from_slice(s);
            sizes.push(s.len());
        }
    }
    let mut dict = vec![0u8; DICT_SIZE];
    let Some(n) = fast_cover(&mut dict, &flat, &sizes) else { return Trained::TooLittle };
    dict.truncate(n);
    // Cleared magic: the bytes are raw content to every zstd call (see `Dictionary::new`).
    let magic = zstd::zstd_safe::zstd_sys::ZSTD_MAGIC_DICTIONARY.to_le_bytes();
    if dict.len() < DICT_SIZE / 4 || dict[..4] != magic {
        return Trained::TooLittle;
    }
    dict[..4].fill(0);
    let d = Dictionary::new(dict, level);
    let (mut with, mut without) = (0usize, 0usize);
    for s in &held_out {
        with += d.compress(s).map_or(s.len(), |f| f.len().min(s.len()));
        without += zstd::bulk::compress(s, level).map_or(s.len(), |f| f.len().min(s.len()));
    }
    match with * 100 <= without * (100 - MIN_GAIN_PERCENT) {
        true => Trained::Dictionary(d.bytes),
        false => Trained::DoesNotPay,
    }
}

/// zstd's fastCover trainer with fixed parameters (k 1024, d 8, as measured on the shared
/// dataset's three sources; the parameter search of `ZDICT_trainFromBuffer` took 7 times as
/// long for a dictionary under 1 % better). Returns the dictionary's length.
#[allow(unsafe_code)]
fn fast_cover(dict: &mut [u8], flat: &[u8], sizes: &[usize]) -> Option<usize> {
    use zstd::zstd_safe::zstd_sys as sys;
    let params = sys::ZDICT_fastCover_params_t {
        k: 1024,
        d: 8,
        f: 20,
        steps: 0,
        nbThreads: 0,
        splitPoint: 1.0,
        accel: 1,
        shrinkDict: 0,
        shrinkDictMaxRegression: 0,
        zParams: sys::ZDICT_params_t { compressionLevel: 0, notificationLevel: 0, dictID: 0 },
    };
    // SAFETY: `dict` is writable for its length, `flat` holds exactly the sum of `sizes` bytes
    // (built together by the caller), and zstd reads nothing else; the call keeps no pointer.
    let n = unsafe {
        sys::ZDICT_trainFromBuffer_fastCover(
            dict.as_mut_ptr().cast(),
            dict.len(),
            flat.as_ptr().cast(),
            sizes.as_ptr(),
            u32::try_from(sizes.len()).ok()?,
            params,
        )
    };
    // SAFETY: ZDICT_isError only inspects the code.
    let failed = unsafe { sys::ZDICT_isError(n) } != 0;
    (!failed && n <= dict.len()).then_some(n)
}

/// Up to [`SAMPLES`] samples of [`SAMPLE_LEN`] bytes spread evenly over `files` (path, length),
/// so each file gives samples in proportion to its size. Unreadable files give none (the
/// backup itself reports them).
pub fn sample_files(files: &[(PathBuf, u64)]) -> Vec<Vec<u8>> {
    let total: u64 = files.iter().map(|f| f.1).sum();
    if total < MIN_SAMPLE_BYTES as u64 {
        return vec![];
    }
    let step = (total / SAMPLES as u64).max(SAMPLE_LEN as u64);
    let mut out = vec![];
    let mut next = step / 2;
    let mut before = 0u64;
    for (path, len) in files {
        let end = before + len;
        if next < end {
            if let Ok(f) = fs::File::open(path) {
                while next < end && out.len() < SAMPLES {
                    let at = next - before;
                    let mut buf = vec![0u8; SAMPLE_LEN.min((len - at) as usize)];
                    match f.read_at(&mut buf, at) {
                        Ok(n) if n > 0 => {
                            buf.truncate(n);
                            out.push(buf);
                        }
                        _ => break,
                    }
                    next += step;
                }
            }
            next = next.max(end);
        }
        before = end;
    }
    out
}

fn registry_path(store: &Store, source: &str) -> PathBuf {
    store.root().join("dicts").join(source)
}

/// What `dicts/<source>` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// The source's dictionary.
    Dictionary(Id),
    /// A dictionary was trained for the source and did not pay: none is used or trained again.
    None,
}

/// What is registered for `source`; `None` (nothing) when its file is absent or unreadable: a
/// new dictionary is then trained.
pub fn registered_for(store: &Store, source: &str) -> Option<Registered> {
    let bytes = fsutil::read_limited(&registry_path(store, source), MAX_REGISTRY_FILE).ok()?;
    match std::str::from_utf8(&bytes).ok()?.trim() {
        NONE => Some(Registered::None),
        hex => hex.parse().ok().map(Registered::Dictionary),
    }
}

/// The registry's word for a source without a dictionary.
const NONE: &str = "none";

/// Every registered dictionary, by source name (unreadable registry files are skipped).
///
/// # Errors
/// When `dicts/` exists but cannot be listed.
pub fn registered(store: &Store) -> Result<HashMap<String, Id>> {
    let dir = store.root().join("dicts");
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
        Err(e) => return Err(Error::io("list", &dir, e)),
    };
    let mut out = HashMap::new();
    for e in rd.flatten() {
        let Some(name) = e.file_name().to_str().map(str::to_string) else { continue };
        if let Some(Registered::Dictionary(id)) = registered_for(store, &name) {
            out.insert(name, id);
        }
    }
    Ok(out)
}

/// Records what `source` uses. Call only once a dictionary chunk is indexed.
///
/// # Errors
/// I/O errors with the path.
pub fn register(store: &Store, source: &str, what: Registered) -> Result<()> {
    let dir = store.root().join("dicts");
    fs::create_dir_all(&dir).at("create", &dir)?;
    let text = match what {
        Registered::Dictionary(id) => id.to_hex(),
        Registered::None => NONE.to_string(),
    };
    fsutil::write_atomic(&store.tmp_dir(), &registry_path(store, source), format!("{text}\n").as_bytes())
}

/// Reads and checks a registered dictionary from the store, prepared at `level`.
///
/// # Errors
/// [`ErrorKind::Missing`] when it is not indexed; as [`crate::delta::ChunkReader::read_into`].
pub fn load(store: &Store, index: &Index, id: &Id, level: i32) -> Result<Dictionary> {
    let loc =
        index.get(id).ok_or_else(|| Error::new(ErrorKind::Missing, format!("dictionary chunk {} is not in the index", id.short())))?;
    let packs = crate::store::pack::PackReader::new(store);
    let reader = crate::delta::ChunkReader { index, packs: &packs };
    let (mut stored, mut bytes) = (Vec::new(), Vec::new());
    reader.read_into(id, &loc, &mut stored, &mut bytes, true)?;
    Ok(Dictionary::new(bytes, level))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records drawn from one vocabulary of 2,000 words, like a dump's documents: any 16 KiB
    /// holds only part of it, a dictionary most of it.
    fn records(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed | 1;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let vocab: Vec<String> = (0..2000u64).map(|i| format!("{:x}word{}", i.wrapping_mul(0x9e37_79b9) % 65_521, i % 97)).collect();
        let mut out = Vec::new();
        for i in 0..n {
            let words: Vec<&str> = (0..6).map(|_| vocab[(next() % 2000) as usize].as_str()).collect();
            out.extend_from_slice(format!("{{\"_id\":{i},\"text\":\"{}\",\"level\":{}}}", words.join(" "), next() % 20).as_bytes());
        }
        out
    }

    #[test]
    fn a_trained_dictionary_is_raw_content_and_shrinks_small_chunks() {
        let data = records(7, 60_000);
        let samples: Vec<&[u8]> = data.chunks(SAMPLE_LEN).collect();
        let Trained::Dictionary(dict) = train(&samples, 2) else { panic!("records share their layout: a dictionary pays") };
        assert!(dict.len() <= DICT_SIZE);
        assert_eq!(&dict[..4], &[0, 0, 0, 0]);
        let d = Dictionary::new(dict, 2);
        let chunk = &records(99, 300)[..];
        let with = d.compress(chunk).unwrap();
        let alone = zstd::bulk::compress(chunk, 2).unwrap();
        assert!(with.len() < alone.len(), "{} vs {}", with.len(), alone.len());
        // The frame decodes with the dictionary as a plain prefix, as a delta's reader does.
        let mut out = Vec::new();
        crate::delta::decompress(&with, &d.bytes, chunk.len(), &mut out).unwrap();
        assert_eq!(out, chunk);
    }

    #[test]
    fn too_little_data_trains_no_dictionary() {
        let data = records(7, 100);
        assert_eq!(train(&data.chunks(1024).collect::<Vec<_>>(), 2), Trained::TooLittle);
        assert_eq!(train(&[], 2), Trained::TooLittle);
    }

    #[test]
    fn a_dictionary_that_does_not_pay_is_refused() {
        // Noise: nothing for a dictionary to hold.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..(4 << 20))
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_ne!(
            std::mem::discriminant(&train(&noise.chunks(SAMPLE_LEN).collect::<Vec<_>>(), 2)),
            std::mem::discriminant(&Trained::Dictionary(vec![]))
        );
    }

    #[test]
    fn samples_are_spread_over_files_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, vec![1u8; 3 << 20]).unwrap();
        fs::write(&b, vec![2u8; 1 << 20]).unwrap();
        let s = sample_files(&[(a, 3 << 20), (b, 1 << 20), (dir.path().join("gone"), 5)]);
        let ones = s.iter().filter(|x| x[0] == 1).count();
        let twos = s.iter().filter(|x| x[0] == 2).count();
        assert!(s.len() <= SAMPLES && s.iter().all(|x| x.len() <= SAMPLE_LEN));
        assert!(ones > 2 * twos && twos > 0, "{ones} {twos}");
        assert!(sample_files(&[(dir.path().join("b"), 1000)]).is_empty());
    }
}
