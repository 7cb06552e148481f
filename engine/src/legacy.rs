//! The legacy backup layout: `/data2/rpger/backups/YYYY-MM-DD_HH-MM-SS/{mongodb,redis,chroma}`,
//! one full copy per night. Finding those folders so they can be imported as snapshots that keep
//! their original dates.

use crate::error::{Error, ErrorKind, IoContext, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// One legacy backup folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyFolder {
    /// The folder name, which becomes the snapshot name.
    pub name: String,
    /// Its path.
    pub path: PathBuf,
    /// The date in its name, Unix nanoseconds (UTC).
    pub time_unix_ns: i64,
    /// Its subdirectories, sorted: the sources.
    pub sources: Vec<String>,
}

/// The time a legacy folder name stands for, read as UTC; `None` for any other name.
pub fn parse_folder_name(name: &str) -> Option<i64> {
    chrono::NaiveDateTime::parse_from_str(name, "%Y-%m-%d_%H-%M-%S").ok()?.and_utc().timestamp_nanos_opt()
}

/// Each path is a legacy folder, or a directory holding some; returns them oldest first.
///
/// # Errors
/// A path that is neither (named), or a folder without any source directory.
pub fn find(paths: &[PathBuf]) -> Result<Vec<LegacyFolder>> {
    let mut out = vec![];
    for p in paths {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if parse_folder_name(name).is_some() {
            out.push(folder(p)?);
            continue;
        }
        let mut found = 0;
        for e in fs::read_dir(p).at("read legacy backup directory", p)? {
            let e = e.at("read", p)?;
            let n = e.file_name().to_string_lossy().into_owned();
            if parse_folder_name(&n).is_some() && e.path().is_dir() {
                out.push(folder(&e.path())?);
                found += 1;
            }
        }
        if found == 0 {
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("{} is neither a legacy backup folder (YYYY-MM-DD_HH-MM-SS) nor a directory holding any", p.display()),
            ));
        }
    }
    out.sort_by(|a, b| (a.time_unix_ns, &a.name).cmp(&(b.time_unix_ns, &b.name)));
    out.dedup_by(|a, b| a.name == b.name);
    Ok(out)
}

fn folder(p: &Path) -> Result<LegacyFolder> {
    let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    let time_unix_ns =
        parse_folder_name(&name).ok_or_else(|| Error::new(ErrorKind::InvalidInput, format!("{}: not a dated folder", p.display())))?;
    let mut sources = vec![];
    for e in fs::read_dir(p).at("read legacy backup folder", p)? {
        let e = e.at("read", p)?;
        if e.path().is_dir() {
            sources.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    sources.sort();
    if sources.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("legacy folder {} holds no source directory (mongodb/, redis/, chroma/)", p.display()),
        ));
    }
    Ok(LegacyFolder { name, path: p.to_path_buf(), time_unix_ns, sources })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folder_names() {
        assert_eq!(parse_folder_name("1970-01-01_00-00-01"), Some(1_000_000_000));
        assert!(parse_folder_name("2026-11-26").is_none() && parse_folder_name("logs").is_none());
    }
}
