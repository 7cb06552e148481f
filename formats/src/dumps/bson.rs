//! Just enough BSON (bsonspec.org) to read mongodump's archive headers and check its files:
//! walk a document's elements, decode strings, booleans and integers, skip every other type by
//! its size, and validate documents to the bottom. Never panics on bad bytes.

use super::{bad_at, CheckError};
use crate::DecodeError;

const KIND: &str = "BSON document";

/// A decoded element value (only what archive headers use; the rest is `Other`).
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// UTF-8 string (0x02).
    Str(&'a str),
    /// int32 (0x10).
    I32(i32),
    /// int64 (0x12).
    I64(i64),
    /// boolean (0x08).
    Bool(bool),
    /// Any other type, skipped.
    Other(u8),
}

fn bad(reason: impl Into<String>) -> DecodeError {
    DecodeError::Invalid { kind: KIND, reason: reason.into() }
}

fn i32_at(b: &[u8], at: usize) -> Result<i32, DecodeError> {
    b.get(at..at + 4).map(|s| i32::from_le_bytes([s[0], s[1], s[2], s[3]])).ok_or_else(|| bad("truncated length"))
}

fn cstring_end(b: &[u8], from: usize) -> Result<usize, DecodeError> {
    b.get(from..).and_then(|s| s.iter().position(|&c| c == 0)).map(|p| from + p).ok_or_else(|| bad("unterminated cstring"))
}

/// The elements of one complete document (`doc` is exactly the document's bytes).
///
/// # Errors
/// [`DecodeError::Invalid`] for a length that disagrees with the bytes, an unknown type, or a
/// value that runs past the end.
pub fn elements(doc: &[u8]) -> Result<Vec<(&str, Value<'_>)>, DecodeError> {
    let mut out = vec![];
    walk(doc, |key, value, _| {
        out.push((key, value));
        Ok(())
    })?;
    Ok(out)
}

/// Deepest nesting of documents and arrays [`validate`] follows (MongoDB allows 100 levels
/// below the top).
pub const MAX_DEPTH: usize = 101;

/// Checks one complete document the way a server would before loading it: its length, every
/// element's type and size, UTF-8 keys and strings, NUL terminators, and the same of every
/// embedded document and array down to [`MAX_DEPTH`] levels.
///
/// # Errors
/// [`DecodeError::Invalid`] naming the first element that is wrong.
pub fn validate(doc: &[u8]) -> Result<(), DecodeError> {
    validate_at(doc, 1)
}

fn validate_at(doc: &[u8], depth: usize) -> Result<(), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(bad(format!("documents nested deeper than {MAX_DEPTH} levels")));
    }
    walk(doc, |key, value, body| match value {
        Value::Other(0x03 | 0x04) => validate_at(body, depth + 1).map_err(|e| bad(format!("in {key:?}: {}", reason(&e)))),
        // Code with scope: int32 total length, a string, then the scope document.
        Value::Other(0x0F) => {
            let n = i32_at(body, 4).ok().filter(|&n| n >= 1).ok_or_else(|| bad(format!("{key:?}: bad code length")))? as usize;
            let scope = body.get(8 + n..).ok_or_else(|| bad(format!("{key:?}: code runs past its value")))?;
            validate_at(scope, depth + 1).map_err(|e| bad(format!("in {key:?}: {}", reason(&e))))
        }
        _ => Ok(()),
    })
}

fn reason(e: &DecodeError) -> String {
    match e {
        DecodeError::Invalid { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// Calls `f` with each element's key, decoded value and value bytes, in order.
fn walk<'a>(doc: &'a [u8], mut f: impl FnMut(&'a str, Value<'a>, &'a [u8]) -> Result<(), DecodeError>) -> Result<(), DecodeError> {
    let len = i32_at(doc, 0)?;
    if len < 5 || len as usize != doc.len() || doc[doc.len() - 1] != 0 {
        return Err(bad(format!("document length {len} does not match its {} bytes", doc.len())));
    }
    let end = doc.len() - 1;
    let mut pos = 4;
    while pos < end {
        let t = doc[pos];
        let key_end = cstring_end(doc, pos + 1)?;
        let key = std::str::from_utf8(&doc[pos + 1..key_end]).map_err(|_| bad("key is not UTF-8"))?;
        let v = key_end + 1;
        let string_len = |at: usize| -> Result<usize, DecodeError> {
            let n = i32_at(doc, at)?;
            if n < 1 {
                return Err(bad("negative string length"));
            }
            Ok(4 + n as usize)
        };
        let embedded = |at: usize| -> Result<usize, DecodeError> {
            let n = i32_at(doc, at)?;
            if n < 5 {
                return Err(bad("bad embedded length"));
            }
            Ok(n as usize)
        };
        let (size, value) = match t {
            0x01 | 0x09 | 0x11 => (8, Value::Other(t)),
            0x02 => {
                let n = string_len(v)?;
                let s = doc.get(v + 4..v + n - 1).ok_or_else(|| bad("string runs past the document"))?;
                if doc.get(v + n - 1) != Some(&0) {
                    return Err(bad("string not NUL-terminated"));
                }
                (n, Value::Str(std::str::from_utf8(s).map_err(|_| bad("string is not UTF-8"))?))
            }
            0x0D | 0x0E => (string_len(v)?, Value::Other(t)),
            0x03 | 0x04 | 0x0F => (embedded(v)?, Value::Other(t)),
            0x05 => {
                let n = i32_at(doc, v)?;
                if n < 0 {
                    return Err(bad("negative binary length"));
                }
                (5 + n as usize, Value::Other(t))
            }
            0x06 | 0x0A | 0xFF | 0x7F => (0, Value::Other(t)),
            0x07 => (12, Value::Other(t)),
            0x08 => match doc.get(v) {
                Some(0) => (1, Value::Bool(false)),
                Some(1) => (1, Value::Bool(true)),
                _ => return Err(bad("bad boolean")),
            },
            0x0B => {
                let a = cstring_end(doc, v)?;
                let b = cstring_end(doc, a + 1)?;
                (b + 1 - v, Value::Other(t))
            }
            0x0C => (string_len(v)? + 12, Value::Other(t)),
            0x10 => (4, Value::I32(i32_at(doc, v)?)),
            0x12 => {
                let s = doc.get(v..v + 8).ok_or_else(|| bad("truncated int64"))?;
                (8, Value::I64(i64::from_le_bytes(s.try_into().map_err(|_| bad("truncated int64"))?)))
            }
            0x13 => (16, Value::Other(t)),
            _ => return Err(bad(format!("unknown element type 0x{t:02x}"))),
        };
        let next = v.checked_add(size).filter(|&n| n <= end).ok_or_else(|| bad(format!("element {key:?} runs past the document")))?;
        f(key, value, &doc[v..next])?;
        pos = next;
    }
    Ok(())
}

/// Largest document mongod writes (16 MiB) plus the headroom it allows itself internally.
pub const MAX_DOCUMENT: usize = 16 * 1024 * 1024 + 16 * 1024;

/// A sound `.bson` file of a mongodump: documents one after the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSummary {
    /// Documents read.
    pub documents: u64,
    /// File length.
    pub bytes: u64,
}

/// Reads a whole `.bson` file (what mongodump writes per collection and mongorestore loads)
/// and [`validate`]s every document in it.
///
/// # Errors
/// [`CheckError::Bad`] at the first document that is cut off, too large or malformed;
/// [`CheckError::Read`] when `r` fails.
pub fn check_file(r: &mut impl std::io::Read) -> Result<FileSummary, CheckError> {
    use std::io::Read;
    let (mut at, mut documents) = (0u64, 0u64);
    let mut doc = Vec::new();
    loop {
        let mut len = [0u8; 4];
        match super::fill(r, &mut len)? {
            0 => return Ok(FileSummary { documents, bytes: at }),
            4 => {}
            n => return Err(bad_at(at, format!("cut short: {n} bytes after document {documents}, where a length belongs"))),
        }
        let n = i32::from_le_bytes(len);
        if n < 5 || n as usize > MAX_DOCUMENT {
            return Err(bad_at(at, format!("document {} claims {n} bytes (5..={MAX_DOCUMENT} allowed)", documents + 1)));
        }
        doc.clear();
        doc.extend_from_slice(&len);
        // Grown as bytes arrive, not to the claimed length: a cut or forged length costs no
        // more memory than the bytes that are there.
        (&mut *r).take(n as u64 - 4).read_to_end(&mut doc)?;
        if doc.len() < n as usize {
            return Err(bad_at(at, format!("cut short inside document {} ({} of its {n} bytes)", documents + 1, doc.len())));
        }
        validate(&doc).map_err(|e| bad_at(at, format!("document {}: {}", documents + 1, reason(&e))))?;
        at += n as u64;
        documents += 1;
    }
}

/// Encodes a document of string, int32, int64 and boolean fields (`Other` values are skipped).
pub fn encode(fields: &[(&str, Value<'_>)]) -> Vec<u8> {
    let mut b = vec![0u8; 4];
    for (k, v) in fields {
        let (t, bytes): (u8, Vec<u8>) = match v {
            Value::Str(s) => {
                let mut x = ((s.len() + 1) as i32).to_le_bytes().to_vec();
                x.extend_from_slice(s.as_bytes());
                x.push(0);
                (0x02, x)
            }
            Value::I32(i) => (0x10, i.to_le_bytes().to_vec()),
            Value::I64(i) => (0x12, i.to_le_bytes().to_vec()),
            Value::Bool(v) => (0x08, vec![*v as u8]),
            Value::Other(_) => continue,
        };
        b.push(t);
        b.extend_from_slice(k.as_bytes());
        b.push(0);
        b.extend_from_slice(&bytes);
    }
    b.push(0);
    let len = (b.len() as i32).to_le_bytes();
    b[..4].copy_from_slice(&len);
    b
}

/// The string field `key` of a document, if present.
pub fn get_str<'a>(fields: &[(&str, Value<'a>)], key: &str) -> Option<&'a str> {
    fields.iter().find_map(|(k, v)| match v {
        Value::Str(s) if *k == key => Some(*s),
        _ => None,
    })
}

/// The integer field `key` (int32 or int64), if present.
pub fn get_int(fields: &[(&str, Value<'_>)], key: &str) -> Option<i64> {
    fields.iter().find_map(|(k, v)| match v {
        Value::I32(i) if *k == key => Some(*i as i64),
        Value::I64(i) if *k == key => Some(*i),
        _ => None,
    })
}

/// The boolean field `key`, if present.
pub fn get_bool(fields: &[(&str, Value<'_>)], key: &str) -> Option<bool> {
    fields.iter().find_map(|(k, v)| match v {
        Value::Bool(b) if *k == key => Some(*b),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn doc() -> Vec<u8> {
        // {"db": "test", "EOF": true, "CRC": int64 -2, "n": int32 7, "o": {}}
        let mut b = vec![];
        b.push(0x02);
        b.extend_from_slice(b"db\0");
        b.extend_from_slice(&5i32.to_le_bytes());
        b.extend_from_slice(b"test\0");
        b.push(0x08);
        b.extend_from_slice(b"EOF\0\x01");
        b.push(0x12);
        b.extend_from_slice(b"CRC\0");
        b.extend_from_slice(&(-2i64).to_le_bytes());
        b.push(0x10);
        b.extend_from_slice(b"n\0");
        b.extend_from_slice(&7i32.to_le_bytes());
        b.push(0x03);
        b.extend_from_slice(b"o\0");
        b.extend_from_slice(&5i32.to_le_bytes());
        b.push(0);
        let mut d = ((b.len() + 5) as i32).to_le_bytes().to_vec();
        d.extend_from_slice(&b);
        d.push(0);
        d
    }

    #[test]
    fn reads_fields() {
        let d = doc();
        let f = elements(&d).unwrap();
        assert_eq!(get_str(&f, "db"), Some("test"));
        assert_eq!(get_bool(&f, "EOF"), Some(true));
        assert_eq!(get_int(&f, "CRC"), Some(-2));
        assert_eq!(get_int(&f, "n"), Some(7));
        assert_eq!(f.len(), 5);
    }

    #[test]
    fn encode_round_trips() {
        let f = [("db", Value::Str("test")), ("EOF", Value::Bool(true)), ("CRC", Value::I64(-5)), ("n", Value::I32(3))];
        assert_eq!(elements(&encode(&f)).unwrap(), f.to_vec());
    }

    #[test]
    fn nested_documents_are_validated_to_the_bottom() {
        let inner = encode(&[("a", Value::Str("x"))]);
        let mut outer_body = vec![0x03];
        outer_body.extend_from_slice(b"sub\0");
        outer_body.extend_from_slice(&inner);
        let wrap = |body: &[u8]| {
            let mut d = ((body.len() + 5) as i32).to_le_bytes().to_vec();
            d.extend_from_slice(body);
            d.push(0);
            d
        };
        let good = wrap(&outer_body);
        assert!(validate(&good).is_ok());
        // elements() skips the embedded document; validate() reads into it.
        let mut bad_inner = outer_body.clone();
        let s = bad_inner.len() - 3;
        bad_inner[s] = 0xFF; // the string's bytes are no longer UTF-8
        let bad = wrap(&bad_inner);
        assert!(elements(&bad).is_ok());
        assert!(validate(&bad).unwrap_err().to_string().contains("in \"sub\""));
        // 200 levels of {"a": {...}} is past the limit.
        let mut d = encode(&[]);
        for _ in 0..200 {
            let mut body = vec![0x03, b'a', 0];
            body.extend_from_slice(&d);
            d = wrap(&body);
        }
        assert!(validate(&d).unwrap_err().to_string().contains("nested deeper"));
    }

    #[test]
    fn a_bson_file_is_read_document_by_document() {
        let mut f = doc();
        f.extend_from_slice(&encode(&[("x", Value::I32(1))]));
        assert_eq!(check_file(&mut &f[..]).unwrap(), FileSummary { documents: 2, bytes: f.len() as u64 });
        let e = check_file(&mut &f[..f.len() - 2]).unwrap_err().to_string();
        assert!(e.contains("cut short inside document 2") && e.contains(&format!("at byte {}", doc().len())), "{e}");
        let mut g = f.clone();
        g[doc().len()..doc().len() + 4].copy_from_slice(&(1i32 << 30).to_le_bytes());
        assert!(check_file(&mut &g[..]).unwrap_err().to_string().contains("claims"));
    }

    proptest! {
        #[test]
        fn garbage_and_corruption_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), at in 0usize..60, x in any::<u8>()) {
            let _ = elements(&bytes);
            let _ = validate(&bytes);
            let _ = check_file(&mut &bytes[..]);
            let mut d = doc();
            let i = at % d.len();
            d[i] = x;
            let _ = elements(&d);
            let _ = validate(&d);
        }
    }
}
