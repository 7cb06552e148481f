//! Integration tests: the real `rpger-store` binary on real files.
//!
//! One test binary (declared in `cli/Cargo.toml`); each module owns one concern.

mod bad_input;
mod common;
mod crash;
mod dbrestore;
mod dedup;
mod delta;
mod docker;
mod dumps;
mod full_disk;
mod redis;
mod restore_safety;
mod retention;
mod roundtrip;
mod sources;
mod testrestore;
mod verify;
