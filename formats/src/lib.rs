//! Pure encode/decode of every rpger-store on-disk format. No I/O, no clock, no threads.
//!
//! Every file the store writes starts with an 8-byte magic naming its kind and a little-endian
//! `u16` format version. Decoders accept every version from the first to the current one and
//! never panic on bad bytes: every length is checked against the input and a documented limit
//! before anything is allocated. The byte-level layout is documented in `docs/FORMAT.md`.

pub mod config;
pub mod delta;
pub mod dumps;
pub mod envelope;
pub mod error;
pub mod id;
pub mod index;
pub mod pack;
pub mod snapshot;

pub use error::DecodeError;
pub use id::Id;
