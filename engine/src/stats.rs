//! Store-wide figures: sizes and dedup/compression ratios; snapshot listings.

use crate::error::Result;
use crate::store::index::Index;
use crate::store::Store;
use rpger_formats::snapshot::Snapshot;

/// Sizes and ratios of a store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreStats {
    /// Committed snapshots.
    pub snapshots: usize,
    /// Bytes on disk (every file under the store root).
    pub store_bytes: u64,
    /// Sum of the logical sizes of all snapshots.
    pub logical_bytes: u64,
    /// Uncompressed bytes of the distinct chunks.
    pub unique_bytes: u64,
    /// Stored (compressed) bytes of the distinct chunks.
    pub stored_bytes: u64,
    /// Distinct chunks.
    pub chunks: usize,
    /// logical / unique: what dedup saves.
    pub dedup_ratio: f64,
    /// unique / stored: what compression saves.
    pub compression_ratio: f64,
    /// logical / store size: both together, overheads included.
    pub total_ratio: f64,
    /// Distinct chunks stored as deltas against similar chunks.
    pub delta_chunks: u64,
    /// Their uncompressed bytes.
    pub delta_raw_bytes: u64,
    /// Their stored bytes.
    pub delta_stored_bytes: u64,
    /// Per source name: bytes delta encoding saved over the snapshots in the store (estimated
    /// against compressing each chunk alone), sorted by name.
    pub delta_saved_by_source: Vec<(String, u64)>,
    /// Most deltas between a chunk and the chunk stored whole its chain starts from.
    pub longest_delta_chain: u8,
    /// Deltas whose chain cannot be followed to a chunk stored whole (damage: `verify` names it).
    pub broken_delta_chains: u64,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Every snapshot, oldest first.
///
/// # Errors
/// The first snapshot file that cannot be read, named.
pub fn list_snapshots(store: &Store) -> Result<Vec<Snapshot>> {
    store.list_snapshots()?.iter().map(|n| store.read_snapshot(n)).collect()
}

/// Computes store statistics.
///
/// # Errors
/// Unreadable snapshots or index segments, named.
pub fn stats(store: &Store) -> Result<StoreStats> {
    let snaps = list_snapshots(store)?;
    let (index, _damaged) = Index::load_lenient(store)?;
    let (unique, stored) = index.totals();
    let logical: u64 = snaps.iter().map(|s| s.logical_bytes()).sum();
    let disk = store.disk_usage()?;
    let (delta_chunks, delta_raw_bytes, delta_stored_bytes) = index.delta_totals();
    let (longest_delta_chain, broken_delta_chains) = crate::delta::longest_chain(store, &index);
    let mut saved: std::collections::BTreeMap<String, u64> = Default::default();
    for s in &snaps {
        for (k, v) in &s.labels {
            if let Some(src) = k.strip_suffix(crate::backup::DELTA_SAVED_LABEL).and_then(|p| p.strip_suffix('.')) {
                *saved.entry(src.to_string()).or_default() += v.parse::<u64>().unwrap_or(0);
            }
        }
    }
    Ok(StoreStats {
        delta_chunks,
        delta_raw_bytes,
        delta_stored_bytes,
        delta_saved_by_source: saved.into_iter().collect(),
        longest_delta_chain,
        broken_delta_chains,
        snapshots: snaps.len(),
        store_bytes: disk,
        logical_bytes: logical,
        unique_bytes: unique,
        stored_bytes: stored,
        chunks: index.len(),
        dedup_ratio: ratio(logical, unique),
        compression_ratio: ratio(unique, stored),
        total_ratio: ratio(logical, disk),
    })
}
