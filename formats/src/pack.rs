//! Pack files: a header, blobs back to back, then a trailer that lists every blob, so a pack
//! alone is enough to rebuild the index.
//!
//! ```text
//! header   magic "RPGSPACK" | version u16 LE
//! blobs    blob bytes, back to back (zstd frames, raw chunk bytes or deltas, see [`crate::delta`])
//! entries  count x ENTRY_LEN bytes: chunk id (32) | offset u32 | len u32 | raw_len u32
//!          | encoding u8 | reserved [u8; 3] (zero)
//! footer   count u32 | BLAKE3(entries) (32) | magic "RPGSPEND"
//! ```
//! `offset` counts from the start of the file. Version 2 added encoding 2 (a zstd delta against
//! base chunks); version 3 lets a delta's base be a delta itself (a chain, see
//! [`crate::delta::MAX_DEPTH`]). Older packs are read unchanged; an older build refuses a version 3
//! pack by its version instead of misreading its chains.

use crate::envelope::Reader;
use crate::{DecodeError, Id};

/// First bytes of a pack.
pub const MAGIC: [u8; 8] = *b"RPGSPACK";
/// Last bytes of a pack.
pub const END_MAGIC: [u8; 8] = *b"RPGSPEND";
/// Pack version written by this build.
pub const VERSION: u16 = 3;
/// Oldest pack version read.
pub const MIN_VERSION: u16 = 1;
/// Header length.
pub const HEADER_LEN: usize = 10;
/// One trailer entry.
pub const ENTRY_LEN: usize = 48;
/// Footer length.
pub const FOOTER_LEN: usize = 4 + 32 + 8;
/// Most blobs one pack may list (bounds trailer allocation).
pub const MAX_ENTRIES: u32 = 1 << 20;
/// Largest raw chunk a blob may hold (fastcdc's maximum chunk size).
pub const MAX_RAW_LEN: u32 = 16 << 20;
const KIND: &str = "pack";

/// How a blob's bytes encode the chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Encoding {
    /// The chunk bytes as they are (compression did not shrink them).
    Raw = 0,
    /// One zstd frame.
    Zstd = 1,
    /// A zstd frame compressed against base chunks (their bytes as a prefix), behind a header
    /// naming them; see [`crate::delta`]. Bases are never deltas themselves.
    ZstdDelta = 2,
}

impl Encoding {
    /// Decodes the tag byte.
    ///
    /// # Errors
    /// [`DecodeError::Invalid`] for an unknown tag.
    pub fn from_u8(v: u8) -> Result<Self, DecodeError> {
        match v {
            0 => Ok(Encoding::Raw),
            1 => Ok(Encoding::Zstd),
            2 => Ok(Encoding::ZstdDelta),
            _ => Err(DecodeError::Invalid { kind: KIND, reason: format!("unknown blob encoding {v}") }),
        }
    }
}

/// One blob listed in a pack trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobEntry {
    /// BLAKE3 of the uncompressed chunk.
    pub id: Id,
    /// Offset of the blob from the start of the pack file.
    pub offset: u32,
    /// Stored length.
    pub len: u32,
    /// Uncompressed length.
    pub raw_len: u32,
    /// How the stored bytes encode the chunk.
    pub encoding: Encoding,
}

/// The header every pack starts with.
pub fn header() -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..].copy_from_slice(&VERSION.to_le_bytes());
    h
}

/// Encodes the trailer (entries + footer) that ends a pack.
pub fn encode_trailer(entries: &[BlobEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_LEN + FOOTER_LEN);
    for e in entries {
        out.extend_from_slice(&e.id.0);
        out.extend_from_slice(&e.offset.to_le_bytes());
        out.extend_from_slice(&e.len.to_le_bytes());
        out.extend_from_slice(&e.raw_len.to_le_bytes());
        out.push(e.encoding as u8);
        out.extend_from_slice(&[0, 0, 0]);
    }
    let sum = blake3::hash(&out);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    out.extend_from_slice(sum.as_bytes());
    out.extend_from_slice(&END_MAGIC);
    out
}

/// Checks the header of a pack.
///
/// # Errors
/// [`DecodeError`] when the magic or version is wrong.
pub fn check_header(bytes: &[u8]) -> Result<(), DecodeError> {
    if bytes.len() < HEADER_LEN || bytes[..8] != MAGIC {
        return Err(DecodeError::BadMagic { kind: KIND });
    }
    let v = u16::from_le_bytes([bytes[8], bytes[9]]);
    if !(MIN_VERSION..=VERSION).contains(&v) {
        return Err(DecodeError::UnsupportedVersion { kind: KIND, found: v, min: MIN_VERSION, max: VERSION });
    }
    Ok(())
}

/// Reads the footer (the last [`FOOTER_LEN`] bytes of a pack of `file_len` bytes) and returns how
/// many bytes of entries precede it.
///
/// # Errors
/// [`DecodeError`] when the footer is malformed or announces more entries than fit.
pub fn trailer_len(footer: &[u8], file_len: u64) -> Result<usize, DecodeError> {
    if footer.len() != FOOTER_LEN {
        return Err(DecodeError::Truncated { kind: KIND, needed: FOOTER_LEN as u64, got: footer.len() as u64 });
    }
    if footer[36..44] != END_MAGIC {
        return Err(DecodeError::BadMagic { kind: "pack trailer" });
    }
    let count = u32::from_le_bytes([footer[0], footer[1], footer[2], footer[3]]);
    if count > MAX_ENTRIES {
        return Err(DecodeError::LimitExceeded { kind: KIND, what: "entry count", value: count as u64, limit: MAX_ENTRIES as u64 });
    }
    let entries_len = count as u64 * ENTRY_LEN as u64;
    let needed = HEADER_LEN as u64 + entries_len + FOOTER_LEN as u64;
    if needed > file_len {
        return Err(DecodeError::Truncated { kind: KIND, needed, got: file_len });
    }
    Ok(entries_len as usize + FOOTER_LEN)
}

/// Decodes a trailer (entries + footer) that ends a pack of `file_len` bytes, checking its
/// checksum and that every blob lies between the header and the trailer without overlap.
///
/// # Errors
/// [`DecodeError`] on any inconsistency.
pub fn decode_trailer(trailer: &[u8], file_len: u64) -> Result<Vec<BlobEntry>, DecodeError> {
    if trailer.len() < FOOTER_LEN {
        return Err(DecodeError::Truncated { kind: KIND, needed: FOOTER_LEN as u64, got: trailer.len() as u64 });
    }
    let footer = &trailer[trailer.len() - FOOTER_LEN..];
    let expect = trailer_len(footer, file_len)?;
    if expect != trailer.len() {
        return Err(DecodeError::Invalid { kind: KIND, reason: format!("trailer is {} bytes, footer says {}", trailer.len(), expect) });
    }
    let entries_bytes = &trailer[..trailer.len() - FOOTER_LEN];
    if blake3::hash(entries_bytes).as_bytes() != &footer[4..36] {
        return Err(DecodeError::ChecksumMismatch { kind: "pack trailer" });
    }
    let blobs_end = file_len - trailer.len() as u64;
    let mut r = Reader::new(KIND, entries_bytes);
    let mut out = Vec::with_capacity(entries_bytes.len() / ENTRY_LEN);
    while r.remaining() > 0 {
        let id = Id::from_slice(r.take(32)?);
        let offset = r.u32()?;
        let len = r.u32()?;
        let raw_len = r.u32()?;
        let tail = r.take(4)?;
        let encoding = Encoding::from_u8(tail[0])?;
        out.push(BlobEntry { id, offset, len, raw_len, encoding });
    }
    check_layout(&out, blobs_end)?;
    Ok(out)
}

fn check_layout(entries: &[BlobEntry], blobs_end: u64) -> Result<(), DecodeError> {
    let mut spans: Vec<(u64, u64)> = Vec::with_capacity(entries.len());
    for e in entries {
        if e.raw_len > MAX_RAW_LEN {
            return Err(DecodeError::LimitExceeded {
                kind: KIND,
                what: "raw blob length",
                value: e.raw_len as u64,
                limit: MAX_RAW_LEN as u64,
            });
        }
        if e.encoding == Encoding::Raw && e.len != e.raw_len {
            return Err(DecodeError::Invalid {
                kind: KIND,
                reason: format!("raw blob {} has len {} != raw_len {}", e.id.short(), e.len, e.raw_len),
            });
        }
        let start = e.offset as u64;
        let end = start + e.len as u64;
        if start < HEADER_LEN as u64 || end > blobs_end {
            return Err(DecodeError::Invalid {
                kind: KIND,
                reason: format!("blob {} at {}..{} outside the blob area {}..{}", e.id.short(), start, end, HEADER_LEN, blobs_end),
            });
        }
        spans.push((start, end));
    }
    spans.sort_unstable();
    if spans.windows(2).any(|w| w[1].0 < w[0].1) {
        return Err(DecodeError::Invalid { kind: KIND, reason: "overlapping blobs".into() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> (Vec<u8>, Vec<BlobEntry>) {
        let mut pack = header().to_vec();
        let mut entries = vec![];
        for (i, blob) in [&b"alpha"[..], b"bravo!", b""].iter().enumerate() {
            entries.push(BlobEntry {
                id: Id([i as u8; 32]),
                offset: pack.len() as u32,
                len: blob.len() as u32,
                raw_len: blob.len() as u32,
                encoding: Encoding::Raw,
            });
            pack.extend_from_slice(blob);
        }
        pack.extend_from_slice(&encode_trailer(&entries));
        (pack, entries)
    }

    fn decode_whole(pack: &[u8]) -> Result<Vec<BlobEntry>, DecodeError> {
        check_header(pack)?;
        if pack.len() < FOOTER_LEN {
            return Err(DecodeError::Truncated { kind: KIND, needed: 44, got: pack.len() as u64 });
        }
        let tl = trailer_len(&pack[pack.len() - FOOTER_LEN..], pack.len() as u64)?;
        decode_trailer(&pack[pack.len() - tl..], pack.len() as u64)
    }

    #[test]
    fn round_trip() {
        let (pack, entries) = sample();
        assert_eq!(decode_whole(&pack).unwrap(), entries);
    }

    #[test]
    fn every_trailer_bit_flip_is_detected() {
        let (pack, _) = sample();
        let start = pack.len() - (3 * ENTRY_LEN + FOOTER_LEN);
        for i in start..pack.len() {
            let mut bad = pack.clone();
            bad[i] ^= 0x10;
            assert!(decode_whole(&bad).is_err(), "flip at {i}");
        }
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_whole(&bytes);
        }

        #[test]
        fn truncation_is_an_error(cut in 0usize..100) {
            let (pack, _) = sample();
            let cut = cut.min(pack.len() - 1);
            prop_assert!(decode_whole(&pack[..cut]).is_err());
        }
    }
}
