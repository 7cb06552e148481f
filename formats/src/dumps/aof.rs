//! Redis append-only files: the RESP commands of an AOF (Redis 7's `*.incr.aof`, or an older
//! single `appendonly.aof`), and Redis 7's `appendonly.aof.manifest`. What [`check`] rejects is
//! what `redis-check-aof` reports: a command cut off or malformed.

use super::{bad_at, CheckError};
use std::io::{BufRead, Read};

/// Longest argument Redis accepts by default (`proto-max-bulk-len`, 512 MiB).
const MAX_BULK: u64 = 512 * 1024 * 1024;
/// Most arguments in one command this check accepts.
const MAX_ARGS: u64 = 1 << 24;
/// Longest header line (`*N` or `$N`, or a `#TS:` annotation) read.
const MAX_LINE: u64 = 4096;

/// A sound AOF.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Commands read.
    pub commands: u64,
    /// File length.
    pub bytes: u64,
}

/// One line of an AOF manifest: `file NAME seq N type b|h|i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestEntry {
    /// File name, in the manifest's directory.
    pub file: String,
    /// Sequence number.
    pub seq: u64,
    /// `b` base, `h` history, `i` incremental.
    pub kind: char,
}

/// Reads a whole AOF of RESP commands (`#` annotation lines allowed between them).
///
/// # Errors
/// [`CheckError::Bad`] at the first malformed or cut-off command; [`CheckError::Read`] when `r`
/// fails.
pub fn check(r: &mut impl BufRead) -> Result<Summary, CheckError> {
    let mut at = 0u64;
    let mut commands = 0u64;
    let mut line = Vec::new();
    loop {
        let start = at;
        let Some(header) = read_line(r, &mut line, &mut at)? else { break };
        if header.first() == Some(&b'#') {
            continue;
        }
        let args = number(header, b'*')
            .filter(|n| (1..=MAX_ARGS).contains(n))
            .ok_or_else(|| bad_at(start, format!("command {} does not start with *<argument count>: {:?}", commands + 1, shown(header))))?;
        for i in 0..args {
            let arg_at = at;
            let cut = || bad_at(start, format!("cut short inside command {} (argument {} of {args})", commands + 1, i + 1));
            let header = read_line(r, &mut line, &mut at)?.ok_or_else(cut)?;
            let len = number(header, b'$').filter(|&n| n <= MAX_BULK).ok_or_else(|| {
                bad_at(arg_at, format!("argument {} of command {} is not $<length>: {:?}", i + 1, commands + 1, shown(header)))
            })?;
            let skipped = std::io::copy(&mut (&mut *r).take(len), &mut std::io::sink())?;
            at += skipped;
            if skipped < len {
                return Err(cut());
            }
            let mut crlf = [0u8; 2];
            let n = super::fill(r, &mut crlf)?;
            at += n as u64;
            if n < 2 {
                return Err(cut());
            }
            if crlf != *b"\r\n" {
                return Err(bad_at(at - 2, format!("argument {} of command {} does not end with CRLF", i + 1, commands + 1)));
            }
        }
        commands += 1;
    }
    Ok(Summary { commands, bytes: at })
}

/// Reads one CRLF-terminated line into `line` (without the CRLF); `None` at a clean end.
fn read_line<'a>(r: &mut impl BufRead, line: &'a mut Vec<u8>, at: &mut u64) -> Result<Option<&'a [u8]>, CheckError> {
    line.clear();
    let n = (&mut *r).take(MAX_LINE).read_until(b'\n', line)?;
    if n == 0 {
        return Ok(None);
    }
    let start = *at;
    *at += n as u64;
    match line.strip_suffix(b"\r\n") {
        Some(l) => Ok(Some(l)),
        None if n as u64 == MAX_LINE => Err(bad_at(start, format!("a line longer than {MAX_LINE} bytes where a command header belongs"))),
        None => Err(bad_at(start, "cut short inside a command header (no CRLF)")),
    }
}

/// `<prefix><decimal>` as a number.
fn number(line: &[u8], prefix: u8) -> Option<u64> {
    let digits = line.strip_prefix(&[prefix])?;
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn shown(line: &[u8]) -> String {
    String::from_utf8_lossy(&line[..line.len().min(40)]).into_owned()
}

/// Parses Redis 7's `appendonly.aof.manifest`.
///
/// # Errors
/// [`CheckError::Bad`] naming the first line that is not `file NAME seq N type b|h|i`, or a
/// manifest with no base file.
pub fn parse_manifest(text: &[u8]) -> Result<Vec<ManifestEntry>, CheckError> {
    let mut out = Vec::new();
    let mut at = 0u64;
    for raw in text.split(|&b| b == b'\n') {
        let line_at = at;
        at += raw.len() as u64 + 1;
        let line = String::from_utf8_lossy(raw);
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let mut entry = ManifestEntry { file: String::new(), seq: 0, kind: ' ' };
        for pair in words.chunks(2) {
            match pair {
                ["file", f] => entry.file = f.to_string(),
                ["seq", s] => entry.seq = s.parse().map_err(|_| bad_at(line_at, format!("bad seq {s:?} in {line:?}")))?,
                ["type", t @ ("b" | "h" | "i")] => entry.kind = t.chars().next().unwrap_or(' '),
                // Newer Redis versions may add keys; an unknown one is not damage.
                [_, _] => {}
                _ => return Err(bad_at(line_at, format!("not key-value pairs: {line:?}"))),
            }
        }
        if entry.file.is_empty() || entry.kind == ' ' || entry.file.contains('/') {
            return Err(bad_at(line_at, format!("expected `file NAME seq N type b|h|i`: {line:?}")));
        }
        out.push(entry);
    }
    if !out.iter().any(|e| e.kind == 'b') {
        return Err(bad_at(0, "the manifest names no base file (type b)"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const AOF: &[u8] = b"*2\r\n$6\r\nSELECT\r\n$1\r\n0\r\n#TS:1700000000\r\n*3\r\n$3\r\nset\r\n$1\r\nk\r\n$5\r\nv\r\n\r\n\r\n";

    #[test]
    fn commands_are_counted_and_annotations_skipped() {
        assert_eq!(check(&mut &AOF[..]).unwrap(), Summary { commands: 2, bytes: AOF.len() as u64 });
        assert_eq!(check(&mut &b""[..]).unwrap().commands, 0);
    }

    #[test]
    fn a_cut_or_broken_command_is_placed() {
        let e = check(&mut &AOF[..AOF.len() - 3]).unwrap_err().to_string();
        assert!(e.contains("cut short inside command 2") && e.contains("at byte 39"), "{e}");
        let mut b = AOF.to_vec();
        b[4] = b'%';
        let e = check(&mut &b[..]).unwrap_err().to_string();
        assert!(e.contains("argument 1 of command 1 is not $<length>"), "{e}");
        let e = check(&mut &b"SET k v\r\n"[..]).unwrap_err().to_string();
        assert!(e.contains("does not start with *"), "{e}");
    }

    #[test]
    fn manifests_parse_and_need_a_base() {
        let m = b"file appendonly.aof.1.base.rdb seq 1 type b\nfile appendonly.aof.1.incr.aof seq 1 type i\n";
        let e = parse_manifest(m).unwrap();
        assert_eq!(e[1], ManifestEntry { file: "appendonly.aof.1.incr.aof".into(), seq: 1, kind: 'i' });
        assert!(parse_manifest(b"file x.aof seq 1 type i\n").is_err());
        assert!(parse_manifest(b"file ../x seq 1 type b\n").is_err());
        assert!(parse_manifest(b"garbage\n").is_err());
    }

    proptest! {
        #[test]
        fn any_bytes_are_judged_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = check(&mut &bytes[..]);
            let _ = parse_manifest(&bytes);
        }
    }
}
