//! A deterministic generator of RPGer-like nightly dumps with realistic day-to-day churn, for
//! the demo, tests and benchmarks (the project must not depend on the shared Python generator).
//!
//! The shares and churn follow `shared/datasets/README.md` (measured on the real stack). Per night:
//! - `mongodb/mongodb_backup/rpger/<coll>.bson` (~45%): real BSON documents in natural order; ~2%
//!   modified in place with size changes (85% of them in the newest 5%), ~1% appended, ~0.5%
//!   deleted (half scattered, half one contiguous run).
//! - `redis/dump.rdb` (~13%): ~750-byte records in hash-table order, ~5% of keys rewritten and so
//!   scattered through the file; values half LZF-like noise, half text.
//! - `redis/appendonlydir/` (~13% + growth): a base that never changes and an incr log that only
//!   grows by the day's commands (no AOF rewrite within a week, as measured).
//! - `chroma/chroma.sqlite3` (~28%): 4 KiB pages of float vectors and text; ~10% of pages touched
//!   in place (B-tree and FTS updates), ~1.2% new pages appended.

use crate::error::{IoContext, Result};
use std::fs;
use std::path::Path;

/// The `mongodb`, `redis` and `chroma` directories of a night written by [`Dataset::write`], as
/// backup sources.
pub fn night_sources(dir: &Path) -> Vec<crate::backup::SourceSpec> {
    ["chroma", "mongodb", "redis"]
        .iter()
        .map(|s| crate::backup::SourceSpec { name: s.to_string(), input: crate::backup::SourceInput::Path(dir.join(s)) })
        .collect()
}

/// splitmix64: small, fast, seedable.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }
    /// Fills `buf` with random bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for c in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            c.copy_from_slice(&v[..c.len()]);
        }
    }
}

const WORDS: &[&str] = &[
    "the",
    "dragon",
    "sword",
    "of",
    "ancient",
    "keep",
    "rogue",
    "casts",
    "a",
    "spell",
    "against",
    "goblin",
    "party",
    "tavern",
    "quest",
    "gold",
    "coins",
    "shield",
    "wizard",
    "forest",
    "north",
    "river",
    "cleric",
    "heals",
    "wounded",
    "and",
    "dice",
    "roll",
    "critical",
    "hit",
    "campaign",
    "level",
    "experience",
    "map",
    "dungeon",
    "door",
    "trap",
];

fn redis_key(k: u64) -> String {
    format!("user:{k:x}")
}

/// RDB's length encoding: 6 bits, 14 bits big-endian, or a marker and 32 bits big-endian.
fn rdb_length(out: &mut Vec<u8>, n: usize) {
    match n {
        0..=63 => out.push(n as u8),
        64..=16383 => out.extend_from_slice(&(0x4000 | n as u16).to_be_bytes()),
        _ => {
            out.push(0x80);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
    }
}

fn words(rng: &mut Rng, n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
    }
    s
}

/// Encodes one BSON document: `_id` ObjectId, `n` int32, `name` and `text` strings, `stats`
/// binary (subtype 0).
fn bson_doc(id: u64, n: i32, name: &str, text: &str, stats: &[u8]) -> Vec<u8> {
    fn cstr(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    fn string(out: &mut Vec<u8>, key: &str, v: &str) {
        out.push(0x02);
        cstr(out, key);
        out.extend_from_slice(&((v.len() + 1) as i32).to_le_bytes());
        cstr(out, v);
    }
    let mut body = vec![0x07];
    cstr(&mut body, "_id");
    body.extend_from_slice(&(id as u32).to_be_bytes());
    body.extend_from_slice(&(id.rotate_left(17)).to_be_bytes());
    body.push(0x10);
    cstr(&mut body, "n");
    body.extend_from_slice(&n.to_le_bytes());
    string(&mut body, "name", name);
    string(&mut body, "text", text);
    body.push(0x05);
    cstr(&mut body, "stats");
    body.extend_from_slice(&(stats.len() as i32).to_le_bytes());
    body.push(0);
    body.extend_from_slice(stats);
    let mut doc = ((body.len() + 5) as i32).to_le_bytes().to_vec();
    doc.extend_from_slice(&body);
    doc.push(0);
    doc
}

struct Doc {
    id: u64,
    n: i32,
    name: String,
    text: String,
    stats: Vec<u8>,
}

fn new_doc(rng: &mut Rng, id: u64) -> Doc {
    let mut stats = vec![0u8; 16 + rng.below(48) as usize];
    rng.fill(&mut stats);
    let nw = 40 + rng.below(360) as usize;
    Doc { id, n: rng.below(100) as i32, name: words(rng, 2), text: words(rng, nw), stats }
}

/// Simulated database state, advanced one night at a time.
pub struct Dataset {
    rng: Rng,
    collections: Vec<(String, Vec<Doc>)>,
    next_id: u64,
    redis: Vec<(u64, Vec<u8>)>,
    aof_base: Vec<u8>,
    aof_incr: Vec<u8>,
    pages: Vec<Vec<u8>>,
}

impl Dataset {
    /// A dataset of roughly `bytes` per night (at least ~200 KB), deterministic from `seed`.
    pub fn new(seed: u64, bytes: u64) -> Self {
        let mut rng = Rng::new(seed);
        let mongo_docs = (bytes * 45 / 100 / 1300).max(200);
        let mut next_id = 1;
        let mut collections = vec![];
        for (name, share) in [("characters", 3u64), ("messages", 5), ("campaigns", 2)] {
            let docs = (0..mongo_docs * share / 10)
                .map(|_| {
                    next_id += 1;
                    new_doc(&mut rng, next_id)
                })
                .collect();
            collections.push((name.to_string(), docs));
        }
        let redis_keys = (bytes * 13 / 100 / 750).max(100);
        let redis: Vec<(u64, Vec<u8>)> =
            (0..redis_keys).map(|k| (k.wrapping_mul(0x9E37_79B9_7F4A_7C15), Self::redis_value(&mut rng))).collect();
        let pages = (0..(bytes * 28 / 100 / 4096).max(20)).map(|_| Self::page(&mut rng)).collect();
        let mut d = Dataset { rng, collections, next_id, redis, aof_base: vec![], aof_incr: vec![], pages };
        d.aof_base = d.rdb();
        d
    }

    /// Like an LZF-compressed value: half noise, half text.
    fn redis_value(rng: &mut Rng) -> Vec<u8> {
        let len = 300 + rng.below(900) as usize;
        let mut v = vec![0u8; len / 2];
        rng.fill(&mut v);
        let t = words(rng, len / 10);
        v.extend_from_slice(&t.as_bytes()[..(len - len / 2).min(t.len())]);
        v
    }

    /// The dump: records in hash-table order, so changed keys are scattered. A real RDB
    /// layout (string records, end opcode, CRC-64), so `verify --dumps` checks it like a dump
    /// redis-server wrote.
    fn rdb(&self) -> Vec<u8> {
        let mut rdb = b"REDIS0010".to_vec();
        rdb.extend_from_slice(&[0xFE, 0x00]); // SELECTDB 0
        let mut order: Vec<&(u64, Vec<u8>)> = self.redis.iter().collect();
        order.sort_by_key(|(k, _)| k.rotate_left(29) ^ 0x5555);
        for (k, v) in order {
            rdb.push(0); // a string value
            let key = redis_key(*k);
            for field in [key.as_bytes(), v] {
                rdb_length(&mut rdb, field.len());
                rdb.extend_from_slice(field);
            }
        }
        rdb.push(0xFF);
        let crc = rpger_formats::dumps::rdb::checksum(&rdb);
        rdb.extend_from_slice(&crc.to_le_bytes());
        rdb
    }

    fn page(rng: &mut Rng) -> Vec<u8> {
        let mut p = vec![0u8; 4096];
        rng.fill(&mut p[..2048]); // float32 vector bytes barely compress
        let t = words(rng, 400);
        let n = t.len().min(2048);
        p[2048..2048 + n].copy_from_slice(&t.as_bytes()[..n]);
        p
    }

    /// Applies one simulated day of churn.
    pub fn advance(&mut self) {
        let rng = &mut self.rng;
        for (_, docs) in &mut self.collections {
            let len = docs.len() as u64;
            for _ in 0..(len * 2 / 100).max(1) {
                let i = if rng.chance(0.85) { len - 1 - rng.below(len / 20 + 1) } else { rng.below(len) } as usize;
                let last = docs.len() - 1;
                let nw = 1 + rng.below(8) as usize;
                let extra = words(rng, nw);
                let d = &mut docs[i.min(last)];
                d.n += 1;
                d.text.push(' ');
                d.text.push_str(&extra);
            }
            for _ in 0..(len / 400).max(1) {
                if docs.len() > 10 {
                    let i = rng.below(docs.len() as u64) as usize;
                    docs.remove(i);
                }
            }
            let run = (len / 400) as usize;
            if run > 0 && docs.len() > run + 10 {
                let at = rng.below((docs.len() - run) as u64) as usize;
                docs.drain(at..at + run);
            }
            for _ in 0..(len / 100).max(1) {
                self.next_id += 1;
                docs.push(new_doc(rng, self.next_id));
            }
        }
        let keys = self.redis.len() as u64;
        for _ in 0..(keys * 5 / 100).max(1) {
            let i = rng.below(keys) as usize;
            self.redis[i].1 = Self::redis_value(rng);
            let (k, v) = &self.redis[i];
            let key = redis_key(*k);
            self.aof_incr.extend_from_slice(format!("*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n", key.len(), v.len()).as_bytes());
            self.aof_incr.extend_from_slice(v);
            self.aof_incr.extend_from_slice(b"\r\n");
        }
        let pages = self.pages.len() as u64;
        for _ in 0..(pages / 10).max(1) {
            let i = rng.below(pages) as usize;
            let off = rng.below(4000) as usize;
            let mut patch = [0u8; 64];
            rng.fill(&mut patch);
            let end = (off + 64).min(4096);
            self.pages[i][off..end].copy_from_slice(&patch[..end - off]);
        }
        for _ in 0..(pages * 12 / 1000).max(1) {
            self.pages.push(Self::page(rng));
        }
    }

    /// Writes tonight's dumps under `dir` in the legacy layout; returns the bytes written.
    ///
    /// # Errors
    /// I/O errors with the path.
    pub fn write(&self, dir: &Path) -> Result<u64> {
        let mut total = 0u64;
        let mongo = dir.join("mongodb/mongodb_backup/rpger");
        fs::create_dir_all(&mongo).at("create", &mongo)?;
        for (name, docs) in &self.collections {
            let mut out = vec![];
            for d in docs {
                out.extend_from_slice(&bson_doc(d.id, d.n, &d.name, &d.text, &d.stats));
            }
            total += out.len() as u64;
            let p = mongo.join(format!("{name}.bson"));
            fs::write(&p, &out).at("write", &p)?;
            let meta = format!("{{\"indexes\":[{{\"v\":{{\"$numberInt\":\"2\"}},\"key\":{{\"_id\":{{\"$numberInt\":\"1\"}}}},\"name\":\"_id_\"}}],\"collectionName\":\"{name}\",\"type\":\"collection\"}}");
            let p = mongo.join(format!("{name}.metadata.json"));
            fs::write(&p, meta).at("write", &p)?;
        }
        let redis = dir.join("redis");
        let rdb = self.rdb();
        let aof = redis.join("appendonlydir");
        fs::create_dir_all(&aof).at("create", &aof)?;
        total += (rdb.len() + self.aof_base.len() + self.aof_incr.len()) as u64;
        let aof_manifest = b"file appendonly.aof.1.base.rdb seq 1 type b\nfile appendonly.aof.1.incr.aof seq 1 type i\n";
        for (name, bytes) in [
            ("dump.rdb", &rdb[..]),
            ("appendonlydir/appendonly.aof.1.base.rdb", &self.aof_base[..]),
            ("appendonlydir/appendonly.aof.1.incr.aof", &self.aof_incr[..]),
            ("appendonlydir/appendonly.aof.manifest", &aof_manifest[..]),
        ] {
            let p = redis.join(name);
            fs::write(&p, bytes).at("write", &p)?;
        }
        let chroma = dir.join("chroma");
        fs::create_dir_all(&chroma).at("create", &chroma)?;
        let db: Vec<u8> = self.pages.concat();
        total += db.len() as u64;
        let p = chroma.join("chroma.sqlite3");
        fs::write(&p, &db).at("write", &p)?;
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_churning() {
        let t = tempfile::tempdir().unwrap();
        let mut a = Dataset::new(1, 400_000);
        let b = Dataset::new(1, 400_000);
        a.write(&t.path().join("a")).unwrap();
        b.write(&t.path().join("b")).unwrap();
        let read = |p: &str| fs::read(t.path().join(p)).unwrap();
        assert_eq!(read("a/redis/dump.rdb"), read("b/redis/dump.rdb"));
        a.advance();
        a.write(&t.path().join("c")).unwrap();
        assert_ne!(read("a/redis/dump.rdb"), read("c/redis/dump.rdb"));
        // every BSON document is length-prefixed and NUL-terminated
        let bson = read("c/mongodb/mongodb_backup/rpger/characters.bson");
        let mut pos = 0;
        while pos < bson.len() {
            let len = i32::from_le_bytes(bson[pos..pos + 4].try_into().unwrap()) as usize;
            assert_eq!(bson[pos + len - 1], 0);
            pos += len;
        }
        assert_eq!(pos, bson.len());
    }
}
