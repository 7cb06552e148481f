//! Pure readers of database dump formats, and the checks `verify --dumps` runs on them: each
//! reads a dump once, front to back, and says what it holds or the first byte that is wrong.

pub mod aof;
pub mod bson;
pub mod rdb;
pub mod sqlite;

use std::io::Read;

/// Why a dump does not check out.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The bytes could not be read (the store's error, passed through).
    #[error("cannot read it: {0}")]
    Read(#[from] std::io::Error),
    /// The bytes are not a sound dump of their kind.
    #[error("{why} (at byte {at})")]
    Bad {
        /// Offset in the file where the problem starts.
        at: u64,
        /// What is wrong.
        why: String,
    },
}

pub(crate) fn bad_at(at: u64, why: impl Into<String>) -> CheckError {
    CheckError::Bad { at, why: why.into() }
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
///
/// # Errors
/// The first error of `r` other than an interrupted read.
pub fn fill(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
