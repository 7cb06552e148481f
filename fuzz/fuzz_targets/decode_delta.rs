#![no_main]
//! Any bytes as a delta blob header and as a features file: decoding never panics; what decodes
//! re-encodes to the same thing.
use libfuzzer_sys::fuzz_target;
use rpger_formats::delta;

fuzz_target!(|data: &[u8]| {
    if let Ok((bases, frame)) = delta::decode_blob(data) {
        assert_eq!(delta::encode_blob(&bases, frame), data);
    }
    if let Ok(entries) = delta::decode_features(data) {
        assert_eq!(delta::decode_features(&delta::encode_features(&entries)).unwrap(), entries);
    }
});
