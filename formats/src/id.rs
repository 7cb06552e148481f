//! 32-byte BLAKE3 content ids (chunks, packs, manifests, index segments).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A BLAKE3 hash used as a content address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// Length in bytes.
    pub const LEN: usize = 32;

    /// The id of some bytes.
    pub fn of(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }

    /// Lower-case hex, 64 characters.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(64);
        for b in self.0 {
            s.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
            s.push(char::from_digit((b & 15) as u32, 16).unwrap_or('0'));
        }
        s
    }

    /// The first 8 bytes as one integer: ordered like the id itself, and (ids being uniform
    /// hashes) enough to tell almost any two apart with one comparison.
    pub fn head(&self) -> u64 {
        let [a, b, c, d, e, f, g, h, ..] = self.0;
        u64::from_be_bytes([a, b, c, d, e, f, g, h])
    }

    /// The first 8 hex digits, for messages.
    pub fn short(&self) -> String {
        self.to_hex()[..8].to_string()
    }

    /// Reads an id from the first 32 bytes of `b` (caller checked the length).
    pub(crate) fn from_slice(b: &[u8]) -> Id {
        let mut a = [0u8; 32];
        a.copy_from_slice(&b[..32]);
        Id(a)
    }
}

impl From<blake3::Hash> for Id {
    fn from(h: blake3::Hash) -> Self {
        Id(*h.as_bytes())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

/// A string that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a 64-digit hex id: {0:?}")]
pub struct ParseIdError(pub String);

impl FromStr for Id {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 64 {
            return Err(ParseIdError(s.to_string()));
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16);
            let lo = (pair[1] as char).to_digit(16);
            match (hi, lo) {
                (Some(h), Some(l)) => out[i] = (h * 16 + l) as u8,
                _ => return Err(ParseIdError(s.to_string())),
            }
        }
        Ok(Id(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_head_orders_like_the_id(a in proptest::array::uniform32(any::<u8>()), b in proptest::array::uniform32(any::<u8>())) {
            let (a, b) = (Id(a), Id(b));
            if a.head() != b.head() {
                prop_assert_eq!(a.head().cmp(&b.head()), a.cmp(&b));
            }
            prop_assert_eq!(&a.head().to_be_bytes()[..], &a.0[..8]);
        }

        #[test]
        fn hex_round_trip(bytes in proptest::array::uniform32(any::<u8>())) {
            let id = Id(bytes);
            prop_assert_eq!(id.to_hex().parse::<Id>().unwrap(), id);
        }
    }

    #[test]
    fn rejects_bad_hex() {
        assert!("zz".parse::<Id>().is_err());
        assert!("g".repeat(64).parse::<Id>().is_err());
    }
}
