//! The one error type of this crate: why a byte string is not a valid file of some kind.

use thiserror::Error;

/// Why bytes could not be decoded. Never produced by a panic; every decoder returns it.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The file does not start (or end) with the magic of the expected kind.
    #[error("bad magic: not a {kind} file")]
    BadMagic {
        /// The kind of file that was expected.
        kind: &'static str,
    },
    /// The version is newer (or older) than this build understands.
    #[error("unsupported {kind} format version {found} (this build reads {min}..={max})")]
    UnsupportedVersion {
        /// The kind of file.
        kind: &'static str,
        /// The version found in the file.
        found: u16,
        /// Oldest version understood.
        min: u16,
        /// Newest version understood.
        max: u16,
    },
    /// The input ends before a structure it announces.
    #[error("truncated {kind}: needed {needed} bytes, got {got}")]
    Truncated {
        /// The kind of file.
        kind: &'static str,
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        got: u64,
    },
    /// A checksum stored in the file does not match its content.
    #[error("{kind} checksum mismatch")]
    ChecksumMismatch {
        /// The kind of file.
        kind: &'static str,
    },
    /// A count or length is above the documented limit.
    #[error("{kind}: {what} {value} exceeds the limit {limit}")]
    LimitExceeded {
        /// The kind of file.
        kind: &'static str,
        /// What was counted.
        what: &'static str,
        /// The value found.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// The structure decoded but breaks an invariant (overlapping blobs, bad path, ...).
    #[error("invalid {kind}: {reason}")]
    Invalid {
        /// The kind of file.
        kind: &'static str,
        /// What is wrong.
        reason: String,
    },
}
