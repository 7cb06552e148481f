//! The store's `config` file: format version, store id, chunker parameters, compression level.

use crate::envelope::{self, Kind};
use crate::{DecodeError, Id};
use serde::{Deserialize, Serialize};

/// Envelope identity of the config file.
pub const KIND: Kind = Kind { name: "config", magic: *b"RPGSCONF", min_version: 1, current_version: 1 };

/// Store-wide settings fixed at `init`. Changing the chunker parameters would break dedup, so
/// they live here rather than in any per-run option.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreConfig {
    /// Random id chosen at init; names the store in messages and locks.
    pub store_id: Id,
    /// FastCDC minimum chunk size in bytes.
    pub chunk_min: u32,
    /// FastCDC average (target) chunk size in bytes.
    pub chunk_avg: u32,
    /// FastCDC maximum chunk size in bytes.
    pub chunk_max: u32,
    /// zstd level used for new blobs.
    pub zstd_level: i32,
    /// A pack is closed once its blobs reach this many bytes.
    pub pack_target_size: u32,
    /// Creation time, Unix nanoseconds.
    pub created_unix_ns: i64,
}

/// Limits the chunker accepts (those of fastcdc v2020).
pub const CHUNK_MIN_RANGE: (u32, u32) = (64, 1 << 20);
/// Average size limits.
pub const CHUNK_AVG_RANGE: (u32, u32) = (256, 4 << 20);
/// Maximum size limits. Also the largest blob a pack may hold uncompressed.
pub const CHUNK_MAX_RANGE: (u32, u32) = (1024, 16 << 20);

impl StoreConfig {
    /// Encodes into a sealed envelope.
    pub fn encode(&self) -> Vec<u8> {
        envelope::seal(&KIND, &postcard::to_stdvec(self).unwrap_or_default())
    }

    /// Decodes and validates a config file.
    ///
    /// # Errors
    /// [`DecodeError`] on bad framing, checksum or out-of-range parameters.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (_, body) = envelope::open(&KIND, bytes)?;
        let c: StoreConfig = postcard::from_bytes(body).map_err(|e| DecodeError::Invalid { kind: KIND.name, reason: e.to_string() })?;
        c.validate()?;
        Ok(c)
    }

    /// Checks the chunker parameters are usable.
    ///
    /// # Errors
    /// [`DecodeError::Invalid`] naming the bad parameter.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let within = |v: u32, (lo, hi): (u32, u32)| v >= lo && v <= hi;
        let ok = within(self.chunk_min, CHUNK_MIN_RANGE)
            && within(self.chunk_avg, CHUNK_AVG_RANGE)
            && within(self.chunk_max, CHUNK_MAX_RANGE)
            && self.chunk_min <= self.chunk_avg
            && self.chunk_avg <= self.chunk_max
            && (1..=22).contains(&self.zstd_level)
            && self.pack_target_size >= 1 << 16
            && self.pack_target_size <= 1 << 30;
        if ok {
            Ok(())
        } else {
            Err(DecodeError::Invalid {
                kind: KIND.name,
                reason: format!(
                    "chunker {}/{}/{} or zstd level {} or pack size {} out of range",
                    self.chunk_min, self.chunk_avg, self.chunk_max, self.zstd_level, self.pack_target_size
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let c = StoreConfig {
            store_id: Id([7; 32]),
            chunk_min: 4096,
            chunk_avg: 16384,
            chunk_max: 65536,
            zstd_level: 3,
            pack_target_size: 32 << 20,
            created_unix_ns: 1,
        };
        assert_eq!(StoreConfig::decode(&c.encode()).unwrap(), c);
        let mut bad = c.clone();
        bad.chunk_min = 1;
        assert!(StoreConfig::decode(&bad.encode()).is_err());
    }
}
