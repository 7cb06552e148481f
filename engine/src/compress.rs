//! Per-chunk zstd; a chunk that does not shrink is stored raw.

use crate::error::{Error, ErrorKind, Result};
use rpger_formats::pack::Encoding;
use std::cell::RefCell;

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// Compresses one chunk at `level`; returns the encoding and the stored bytes.
pub fn compress(data: &[u8], level: i32) -> (Encoding, Vec<u8>) {
    let out = COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            *c = zstd::bulk::Compressor::new(level).ok().map(|z| (level, z));
        }
        c.as_mut().and_then(|(_, z)| z.compress(data).ok())
    });
    match out {
        Some(z) if z.len() < data.len() => (Encoding::Zstd, z),
        _ => (Encoding::Raw, data.to_vec()),
    }
}

/// Decodes a stored blob back into exactly `raw_len` bytes.
///
/// # Errors
/// [`ErrorKind::Corrupt`] when the blob does not decode to `raw_len` bytes.
pub fn decompress(encoding: Encoding, stored: &[u8], raw_len: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    decompress_into(encoding, stored, raw_len, &mut out)?;
    Ok(out)
}

/// Like [`decompress`] but into `out` (cleared first), so hot loops can reuse one buffer.
///
/// # Errors
/// [`ErrorKind::Corrupt`] when the blob does not decode to `raw_len` bytes.
pub fn decompress_into(encoding: Encoding, stored: &[u8], raw_len: usize, out: &mut Vec<u8>) -> Result<()> {
    out.clear();
    decompress_append(encoding, stored, raw_len, out)
}

/// Like [`decompress`] but appended to `out`: a restore decodes consecutive chunks straight into
/// the buffer it writes, with no copy in between. On error `out` keeps its old length.
///
/// # Errors
/// [`ErrorKind::Corrupt`] when the blob does not decode to `raw_len` bytes.
pub fn decompress_append(encoding: Encoding, stored: &[u8], raw_len: usize, out: &mut Vec<u8>) -> Result<()> {
    let start = out.len();
    match encoding {
        Encoding::Raw if stored.len() == raw_len => {
            out.extend_from_slice(stored);
            Ok(())
        }
        Encoding::Raw => Err(Error::new(ErrorKind::Corrupt, format!("raw blob is {} bytes, expected {raw_len}", stored.len()))),
        Encoding::Zstd => {
            out.reserve(raw_len);
            let r = DECOMPRESSOR.with(|d| {
                let mut d = d.borrow_mut();
                if d.is_none() {
                    *d = zstd::bulk::Decompressor::new().ok();
                }
                // A cursor at the end writes into the spare capacity.
                let mut tail = std::io::Cursor::new(&mut *out);
                tail.set_position(start as u64);
                match d.as_mut() {
                    Some(d) => d.decompress_to_buffer(stored, &mut tail).map_err(|e| e.to_string()),
                    None => Err("cannot create a zstd decompressor".into()),
                }
            });
            let r = match r {
                Ok(n) if n == raw_len => Ok(()),
                Ok(n) => Err(Error::new(ErrorKind::Corrupt, format!("blob decompressed to {n} bytes, expected {raw_len}"))),
                Err(e) => Err(Error::with_cause(ErrorKind::Corrupt, "blob does not decompress", e)),
            };
            if r.is_err() {
                out.truncate(start);
            }
            r
        }
        // Rebuilding a delta needs its bases: `delta::ChunkReader` does that.
        Encoding::ZstdDelta => Err(Error::new(ErrorKind::Corrupt, "a delta blob cannot be decoded without its bases")),
    }
}

/// Compresses a whole small object (manifests).
pub fn compress_all(data: &[u8], level: i32) -> Vec<u8> {
    zstd::bulk::compress(data, level).unwrap_or_else(|_| data.to_vec())
}

/// Decompresses a whole small object, refusing to grow beyond `limit` bytes.
///
/// # Errors
/// [`ErrorKind::Corrupt`] on bad data or when the output would pass `limit`.
pub fn decompress_all(data: &[u8], limit: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    let dec = zstd::stream::read::Decoder::new(data).map_err(|e| Error::corrupt("zstd stream", e))?;
    let mut out = Vec::new();
    dec.take(limit as u64 + 1).read_to_end(&mut out).map_err(|e| Error::corrupt("zstd stream", e))?;
    if out.len() > limit {
        return Err(Error::new(ErrorKind::Corrupt, format!("decompresses beyond the {limit}-byte limit")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_raw_fallback() {
        let text = b"abcabcabcabcabcabcabcabcabcabcabcabc".repeat(100);
        let (e, z) = compress(&text, 3);
        assert_eq!(e, Encoding::Zstd);
        assert_eq!(decompress(e, &z, text.len()).unwrap(), text);
        let noise: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let (e, z) = compress(&noise, 3);
        assert_eq!(decompress(e, &z, noise.len()).unwrap(), noise);
        assert!(decompress(Encoding::Zstd, b"not zstd", 10).is_err());
    }

    #[test]
    fn append_keeps_what_is_there_and_nothing_on_error() {
        let a = b"first chunk ".repeat(300);
        let b = b"second chunk, other bytes ".repeat(200);
        let (ea, za) = compress(&a, 3);
        let (eb, zb) = compress(&b, 3);
        let mut out = b"head".to_vec();
        decompress_append(ea, &za, a.len(), &mut out).unwrap();
        decompress_append(eb, &zb, b.len(), &mut out).unwrap();
        assert_eq!(out, [&b"head"[..], &a, &b].concat());
        let before = out.clone();
        assert!(decompress_append(eb, &zb, b.len() + 1, &mut out).is_err());
        assert!(decompress_append(Encoding::Zstd, b"not zstd", 10, &mut out).is_err());
        assert!(decompress_append(Encoding::Raw, b"short", 10, &mut out).is_err());
        assert_eq!(out, before);
    }

    #[test]
    fn decompress_all_limits_output() {
        let big = vec![0u8; 1 << 20];
        let z = compress_all(&big, 3);
        assert!(decompress_all(&z, 1000).is_err());
        assert_eq!(decompress_all(&z, 1 << 20).unwrap(), big);
    }
}
