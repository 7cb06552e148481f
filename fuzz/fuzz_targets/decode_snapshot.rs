#![no_main]
//! Any bytes as a snapshot, manifest file or manifest payload: decoding never panics, and every
//! manifest that decodes has only safe paths.
use libfuzzer_sys::fuzz_target;
use rpger_formats::snapshot::{check_path, open_manifest, Manifest, Snapshot};

fuzz_target!(|data: &[u8]| {
    let _ = Snapshot::decode(data);
    let _ = open_manifest(data);
    if let Ok(m) = Manifest::from_payload(data) {
        for e in &m.entries {
            assert!(check_path(&e.path).is_ok());
        }
    }
});
