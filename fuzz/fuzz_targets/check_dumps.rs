#![no_main]
//! Any bytes as each dump format `verify --dumps` checks: every checker returns a verdict and
//! never panics, and a verdict of "sound" accounts for every byte it was given.
use libfuzzer_sys::fuzz_target;
use rpger_formats::dumps::{aof, bson, rdb, sqlite};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = rdb::check(&mut &data[..]) {
        assert_eq!(s.bytes, data.len() as u64);
    }
    if let Ok(s) = aof::check(&mut &data[..]) {
        assert_eq!(s.bytes, data.len() as u64);
    }
    if let Ok(s) = bson::check_file(&mut &data[..]) {
        assert_eq!(s.bytes, data.len() as u64);
    }
    let _ = aof::parse_manifest(data);
    let _ = sqlite::check_header(data, data.len() as u64, false);
});
