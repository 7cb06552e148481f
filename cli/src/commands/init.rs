//! `rpger-store init`.

use crate::args::{Cli, InitArgs};
use crate::output;
use anyhow::Result;
use rpger_engine::chunking::ChunkParams;
use rpger_engine::store::{InitOptions, Store};
use serde_json::json;
use std::process::ExitCode;

pub fn run(cli: &Cli, a: &InitArgs) -> Result<ExitCode> {
    let opts = InitOptions {
        chunk: ChunkParams { min: a.chunk_avg / 4, avg: a.chunk_avg, max: a.chunk_avg.saturating_mul(4) },
        zstd_level: a.zstd_level,
        ..InitOptions::default()
    };
    let path = super::store_path(cli)?;
    let store = Store::init(&path, opts)?;
    let c = store.config();
    if cli.json {
        output::print_json(json!({
            "command": "init", "store": path, "store_id": c.store_id.to_hex(),
            "chunk_min": c.chunk_min, "chunk_avg": c.chunk_avg, "chunk_max": c.chunk_max, "zstd_level": c.zstd_level,
        }));
    } else {
        println!(
            "created store {} (id {}, chunks {}/{}/{} bytes, zstd level {})",
            path.display(),
            c.store_id.short(),
            c.chunk_min,
            c.chunk_avg,
            c.chunk_max,
            c.zstd_level
        );
    }
    Ok(ExitCode::SUCCESS)
}
