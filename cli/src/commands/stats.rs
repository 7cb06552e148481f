//! `rpger-store stats`.

use crate::args::Cli;
use crate::output;
use anyhow::Result;
use rpger_engine::stats;
use serde_json::json;
use std::process::ExitCode;

pub fn run(cli: &Cli) -> Result<ExitCode> {
    let store = super::open_store(cli)?;
    let s = stats::stats(&store)?;
    if cli.json {
        output::print_json(json!({
            "command": "stats", "snapshots": s.snapshots, "store_bytes": s.store_bytes, "logical_bytes": s.logical_bytes,
            "unique_bytes": s.unique_bytes, "stored_bytes": s.stored_bytes, "chunks": s.chunks,
            "dedup_ratio": s.dedup_ratio, "compression_ratio": s.compression_ratio, "total_ratio": s.total_ratio,
            "delta_chunks": s.delta_chunks, "delta_raw_bytes": s.delta_raw_bytes, "delta_stored_bytes": s.delta_stored_bytes,
            "longest_delta_chain": s.longest_delta_chain, "broken_delta_chains": s.broken_delta_chains,
            "delta_saved_bytes": s.delta_saved_by_source.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
        }));
    } else {
        println!("snapshots          {}", s.snapshots);
        println!("logical size       {}", output::bytes(s.logical_bytes));
        println!("unique chunk data  {} in {} chunks", output::bytes(s.unique_bytes), s.chunks);
        println!("stored chunk data  {}", output::bytes(s.stored_bytes));
        println!("store size on disk {}", output::bytes(s.store_bytes));
        println!("dedup ratio        {:.2}x", s.dedup_ratio);
        println!("compression ratio  {:.2}x", s.compression_ratio);
        println!("total ratio        {:.2}x (logical / store size)", s.total_ratio);
        println!(
            "delta chunks       {} ({} stored as {})",
            s.delta_chunks,
            output::bytes(s.delta_raw_bytes),
            output::bytes(s.delta_stored_bytes)
        );
        println!("longest delta chain {} delta(s) above a chunk stored whole", s.longest_delta_chain);
        if s.broken_delta_chains > 0 {
            println!("broken delta chains {} (run `rpger-store verify` to see which files they touch)", s.broken_delta_chains);
        }
        for (src, saved) in &s.delta_saved_by_source {
            println!("delta saved        {} on {src} (against compressing those chunks alone)", output::bytes(*saved));
        }
    }
    Ok(ExitCode::SUCCESS)
}
