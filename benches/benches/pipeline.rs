//! Micro-benchmarks of the backup pipeline's stages, on seeded data (never /dev/urandom):
//! FastCDC chunking, BLAKE3 per chunk, zstd per chunk at levels 1 and 3, and an end-to-end
//! backup of a generated RPGer night into a temporary store.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rpger_engine::backup::{self, BackupOptions};
use rpger_engine::chunking::{cut_points, ChunkParams};
use rpger_engine::compress;
use rpger_engine::demo::{night_sources, Dataset};
use rpger_engine::progress::NoProgress;
use rpger_engine::store::{InitOptions, Store};
use std::time::Duration;

/// A generated night concatenated into one buffer: realistic mix of BSON, RDB and pages.
fn night_bytes(size: u64) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    Dataset::new(42, size).write(dir.path()).unwrap();
    let mut all = vec![];
    for f in ["mongodb/mongodb_backup/rpger/messages.bson", "redis/dump.rdb", "chroma/chroma.sqlite3"] {
        all.extend(std::fs::read(dir.path().join(f)).unwrap());
    }
    all
}

fn stages(c: &mut Criterion) {
    let data = night_bytes(24_000_000);
    let p = ChunkParams::DEFAULT;
    let mut g = c.benchmark_group("stages");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("fastcdc_16k", |b| b.iter(|| cut_points(&data, p, true).len()));
    let cuts = cut_points(&data, p, true);
    g.bench_function("blake3_per_chunk", |b| {
        b.iter(|| cuts.iter().map(|&(s, l)| blake3::hash(&data[s..s + l]).as_bytes()[0] as u64).sum::<u64>())
    });
    for level in [1, 3] {
        g.bench_with_input(BenchmarkId::new("zstd_per_chunk", level), &level, |b, &lvl| {
            b.iter(|| cuts.iter().map(|&(s, l)| compress::compress(&data[s..s + l], lvl).1.len()).sum::<usize>())
        });
    }
    g.finish();
}

fn end_to_end(c: &mut Criterion) {
    let src = tempfile::tempdir().unwrap();
    let bytes = Dataset::new(42, 24_000_000).write(src.path()).unwrap();
    let mut g = c.benchmark_group("backup");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("night1_new_store", |b| {
        b.iter_with_setup(
            || {
                let d = tempfile::tempdir().unwrap();
                let s = Store::init(&d.path().join("s"), InitOptions::default()).unwrap();
                (d, s)
            },
            |(_d, store)| {
                backup::backup(&store, BackupOptions::new(night_sources(src.path())), &NoProgress).unwrap();
            },
        )
    });
    g.finish();
}

criterion_group!(benches, stages, end_to_end);
criterion_main!(benches);
