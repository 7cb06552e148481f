//! Compresses every FastCDC chunk (4/16/64 KiB, the store default) of a directory alone with a
//! set of zstd parameter choices and prints the total size and the median time to compress and
//! decompress them all (5 passes, one thread, one context reused with its parameters set again
//! for every chunk).
//!
//! `zstd-params DIR` runs every choice; `zstd-params DIR 'l2,l2 mml5,l2'` runs the named ones
//! in that order (repeat names to alternate them: this machine's clock is noisy); `BIG=1
//! zstd-params DIR` compresses the same bytes as 1 MiB frames at levels 1-3 instead; `DICT=0,32
//! zstd-params DIR` runs level 2 with trained dictionaries of those sizes in KiB (0: none).
use std::time::Instant;
use zstd::zstd_safe::{CCtx, CParameter, DCtx, Strategy as S};

fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() { files(&p, out) } else if p.is_file() { out.push(p) }
    }
}

struct P { name: &'static str, level: i32, extra: Vec<CParameter> }

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut fs = vec![];
    files(std::path::Path::new(&args[1]), &mut fs);
    fs.sort();
    let mut chunks: Vec<Vec<u8>> = vec![];
    for f in &fs {
        let d = std::fs::read(f).unwrap();
        for c in fastcdc::v2020::FastCDC::new(&d, 4096, 16384, 65536) { chunks.push(d[c.offset..c.offset + c.length].to_vec()); }
    }
    let total: usize = chunks.iter().map(|c| c.len()).sum();
    eprintln!("{} chunks, {} MiB", chunks.len(), total >> 20);
    use CParameter::*;
    let ps = vec![
        P { name: "l1", level: 1, extra: vec![] },
        P { name: "l2", level: 2, extra: vec![] },
        P { name: "l3", level: 3, extra: vec![] },
        P { name: "l6", level: 6, extra: vec![] },
        P { name: "l9", level: 9, extra: vec![] },
        P { name: "l12", level: 12, extra: vec![] },
        P { name: "l16", level: 16, extra: vec![] },
        P { name: "l19", level: 19, extra: vec![] },
        P { name: "l1 mml4", level: 1, extra: vec![MinMatch(4)] },
        P { name: "l2 mml5", level: 2, extra: vec![MinMatch(5)] },
        P { name: "l2 mml6", level: 2, extra: vec![MinMatch(6)] },
        P { name: "l2 h14", level: 2, extra: vec![HashLog(14)] },
        P { name: "l2 h16", level: 2, extra: vec![HashLog(16)] },
        P { name: "l2 h16 mml5", level: 2, extra: vec![HashLog(16), MinMatch(5)] },
        P { name: "l2 h14 mml5", level: 2, extra: vec![HashLog(14), MinMatch(5)] },
        P { name: "l3 mml6", level: 3, extra: vec![MinMatch(6)] },
        P { name: "l3 mml5", level: 3, extra: vec![MinMatch(5)] },
        P { name: "dfast h14 c14 mml5", level: 2, extra: vec![Strategy(S::ZSTD_dfast), HashLog(14), ChainLog(14), MinMatch(5)] },
        P { name: "dfast h13 c13 mml4", level: 2, extra: vec![Strategy(S::ZSTD_dfast), HashLog(13), ChainLog(13), MinMatch(4)] },
    ];
    if std::env::var("BIG").is_ok() {
        let mut cctx = CCtx::create();
        // The same bytes as one frame per 1 MiB: what a larger frame would cost and save.
        let all: Vec<u8> = chunks.concat();
        for lvl in [1, 2, 3, 1, 2, 3] {
            let t = Instant::now();
            let mut sz = 0;
            for piece in all.chunks(1 << 20) {
                cctx.reset(zstd::zstd_safe::ResetDirective::SessionAndParameters).unwrap();
                cctx.set_parameter(CParameter::CompressionLevel(lvl)).unwrap();
                let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(piece.len()));
                cctx.compress2(&mut out, piece).unwrap();
                sz += out.len();
            }
            let el = t.elapsed().as_secs_f64();
            println!("1MiB frames l{lvl}: {:.1} MiB {:.3} s {:.0} MiB/s", sz as f64 / 1048576.0, el, total as f64 / 1048576.0 / el);
        }
        return;
    }
    if let Ok(spec) = std::env::var("DICT") {
        dict_sweep(&chunks, total, &spec);
        return;
    }
    let only: Option<Vec<String>> = args.get(2).map(|s| s.split(',').map(String::from).collect());
    let mut cctx = CCtx::create();
    let mut dctx = DCtx::create();
    let order: Vec<&P> = match &only { Some(o) => o.iter().map(|n| ps.iter().find(|p| p.name == n).unwrap()).collect(), None => ps.iter().collect() };
    for p in order {
        let (size, ct, dt) = measure(&chunks, &mut cctx, &mut dctx, |cctx| {
            cctx.reset(zstd::zstd_safe::ResetDirective::SessionAndParameters).unwrap();
            cctx.set_parameter(CompressionLevel(p.level)).unwrap();
            for e in &p.extra { cctx.set_parameter(e.clone()).unwrap(); }
        });
        report(p.name, size, ct, dt, total);
    }
}

/// Compresses every chunk alone (`setup` prepares the context before each), then decompresses
/// every frame, 5 times; returns the stored size (a chunk that does not shrink counts raw) and
/// the median compress and decompress seconds.
fn measure(chunks: &[Vec<u8>], cctx: &mut CCtx, dctx: &mut DCtx, mut setup: impl FnMut(&mut CCtx)) -> (usize, f64, f64) {
    let (mut ct, mut dt, mut size) = (vec![], vec![], 0usize);
    for _ in 0..5 {
        let t = Instant::now();
        let mut frames = Vec::with_capacity(chunks.len());
        for c in chunks {
            setup(cctx);
            let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(c.len()));
            cctx.compress2(&mut out, c).unwrap();
            if out.len() >= c.len() { out.clear(); }
            frames.push(out);
        }
        ct.push(t.elapsed().as_secs_f64());
        size = frames.iter().zip(chunks).map(|(f, c)| if f.is_empty() { c.len() } else { f.len() }).sum();
        let t = Instant::now();
        let mut buf: Vec<u8> = Vec::with_capacity(70000);
        for (f, c) in frames.iter().zip(chunks) {
            if f.is_empty() { continue; }
            buf.clear();
            dctx.decompress(&mut buf, f).unwrap();
            assert_eq!(buf.len(), c.len());
        }
        dt.push(t.elapsed().as_secs_f64());
    }
    ct.sort_by(|a, b| a.partial_cmp(b).unwrap());
    dt.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (size, ct[2], dt[2])
}

fn report(name: &str, size: usize, ct: f64, dt: f64, total: usize) {
    let mib = total as f64 / 1048576.0;
    println!("{:22} size {:8.2} MiB  comp {:.3} s ({:4.0} MiB/s)  decomp {:.3} s ({:4.0} MiB/s)", name, size as f64 / 1048576.0, ct, mib / ct, dt, mib / dt);
}

/// `DICT=2,8,32,112 zstd-params DIR`: level 2 with no dictionary, then with a dictionary of
/// each size in KiB, trained on every 200th chunk, prepared once for compression and for
/// decompression. Small dictionaries are mostly entropy tables: what a frame would not have
/// to describe (bytes) nor rebuild (decode time).
fn dict_sweep(chunks: &[Vec<u8>], total: usize, spec: &str) {
    use zstd::zstd_safe::{CDict, DDict, ResetDirective};
    let mut sample = vec![];
    let mut sizes = vec![];
    for c in chunks.iter().step_by(200) { sample.extend_from_slice(c); sizes.push(c.len()); }
    let mut runs: Vec<(String, Option<Vec<u8>>)> = vec![];
    for kib in spec.split(',') {
        let kib: usize = kib.parse().unwrap();
        if kib == 0 { runs.push(("none".into(), None)); continue; }
        let name = format!("{kib} KiB");
        // A size named twice (to alternate runs) reuses its dictionary instead of training again.
        if let Some((_, d)) = runs.iter().find(|(n, _)| *n == name) {
            let d = d.clone();
            runs.push((name, d));
            continue;
        }
        let mut d: Vec<u8> = Vec::with_capacity(kib << 10);
        let t = Instant::now();
        zstd::zstd_safe::train_from_buffer(&mut d, &sample, &sizes).expect("zstd could not train a dictionary: too few chunks (every 200th is a sample)?");
        eprintln!("dict {kib} KiB: {} bytes, trained in {:.2} s", d.len(), t.elapsed().as_secs_f64());
        runs.push((name, Some(d)));
    }
    for (name, d) in &runs {
        let cdict = d.as_ref().map(|d| CDict::create(d, 2));
        let ddict = d.as_ref().map(|d| DDict::create(d));
        let mut cctx = CCtx::create();
        let mut dctx = DCtx::create();
        cctx.set_parameter(CParameter::CompressionLevel(2)).unwrap();
        if let Some(cd) = &cdict { cctx.ref_cdict(cd).unwrap(); }
        if let Some(dd) = &ddict { dctx.ref_ddict(dd).unwrap(); }
        // SessionOnly keeps the referenced dictionaries from one chunk to the next.
        let (size, ct, dt) = measure(chunks, &mut cctx, &mut dctx, |cctx| {
            cctx.reset(ResetDirective::SessionOnly).unwrap();
        });
        report(&format!("dict {name}"), size, ct, dt, total);
    }
}
