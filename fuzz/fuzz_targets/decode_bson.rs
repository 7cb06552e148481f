#![no_main]
//! Any bytes as a BSON document: the element reader never panics, and what it reads back from
//! its own encoding is what was encoded.
use libfuzzer_sys::fuzz_target;
use rpger_formats::dumps::bson;

fuzz_target!(|data: &[u8]| {
    if let Ok(fields) = bson::elements(data) {
        let encodable: Vec<_> = fields.into_iter().filter(|(_, v)| !matches!(v, bson::Value::Other(_))).collect();
        assert_eq!(bson::elements(&bson::encode(&encodable)).unwrap(), encodable);
    }
});
