//! Delta blobs and chunk features.
//!
//! A delta blob (encoding [`crate::pack::Encoding::ZstdDelta`]) is a chunk compressed by zstd
//! with the bytes of one or more *base* chunks, concatenated in the listed order, as a prefix
//! (a single-use raw dictionary):
//!
//! ```text
//! count u8 (1..=MAX_BASES) | count x base chunk id (32) | zstd frame
//! ```
//! A base may itself be a delta (pack version 3), but a chain holds at most [`MAX_DEPTH`] deltas
//! above a chunk stored whole, so any chunk is rebuilt from a bounded number of blob reads.
//! Pack version 2 stores never chain: there every base is stored whole.
//!
//! A features file (`features/<name>`, enveloped, magic `RPGSFEAT`) lists chunks that may serve
//! as bases (stored whole, or deltas less than [`MAX_DEPTH`] deep) with their resemblance
//! features, which later backups use to find a base for a new chunk:
//! `count u32 | count x (chunk id's first 8 bytes | FEATURES x u32)` (version 2; version 1
//! held whole 32-byte ids). In a store of a million chunks the chance that any two ids share
//! their first 8 bytes is about 2^-25, and such a collision costs nothing but a poorer delta: a
//! delta names its base by its whole id, compresses against that chunk's own bytes and is
//! checked against its own hash.

use crate::envelope::{self, Kind, Reader};
use crate::{DecodeError, Id};

/// Most bases one delta may name.
pub const MAX_BASES: usize = 4;
/// Most deltas in a chain, counting the chunk itself: a delta at depth `MAX_DEPTH` is never a
/// base. At 6 a week of nightly versions of a region chains one night to the next, and a
/// restore reads at most 7 blobs for it (one whole, six small deltas).
pub const MAX_DEPTH: u8 = 6;
/// Features per chunk.
pub const FEATURES: usize = 8;
/// Most entries a features file may hold.
pub const MAX_FEATURE_ENTRIES: u32 = 1 << 24;

const KIND_NAME: &str = "delta blob";

/// Resemblance features of one chunk.
pub type Features = [u32; FEATURES];

/// The envelope of features files.
pub const FEATURES_KIND: Kind = Kind { name: "features file", magic: *b"RPGSFEAT", min_version: 1, current_version: 2 };

/// How a features file names a chunk: [`Id::head`], the id's first 8 bytes.
pub type IdHead = u64;

/// Encodes a delta blob: header naming `bases`, then `frame`.
///
/// # Panics
/// When `bases` is empty or longer than [`MAX_BASES`] (a caller bug).
pub fn encode_blob(bases: &[Id], frame: &[u8]) -> Vec<u8> {
    assert!(!bases.is_empty() && bases.len() <= MAX_BASES, "a delta names 1..={MAX_BASES} bases");
    let mut out = Vec::with_capacity(1 + 32 * bases.len() + frame.len());
    out.push(bases.len() as u8);
    for b in bases {
        out.extend_from_slice(&b.0);
    }
    out.extend_from_slice(frame);
    out
}

/// Splits a delta blob into its bases and its zstd frame.
///
/// # Errors
/// [`DecodeError`] when the header is short or names 0 or too many bases.
pub fn decode_blob(blob: &[u8]) -> Result<(Vec<Id>, &[u8]), DecodeError> {
    let n = *blob.first().ok_or(DecodeError::Truncated { kind: KIND_NAME, needed: 1, got: 0 })? as usize;
    if n == 0 || n > MAX_BASES {
        return Err(DecodeError::Invalid { kind: KIND_NAME, reason: format!("{n} bases (1..={MAX_BASES} allowed)") });
    }
    let head = 1 + 32 * n;
    if blob.len() < head {
        return Err(DecodeError::Truncated { kind: KIND_NAME, needed: head as u64, got: blob.len() as u64 });
    }
    let bases = (0..n).map(|i| Id::from_slice(&blob[1 + 32 * i..1 + 32 * (i + 1)])).collect();
    Ok((bases, &blob[head..]))
}

/// Length of a delta blob's header, from its first byte (to read only the header).
pub fn header_len(first: u8) -> usize {
    1 + 32 * first as usize
}

/// Encodes a features file (the current version).
pub fn encode_features(entries: &[(IdHead, Features)]) -> Vec<u8> {
    let mut body = Vec::with_capacity(4 + entries.len() * (8 + 4 * FEATURES));
    body.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for (head, f) in entries {
        body.extend_from_slice(&head.to_be_bytes());
        for v in f {
            body.extend_from_slice(&v.to_le_bytes());
        }
    }
    envelope::seal(&FEATURES_KIND, &body)
}

/// Decodes a features file of either version; each chunk comes as its [`IdHead`].
///
/// # Errors
/// [`DecodeError`] on a bad envelope, a count over the limit or a body of the wrong length.
pub fn decode_features(bytes: &[u8]) -> Result<Vec<(IdHead, Features)>, DecodeError> {
    let (version, body) = envelope::open(&FEATURES_KIND, bytes)?;
    let id_len = if version == 1 { 32 } else { 8 };
    let mut r = Reader::new(FEATURES_KIND.name, body);
    let count = r.u32()?;
    if count > MAX_FEATURE_ENTRIES {
        return Err(DecodeError::LimitExceeded {
            kind: FEATURES_KIND.name,
            what: "entry count",
            value: count as u64,
            limit: MAX_FEATURE_ENTRIES as u64,
        });
    }
    let entry = id_len + 4 * FEATURES;
    if r.remaining() != count as usize * entry {
        return Err(DecodeError::Invalid { kind: FEATURES_KIND.name, reason: format!("{} body bytes for {count} entries", r.remaining()) });
    }
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let id = r.take(id_len)?;
        let head = IdHead::from_be_bytes(id[..8].try_into().expect("8 bytes"));
        let mut f = [0u32; FEATURES];
        for v in f.iter_mut() {
            *v = r.u32()?;
        }
        out.push((head, f));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn blobs_round_trip_and_bad_headers_are_refused() {
        let bases = [Id([1; 32]), Id([2; 32])];
        let b = encode_blob(&bases, b"frame");
        assert_eq!(header_len(b[0]), 65);
        let (got, frame) = decode_blob(&b).unwrap();
        assert_eq!((got.as_slice(), frame), (&bases[..], &b"frame"[..]));
        assert!(decode_blob(&[]).is_err());
        assert!(decode_blob(&[0, 1, 2]).is_err());
        assert!(decode_blob(&[5; 200]).is_err());
        assert!(decode_blob(&b[..40]).is_err());
    }

    #[test]
    fn features_round_trip_with_eight_bytes_per_chunk() {
        let (a, b) = (Id::of(b"a"), Id::of(b"b"));
        let e = vec![(a.head(), [1, 2, 3, 4, 5, 6, 7, u32::MAX]), (b.head(), [0; FEATURES])];
        let bytes = encode_features(&e);
        assert_eq!(bytes.len(), envelope::HEADER_LEN + 4 + 2 * (8 + 4 * FEATURES) + envelope::CHECKSUM_LEN);
        assert_eq!(&bytes[envelope::HEADER_LEN + 4..][..8], &a.0[..8], "the id's first bytes, in order");
        assert_eq!(decode_features(&bytes).unwrap(), e);
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert!(decode_features(&bad).is_err());
    }

    #[test]
    fn version_1_features_files_with_whole_ids_still_decode() {
        let (a, b) = (Id::of(b"a"), Id::of(b"b"));
        let mut body = 2u32.to_le_bytes().to_vec();
        for (id, v) in [(a, 1u32), (b, 2)] {
            body.extend_from_slice(&id.0);
            for i in 0..FEATURES as u32 {
                body.extend_from_slice(&(v * 100 + i).to_le_bytes());
            }
        }
        let v1 = Kind { current_version: 1, ..FEATURES_KIND };
        let got = decode_features(&envelope::seal(&v1, &body)).unwrap();
        assert_eq!(got, vec![(a.head(), [100, 101, 102, 103, 104, 105, 106, 107]), (b.head(), [200, 201, 202, 203, 204, 205, 206, 207])]);
        // A version 1 body is not a version 2 one: the lengths disagree.
        assert!(decode_features(&envelope::seal(&FEATURES_KIND, &body)).is_err());
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_blob(&bytes);
            let _ = decode_features(&bytes);
        }
    }
}
