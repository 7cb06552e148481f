//! The frame shared by every small store file (config, index segment, manifest, snapshot):
//! `magic (8) | version u16 LE | body | BLAKE3(magic..body) (32)`.
//!
//! Packs do not use it: a pack is written in one stream and describes itself with a trailer
//! (see [`crate::pack`]).

use crate::DecodeError;

/// Bytes before the body.
pub const HEADER_LEN: usize = 10;
/// Bytes after the body.
pub const CHECKSUM_LEN: usize = 32;

/// The identity of one kind of enveloped file.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    /// Human name used in errors.
    pub name: &'static str,
    /// The first 8 bytes of every such file.
    pub magic: [u8; 8],
    /// Oldest version decoders still accept.
    pub min_version: u16,
    /// Version encoders write.
    pub current_version: u16,
}

/// Wraps `body` for `kind` at its current version.
pub fn seal(kind: &Kind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len() + CHECKSUM_LEN);
    out.extend_from_slice(&kind.magic);
    out.extend_from_slice(&kind.current_version.to_le_bytes());
    out.extend_from_slice(body);
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    out
}

/// Checks magic, version and checksum; returns the version and the body.
///
/// # Errors
/// [`DecodeError`] when the magic, version or checksum is wrong or the input is too short.
pub fn open<'a>(kind: &Kind, bytes: &'a [u8]) -> Result<(u16, &'a [u8]), DecodeError> {
    if bytes.len() < 8 || bytes[..8] != kind.magic {
        return Err(DecodeError::BadMagic { kind: kind.name });
    }
    if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
        return Err(DecodeError::Truncated { kind: kind.name, needed: (HEADER_LEN + CHECKSUM_LEN) as u64, got: bytes.len() as u64 });
    }
    let version = u16::from_le_bytes([bytes[8], bytes[9]]);
    if version < kind.min_version || version > kind.current_version {
        return Err(DecodeError::UnsupportedVersion { kind: kind.name, found: version, min: kind.min_version, max: kind.current_version });
    }
    let split = bytes.len() - CHECKSUM_LEN;
    if blake3::hash(&bytes[..split]).as_bytes() != &bytes[split..] {
        return Err(DecodeError::ChecksumMismatch { kind: kind.name });
    }
    Ok((version, &bytes[HEADER_LEN..split]))
}

/// A bounds-checked little-endian reader over a body.
pub(crate) struct Reader<'a> {
    kind: &'static str,
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(kind: &'static str, buf: &'a [u8]) -> Self {
        Reader { kind, buf, pos: 0 }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(DecodeError::Truncated {
                kind: self.kind,
                needed: (self.pos as u64).saturating_add(n as u64),
                got: self.buf.len() as u64,
            }),
        }
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: Kind = Kind { name: "test", magic: *b"RPGSTEST", min_version: 1, current_version: 2 };

    #[test]
    fn round_trip_and_every_corruption_detected() {
        let sealed = seal(&K, b"hello body");
        assert_eq!(open(&K, &sealed).unwrap(), (2, &b"hello body"[..]));
        for i in 0..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[i] ^= 1 << bit;
                assert!(open(&K, &bad).is_err(), "flip at {i}:{bit} not detected");
            }
        }
        for len in 0..sealed.len() {
            assert!(open(&K, &sealed[..len]).is_err());
        }
    }

    #[test]
    fn newer_version_is_named() {
        let mut sealed = seal(&K, b"x");
        sealed[8] = 9;
        let split = sealed.len() - 32;
        let sum = blake3::hash(&sealed[..split]);
        sealed[split..].copy_from_slice(sum.as_bytes());
        assert!(matches!(open(&K, &sealed), Err(DecodeError::UnsupportedVersion { found: 9, .. })));
    }
}
