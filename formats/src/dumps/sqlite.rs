//! The 100-byte header of a SQLite database file (sqlite.org/fileformat.html, section 1.3):
//! enough to tell a database from other bytes and a cut copy from a whole one. The pages
//! themselves are checked by SQLite's own `PRAGMA integrity_check` in the engine.

use super::{bad_at, CheckError};

/// The first 16 bytes of every SQLite 3 database.
pub const MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// Header length.
pub const HEADER_LEN: usize = 100;

/// What a sound header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Bytes per page.
    pub page_size: u32,
    /// Pages, when the header's count is valid (SQLite 3.7.0 and later keep it).
    pub pages: Option<u32>,
    /// The database is in WAL mode (its newest pages may be in the `-wal` file).
    pub wal: bool,
}

/// Whether `head` starts like a SQLite database.
pub fn looks_like(head: &[u8]) -> bool {
    head.starts_with(MAGIC)
}

/// Checks the header of a database file `file_len` bytes long. `journal` says whether a
/// `-journal` or `-wal` file was stored beside it: then the main file may be mid-update and
/// its length is not compared with the page count.
///
/// # Errors
/// [`CheckError::Bad`] for a missing magic, an impossible page size or fixed field, or a
/// length that is not the page count times the page size.
pub fn check_header(head: &[u8], file_len: u64, journal: bool) -> Result<Summary, CheckError> {
    if !looks_like(head) {
        return Err(bad_at(0, "not a SQLite 3 database: no \"SQLite format 3\" magic"));
    }
    if head.len() < HEADER_LEN || file_len < HEADER_LEN as u64 {
        return Err(bad_at(file_len, format!("cut short: {file_len} bytes, less than the {HEADER_LEN}-byte header")));
    }
    let be32 = |at: usize| u32::from_be_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    let page_size = match u16::from_be_bytes([head[16], head[17]]) {
        1 => 65536,
        n if n >= 512 && n.is_power_of_two() => n as u32,
        n => return Err(bad_at(16, format!("impossible page size {n}"))),
    };
    if head[21..24] != [64, 32, 32] {
        return Err(bad_at(21, "the fixed payload fractions are not 64, 32, 32: damaged header"));
    }
    let (write_version, read_version) = (head[18], head[19]);
    if !(1..=2).contains(&write_version) || !(1..=2).contains(&read_version) {
        return Err(bad_at(18, format!("unknown file format versions {write_version}/{read_version}")));
    }
    let wal = write_version == 2;
    // The page count is valid only when the change counter matches "version-valid-for".
    let pages = (be32(28) != 0 && be32(24) == be32(92)).then(|| be32(28));
    if let Some(p) = pages {
        let want = p as u64 * page_size as u64;
        if !journal && !wal && file_len != want {
            return Err(bad_at(
                file_len.min(want),
                format!("{file_len} bytes, but the header says {p} pages of {page_size} ({want} bytes): a cut or padded copy"),
            ));
        }
    }
    if !file_len.is_multiple_of(page_size as u64) {
        return Err(bad_at(
            file_len - file_len % page_size as u64,
            format!("{file_len} bytes is not a whole number of {page_size}-byte pages"),
        ));
    }
    Ok(Summary { page_size, pages, wal })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(page_size: u16, pages: u32) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN];
        h[..16].copy_from_slice(MAGIC);
        h[16..18].copy_from_slice(&page_size.to_be_bytes());
        h[18] = 1;
        h[19] = 1;
        h[21..24].copy_from_slice(&[64, 32, 32]);
        h[24..28].copy_from_slice(&7u32.to_be_bytes());
        h[28..32].copy_from_slice(&pages.to_be_bytes());
        h[92..96].copy_from_slice(&7u32.to_be_bytes());
        h
    }

    #[test]
    fn a_whole_file_passes_and_a_cut_one_does_not() {
        let h = header(4096, 3);
        assert_eq!(check_header(&h, 3 * 4096, false).unwrap(), Summary { page_size: 4096, pages: Some(3), wal: false });
        let e = check_header(&h, 2 * 4096, false).unwrap_err().to_string();
        assert!(e.contains("header says 3 pages"), "{e}");
        // A journal beside it: the length may lag the header.
        assert!(check_header(&h, 2 * 4096, true).is_ok());
        assert!(check_header(&h, 2 * 4096 + 5, true).is_err());
        assert_eq!(check_header(&header(1, 1), 65536, false).unwrap().page_size, 65536);
        assert!(check_header(&header(1000, 1), 1000, false).is_err());
        assert!(check_header(b"SQLite format 2\0", 100, false).is_err());
    }

    proptest! {
        #[test]
        fn any_header_is_judged_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120), len in 0u64..1_000_000) {
            let _ = check_header(&bytes, len, false);
            let mut h = header(4096, 2);
            let n = h.len().min(bytes.len());
            if n > 16 {
                h[16..n].copy_from_slice(&bytes[16..n]);
            }
            let _ = check_header(&h, len, len % 2 == 0);
        }
    }
}
