//! Redis RDB files (`dump.rdb`, Redis 7's `appendonly.aof.N.base.rdb`): the `REDIS` magic and
//! four-digit version, the end-of-file opcode, and the CRC-64 trailer Redis itself checks on
//! load (`redis-check-rdb` says "RDB CRC error" for what [`check`] rejects).

use super::{bad_at, fill, CheckError};
use std::io::Read;

/// RDB versions this build has seen written (Redis 2.x to 8.x write 1..=12).
pub const KNOWN_VERSIONS: std::ops::RangeInclusive<u16> = 1..=12;
/// The opcode that ends the data, followed by the 8-byte checksum from version 5 on.
const EOF_OPCODE: u8 = 0xFF;
/// Redis's CRC-64 (Jones polynomial, reflected, init 0): `crc64.c` in the Redis sources.
/// Slice-by-16 tables: about 4 x the bytewise table's speed.
static CRC64: crc::Crc<u64, crc::Table<16>> = crc::Crc::<u64, crc::Table<16>>::new(&crc::CRC_64_REDIS);

/// What the trailer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    /// The stored CRC-64 matches the bytes.
    Matched(u64),
    /// Stored as 0: written with `rdbchecksum no`, so there is nothing to compare.
    Disabled,
    /// Versions before 5 carry none.
    NotInVersion,
}

/// A sound RDB file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// The format version from the header.
    pub version: u16,
    /// Whether the version is one of [`KNOWN_VERSIONS`] (an unknown one is still checked).
    pub known_version: bool,
    /// What the trailer proved.
    pub checksum: Checksum,
    /// File length.
    pub bytes: u64,
}

/// Redis's CRC-64 of `data`: what an RDB file's last 8 bytes hold (little-endian) for the
/// bytes before them.
pub fn checksum(data: &[u8]) -> u64 {
    CRC64.checksum(data)
}

/// Whether `head` (the first bytes of a file) starts like an RDB file.
pub fn looks_like(head: &[u8]) -> bool {
    head.len() >= 9 && &head[..5] == b"REDIS" && head[5..9].iter().all(u8::is_ascii_digit)
}

/// Reads a whole RDB file and checks its header, end opcode and checksum.
///
/// # Errors
/// [`CheckError::Bad`] for a missing magic, a cut file (no end opcode where the trailer says it
/// is) or a CRC mismatch, with both values; [`CheckError::Read`] when `r` fails.
pub fn check(r: &mut impl Read) -> Result<Summary, CheckError> {
    let mut head = [0u8; 9];
    let n = fill(r, &mut head)?;
    if !looks_like(&head[..n]) {
        return Err(bad_at(0, "not an RDB file: it does not start with REDIS and a four-digit version"));
    }
    let version: u16 = std::str::from_utf8(&head[5..9]).ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let trailer_len = if version >= 5 { 8 } else { 0 };
    let mut digest = CRC64.digest();
    digest.update(&head);
    // Everything but the last `trailer_len` bytes goes into the CRC: keep those back until the
    // input ends.
    let mut buf = vec![0u8; 64 * 1024];
    let mut kept: Vec<u8> = Vec::with_capacity(trailer_len);
    let mut last_fed = head[8];
    let mut total = 9u64;
    loop {
        let n = fill(r, &mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > trailer_len {
            let feed = kept.len() - trailer_len;
            digest.update(&kept[..feed]);
            last_fed = kept[feed - 1];
            kept.drain(..feed);
        }
    }
    if total < 9 + 1 + trailer_len as u64 {
        return Err(bad_at(total, format!("cut short: {total} bytes, too few for an RDB file's header and end")));
    }
    if last_fed != EOF_OPCODE {
        return Err(bad_at(
            total - trailer_len as u64 - 1,
            format!("cut short or damaged: no end-of-file opcode 0xff where the trailer starts (found 0x{last_fed:02x})"),
        ));
    }
    let checksum = if trailer_len == 0 {
        Checksum::NotInVersion
    } else {
        let stored = u64::from_le_bytes(kept[..8].try_into().unwrap_or([0; 8]));
        let computed = digest.finalize();
        match stored {
            0 => Checksum::Disabled,
            s if s == computed => Checksum::Matched(s),
            s => return Err(bad_at(total - 8, format!("CRC-64 mismatch: stored 0x{s:016x}, computed 0x{computed:016x}"))),
        }
    };
    Ok(Summary { version, known_version: KNOWN_VERSIONS.contains(&version), checksum, bytes: total })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A minimal version-11 RDB: header, one AUX field, SELECTDB 0, one string key, EOF, CRC.
    fn rdb(checksum: bool) -> Vec<u8> {
        let mut b = b"REDIS0011".to_vec();
        b.extend_from_slice(b"\xfa\x09redis-ver\x067.0.15");
        b.extend_from_slice(b"\xfe\x00\xfb\x01\x00");
        b.extend_from_slice(b"\x00\x03key\x05value");
        b.push(EOF_OPCODE);
        let crc = if checksum { CRC64.checksum(&b) } else { 0 };
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    #[test]
    fn the_redis_crc_is_crc64_jones() {
        // The check value Redis's own crc64 test prints for "123456789".
        assert_eq!(CRC64.checksum(b"123456789"), 0xe9c6d914c4b8d9ca);
    }

    #[test]
    fn a_sound_file_passes_in_any_read_sizes() {
        let b = rdb(true);
        let s = check(&mut &b[..]).unwrap();
        assert_eq!((s.version, s.known_version, s.bytes), (11, true, b.len() as u64));
        assert!(matches!(s.checksum, Checksum::Matched(_)));
        // One byte per read: the trailer is found across read boundaries.
        let mut one = OneByte(&b);
        assert_eq!(check(&mut one).unwrap(), s);
        assert_eq!(check(&mut &rdb(false)[..]).unwrap().checksum, Checksum::Disabled);
    }

    #[test]
    fn damage_is_found_and_placed() {
        let mut b = rdb(true);
        b[20] ^= 0x01;
        let e = check(&mut &b[..]).unwrap_err().to_string();
        assert!(e.contains("CRC-64 mismatch") && e.contains(&format!("at byte {}", b.len() - 8)), "{e}");
        let b = rdb(true);
        let e = check(&mut &b[..b.len() - 3]).unwrap_err().to_string();
        assert!(e.contains("no end-of-file opcode"), "{e}");
        let e = check(&mut &b"REDIX0011"[..]).unwrap_err().to_string();
        assert!(e.contains("not an RDB file"), "{e}");
        let e = check(&mut &b"REDIS0011\xff"[..]).unwrap_err().to_string();
        assert!(e.contains("cut short"), "{e}");
    }

    #[test]
    fn old_versions_have_no_checksum_and_new_ones_are_flagged() {
        let mut old = b"REDIS0004\xfe\x00\x00\x01a\x01b".to_vec();
        old.push(EOF_OPCODE);
        assert_eq!(check(&mut &old[..]).unwrap().checksum, Checksum::NotInVersion);
        let mut new = rdb(true);
        new[5..9].copy_from_slice(b"0099");
        let n = new.len();
        let crc = CRC64.checksum(&new[..n - 8]);
        new[n - 8..].copy_from_slice(&crc.to_le_bytes());
        let s = check(&mut &new[..]).unwrap();
        assert_eq!((s.version, s.known_version), (99, false));
    }

    struct OneByte<'a>(&'a [u8]);
    impl Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }

    proptest! {
        #[test]
        fn any_bytes_are_judged_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), at in 0usize..40, x in any::<u8>()) {
            let _ = check(&mut &bytes[..]);
            let mut b = rdb(true);
            let i = at % b.len();
            let changed = b[i] != x;
            b[i] = x;
            // Any one changed byte after the magic is caught (by the CRC or the end opcode).
            if changed && i >= 9 {
                prop_assert!(check(&mut &b[..]).is_err());
            }
        }
    }
}
