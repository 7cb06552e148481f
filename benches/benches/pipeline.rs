//! Micro-benchmarks on seeded data (never /dev/urandom): the backup stages (FastCDC chunking,
//! BLAKE3 per chunk, zstd per chunk at levels 1 and 3, resemblance features, delta encoding),
//! pack writing, index lookups at 1 M chunks, and end-to-end backup and restore of a generated
//! RPGer night in a temporary store.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rpger_engine::backup::{self, BackupOptions};
use rpger_engine::chunking::{cut_points, ChunkParams};
use rpger_engine::compress;
use rpger_engine::delta;
use rpger_engine::demo::{night_sources, Dataset};
use rpger_engine::progress::NoProgress;
use rpger_engine::restore::{self, RestoreOptions};
use rpger_engine::store::index::Index;
use rpger_engine::store::pack::PackWriter;
use rpger_engine::store::{InitOptions, Store};
use rpger_engine::Id;
use rpger_formats::pack::{BlobEntry, Encoding};
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

/// A new store in a temporary directory (kept alive by the returned guard).
fn fresh_store() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::init(&d.path().join("s"), InitOptions::default()).unwrap();
    (d, s)
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
    g.bench_function("delta_features", |b| b.iter(|| cuts.iter().map(|&(s, l)| delta::features(&data[s..s + l])[0] as u64).sum::<u64>()));
    // Each chunk against itself with every 997th byte changed: a night's typical near-duplicate.
    let bases: Vec<Vec<u8>> = cuts
        .iter()
        .map(|&(s, l)| {
            let mut v = data[s..s + l].to_vec();
            for i in (0..v.len()).step_by(997) {
                v[i] ^= 0x5a;
            }
            v
        })
        .collect();
    g.bench_function("delta_encode_level1", |b| {
        b.iter(|| cuts.iter().zip(&bases).map(|(&(s, l), base)| delta::compress(&data[s..s + l], base, 1).unwrap().len()).sum::<usize>())
    });
    g.finish();
}

fn store_parts(c: &mut Criterion) {
    let data = night_bytes(24_000_000);
    let cuts = cut_points(&data, ChunkParams::DEFAULT, true);
    let blobs: Vec<(Id, Encoding, Vec<u8>, u32)> = cuts
        .iter()
        .map(|&(s, l)| {
            let (e, b) = compress::compress(&data[s..s + l], 3);
            (Id::of(&data[s..s + l]), e, b, l as u32)
        })
        .collect();
    let stored: u64 = blobs.iter().map(|b| b.2.len() as u64).sum();
    let mut g = c.benchmark_group("store");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(stored));
    // Appending compressed blobs to packs, each pack made durable (fsync) when it closes.
    g.bench_function("pack_write", |b| {
        b.iter_with_setup(fresh_store, |(_d, store)| {
            let mut w = PackWriter::new(&store);
            for (id, e, b, raw) in &blobs {
                w.add(*id, *e, b, *raw).unwrap();
            }
            w.finish().unwrap();
        })
    });
    g.finish();

    // 1 M chunks in one index segment; lookups of present and absent ids.
    let (_d, store) = fresh_store();
    let mut index = Index::default();
    let id_of = |i: u64| Id::of(&i.to_le_bytes());
    for p in 0..16u64 {
        let entries: Vec<BlobEntry> = (0..65_536u64)
            .map(|i| BlobEntry { id: id_of((p << 32) | i), offset: 10 + i as u32 * 100, len: 100, raw_len: 200, encoding: Encoding::Zstd })
            .collect();
        index.add_pack(id_of(u64::MAX - p), &entries);
    }
    index.flush(&store).unwrap();
    let index = Index::load(&store).unwrap();
    let probes: Vec<Id> = (0..10_000u64).map(|i| id_of(((i % 16) << 32) | ((i * 7919) % 65_536))).collect();
    let absent: Vec<Id> = (0..10_000u64).map(|i| id_of((1 << 40) | i)).collect();
    let mut g = c.benchmark_group("index_1m");
    g.throughput(Throughput::Elements(probes.len() as u64));
    g.bench_function("lookup_present", |b| b.iter(|| probes.iter().filter(|id| index.get(id).is_some()).count()));
    g.bench_function("lookup_absent", |b| b.iter(|| absent.iter().filter(|id| index.contains(id)).count()));
    g.finish();
}

fn end_to_end(c: &mut Criterion) {
    let src = tempfile::tempdir().unwrap();
    let bytes = Dataset::new(42, 24_000_000).write(src.path()).unwrap();
    let mut g = c.benchmark_group("backup");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("night1_new_store", |b| {
        b.iter_with_setup(fresh_store, |(_d, store)| {
            backup::backup(&store, BackupOptions::new(night_sources(src.path())), &NoProgress).unwrap();
        })
    });
    g.finish();
    // The restore write path: read, decompress, check and write every file of that night.
    let (_d, store) = fresh_store();
    backup::backup(&store, BackupOptions::new(night_sources(src.path())), &NoProgress).unwrap();
    let mut g = c.benchmark_group("restore");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("night1", |b| {
        b.iter_with_setup(
            || tempfile::tempdir().unwrap(),
            |target| {
                let opts = RestoreOptions {
                    snapshot: "latest".into(),
                    target: target.path().join("r"),
                    only: None,
                    overwrite: false,
                    lock_wait: Duration::ZERO,
                };
                restore::restore(&store, &opts, &NoProgress).unwrap();
            },
        )
    });
    g.finish();
}

criterion_group!(benches, stages, store_parts, end_to_end);
criterion_main!(benches);
