#![no_main]
//! Any bytes as a pack: header and trailer decoding never panic.
use libfuzzer_sys::fuzz_target;
use rpger_formats::pack;

fuzz_target!(|data: &[u8]| {
    let _ = pack::check_header(data);
    if data.len() >= pack::FOOTER_LEN {
        if let Ok(tl) = pack::trailer_len(&data[data.len() - pack::FOOTER_LEN..], data.len() as u64) {
            let _ = pack::decode_trailer(&data[data.len() - tl..], data.len() as u64);
        }
    }
});
