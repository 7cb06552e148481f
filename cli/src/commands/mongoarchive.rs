//! `rpger-store mongodb-archive`.

use crate::args::{Cli, MongoArchiveArgs};
use anyhow::{Context, Result};
use rpger_engine::sources::mongo;
use std::io::{BufWriter, Write};
use std::process::ExitCode;

pub fn run(cli: &Cli, a: &MongoArchiveArgs) -> Result<ExitCode> {
    let store = super::open_store(cli)?;
    let n = if a.output.as_os_str() == "-" {
        let stdout = std::io::stdout();
        let mut w = BufWriter::with_capacity(1 << 20, stdout.lock());
        let n = mongo::export_archive(&store, &a.snapshot, &a.source, &mut w, std::time::Duration::ZERO)?;
        w.flush().context("write stdout")?;
        n
    } else {
        // Written beside the target and renamed, so a failed export leaves no half archive.
        let tmp = a.output.with_extension("partial");
        let f = std::fs::File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let res = mongo::export_archive(&store, &a.snapshot, &a.source, &mut w, std::time::Duration::ZERO)
            .map_err(anyhow::Error::from)
            .and_then(|n| {
                w.flush().context("write archive")?;
                std::fs::rename(&tmp, &a.output).with_context(|| format!("rename to {}", a.output.display()))?;
                Ok(n)
            });
        if res.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        res?
    };
    eprintln!("rpger-store: wrote a mongodump archive of {n} collection(s)");
    Ok(ExitCode::SUCCESS)
}
