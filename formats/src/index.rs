//! Index segments: chunk id -> (pack, offset, len, raw_len, encoding), fixed little-endian
//! entries sorted by chunk id, inside the common envelope.
//!
//! ```text
//! body  pack_count u32 | pack ids (32 each) | entry_count u32 |
//!       entries: chunk id (32) | pack index u32 | offset u32 | len u32 | raw_len u32
//!                | encoding u8 | reserved [u8; 3]
//! ```
//! The index is derived data: every entry can be rebuilt from pack trailers.

use crate::envelope::{self, Kind, Reader};
use crate::pack::{Encoding, MAX_RAW_LEN};
use crate::{DecodeError, Id};

/// Envelope identity of an index segment.
pub const KIND: Kind = Kind { name: "index segment", magic: *b"RPGSINDX", min_version: 1, current_version: 2 };
/// Entry flag (version 2): prune re-encoded this chunk; when an interrupted prune leaves two
/// locations of it, this one wins.
pub const FLAG_PREFERRED: u8 = 1;
/// Bytes per entry.
pub const ENTRY_LEN: usize = 52;
/// Most packs one segment may name.
pub const MAX_PACKS: u32 = 1 << 24;
/// Most entries one segment may hold.
pub const MAX_ENTRIES: u32 = 1 << 28;

/// Where a chunk is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Pack file id.
    pub pack: Id,
    /// Offset of the blob in the pack.
    pub offset: u32,
    /// Stored length.
    pub len: u32,
    /// Uncompressed length.
    pub raw_len: u32,
    /// Encoding of the stored bytes.
    pub encoding: Encoding,
}

/// One decoded segment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Segment {
    /// (chunk id, location), sorted by chunk id.
    pub entries: Vec<(Id, Location)>,
    /// Chunks whose entry carries [`FLAG_PREFERRED`], sorted.
    pub preferred: Vec<Id>,
}

impl Segment {
    /// Encodes the segment; entries are sorted by chunk id first.
    pub fn encode(&self) -> Vec<u8> {
        let mut entries = self.entries.clone();
        entries.sort_unstable_by_key(|e| e.0);
        let mut packs: Vec<Id> = entries.iter().map(|e| e.1.pack).collect();
        packs.sort_unstable();
        packs.dedup();
        let mut body = Vec::with_capacity(8 + packs.len() * 32 + entries.len() * ENTRY_LEN);
        body.extend_from_slice(&(packs.len() as u32).to_le_bytes());
        for p in &packs {
            body.extend_from_slice(&p.0);
        }
        body.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        for (id, loc) in &entries {
            let pi = packs.binary_search(&loc.pack).unwrap_or(0) as u32;
            body.extend_from_slice(&id.0);
            body.extend_from_slice(&pi.to_le_bytes());
            body.extend_from_slice(&loc.offset.to_le_bytes());
            body.extend_from_slice(&loc.len.to_le_bytes());
            body.extend_from_slice(&loc.raw_len.to_le_bytes());
            body.push(loc.encoding as u8);
            let flags = if self.preferred.binary_search(id).is_ok() { FLAG_PREFERRED } else { 0 };
            body.extend_from_slice(&[flags, 0, 0]);
        }
        envelope::seal(&KIND, &body)
    }

    /// Decodes and validates a segment.
    ///
    /// # Errors
    /// [`DecodeError`] on bad framing, counts beyond limits or a pack index out of range.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (_, body) = envelope::open(&KIND, bytes)?;
        let mut r = Reader::new(KIND.name, body);
        let pack_count = r.u32()?;
        if pack_count > MAX_PACKS {
            return Err(DecodeError::LimitExceeded {
                kind: KIND.name,
                what: "pack count",
                value: pack_count as u64,
                limit: MAX_PACKS as u64,
            });
        }
        let pack_bytes = r.take(pack_count as usize * 32)?;
        let packs: Vec<Id> = pack_bytes.chunks_exact(32).map(Id::from_slice).collect();
        let count = r.u32()?;
        if count > MAX_ENTRIES {
            return Err(DecodeError::LimitExceeded {
                kind: KIND.name,
                what: "entry count",
                value: count as u64,
                limit: MAX_ENTRIES as u64,
            });
        }
        let entry_bytes = r.take(count as usize * ENTRY_LEN)?;
        if r.remaining() != 0 {
            return Err(DecodeError::Invalid { kind: KIND.name, reason: "trailing bytes".into() });
        }
        let mut entries = Vec::with_capacity(count as usize);
        let mut preferred = vec![];
        for e in entry_bytes.chunks_exact(ENTRY_LEN) {
            let mut er = Reader::new(KIND.name, e);
            let id = Id::from_slice(er.take(32)?);
            let pi = er.u32()?;
            let offset = er.u32()?;
            let len = er.u32()?;
            let raw_len = er.u32()?;
            let tail = er.take(4)?;
            let encoding = Encoding::from_u8(tail[0])?;
            if tail[1] & FLAG_PREFERRED != 0 {
                preferred.push(id);
            }
            let pack = *packs
                .get(pi as usize)
                .ok_or_else(|| DecodeError::Invalid { kind: KIND.name, reason: format!("pack index {pi} >= pack count {pack_count}") })?;
            if raw_len > MAX_RAW_LEN {
                return Err(DecodeError::LimitExceeded {
                    kind: KIND.name,
                    what: "raw length",
                    value: raw_len as u64,
                    limit: MAX_RAW_LEN as u64,
                });
            }
            entries.push((id, Location { pack, offset, len, raw_len, encoding }));
        }
        preferred.sort_unstable();
        Ok(Segment { entries, preferred })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(raw in proptest::collection::vec((any::<[u8; 32]>(), 0u8..4, any::<u32>(), any::<u32>(), 0u32..1000, any::<bool>()), 0..50)) {
            let seg = Segment { preferred: vec![], entries: raw.iter().map(|(id, p, off, len, rl, z)| (Id(*id), Location {
                pack: Id([*p; 32]), offset: *off, len: *len, raw_len: *rl,
                encoding: if *z { Encoding::Zstd } else { Encoding::Raw },
            })).collect() };
            let mut sorted = seg.entries.clone();
            sorted.sort_by_key(|e| e.0);
            prop_assert_eq!(Segment::decode(&seg.encode()).unwrap().entries, sorted);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Segment::decode(&bytes);
        }
    }
}
