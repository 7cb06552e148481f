#![no_main]
//! Any bytes as an index segment: decoding never panics; a decoded segment re-encodes to a
//! segment that decodes to the same entries.
use libfuzzer_sys::fuzz_target;
use rpger_formats::index::Segment;

fuzz_target!(|data: &[u8]| {
    if let Ok(seg) = Segment::decode(data) {
        assert_eq!(Segment::decode(&seg.encode()).unwrap().entries.len(), seg.entries.len());
    }
});
