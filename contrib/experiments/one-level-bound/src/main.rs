//! What night-to-night delta encoding of chunks can cost at best, under the store's one-level
//! rule (a base is always stored whole) and without it, on nights of dumps.
//!
//! `one-level-bound NIGHT_DIR...` (oldest first) chunks every file as the store does (FastCDC
//! 4/16/64 KiB) and links each chunk of night k that is new (its BLAKE3 unseen) to its
//! predecessor: the chunk of the same file the night before that shares the most resemblance
//! features with it (at least 2, the engine's sketch). Those links make a forest of versions of
//! each region. For every new chunk it then measures, with the engine's own encoders, its whole
//! encoding P (zstd level 2) and its delta against each of its ancestors (zstd level 1 with the
//! ancestor as prefix, plus the 33-byte header of a one-base delta blob), and prints what nights
//! 2..N cost under these rules:
//!
//! - chain: each version against its predecessor, whatever that one is (what `zstd
//!   --patch-from` does for a whole file; not allowed by the store's format);
//! - root: one level, every version against its region's first version, never stored again;
//! - online: one level, against the nearest ancestor stored whole, stored whole instead when
//!   the delta is over half of P (the engine's refresh rule);
//! - optimum: one level, the set of versions stored whole chosen knowing every later night
//!   (a dynamic program over each region's tree): no online rule can store less;
//! - floor: every version against its best ancestor, whatever that one's encoding (no rule of
//!   any depth stores less over these links);
//! - chains of at most 1-4 deltas: against the nearest ancestor fewer than that many deltas away
//!   from a whole chunk, refreshed past P/2 (depth 1 is the online rule again; stderr counts the
//!   decodes the last night's new chunks would need);
//! - the engine's search: the (up to) two chunks stored whole so far, anywhere, that share the
//!   most features, instead of the links (one level, refresh past P/2).
//!
//! Same-run bases on night 1 are left out of all of them alike (night 1 is stored whole): the
//! tool compares rules over the same chunks, it does not reproduce the engine's figures.
//! It holds every distinct chunk in memory (about 2.9 GiB for 7 nights of the shared dataset).
use rayon::prelude::*;
use rpger_engine::chunking::{cut_points, ChunkParams};
use rpger_engine::{compress, delta, Id};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Header of a one-base delta blob: count byte and one 32-byte id.
const DELTA_HEADER: usize = 33;
const LEVEL: i32 = 2;
const DELTA_LEVEL: i32 = 1;
const MIN_SHARED: usize = 2;

struct Node {
    bytes: Vec<u8>,
    night: usize,
    parent: Option<usize>,
    depth: usize,
    children: Vec<usize>,
    /// Resemblance features.
    feat: [u32; 8],
    /// Whole encoding size.
    plain: usize,
    /// Delta size against each ancestor, nearest first.
    against: Vec<usize>,
}

fn files(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let mut es: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    es.sort();
    for p in es {
        if p.is_dir() {
            files(root, &p, out)
        } else if p.is_file() {
            out.push(p.strip_prefix(root).unwrap().to_path_buf())
        }
    }
}

fn main() {
    let nights: Vec<PathBuf> = std::env::args().skip(1).map(PathBuf::from).collect();
    assert!(nights.len() >= 2, "usage: one-level-bound NIGHT_DIR NIGHT_DIR...");
    let mut nodes: Vec<Node> = vec![];
    let mut by_id: HashMap<Id, usize> = HashMap::new();
    // Per file path: the previous night's chunks (node, features).
    let mut last: HashMap<PathBuf, Vec<(usize, [u32; 8])>> = HashMap::new();
    for (k, night) in nights.iter().enumerate() {
        let mut paths = vec![];
        files(night, night, &mut paths);
        let mut now: HashMap<PathBuf, Vec<(usize, [u32; 8])>> = HashMap::new();
        let first_new = nodes.len();
        for rel in paths {
            let data = std::fs::read(night.join(&rel)).unwrap();
            let chunks: Vec<&[u8]> = cut_points(&data, ChunkParams::DEFAULT, true).into_iter().map(|(s, l)| &data[s..s + l]).collect();
            let feats: Vec<[u32; 8]> = chunks.par_iter().map(|c| delta::features(c)).collect();
            let ids: Vec<Id> = chunks.par_iter().map(|c| Id::of(c)).collect();
            let prev = last.get(&rel);
            // Feature -> previous chunks holding it, for the predecessor search.
            let mut holders: HashMap<u32, Vec<usize>> = HashMap::new();
            for (n, f) in prev.into_iter().flatten() {
                for &v in f.iter().filter(|&&v| v != u32::MAX) {
                    holders.entry(v).or_default().push(*n);
                }
            }
            let mut list = vec![];
            for ((c, f), id) in chunks.iter().zip(&feats).zip(&ids) {
                let n = match by_id.get(id) {
                    Some(&n) => n,
                    None => {
                        let mut votes: HashMap<usize, usize> = HashMap::new();
                        for v in f.iter().filter(|&&v| v != u32::MAX) {
                            for &h in holders.get(v).into_iter().flatten() {
                                *votes.entry(h).or_default() += 1;
                            }
                        }
                        let parent = votes.into_iter().filter(|&(_, v)| v >= MIN_SHARED).max_by_key(|&(h, v)| (v, h)).map(|(h, _)| h);
                        let n = nodes.len();
                        let depth = parent.map_or(0, |p| nodes[p].depth + 1);
                        if let Some(p) = parent {
                            nodes[p].children.push(n);
                        }
                        nodes.push(Node {
                            bytes: c.to_vec(),
                            feat: *f,
                            night: k,
                            parent,
                            depth,
                            children: vec![],
                            plain: 0,
                            against: vec![],
                        });
                        by_id.insert(*id, n);
                        n
                    }
                };
                list.push((n, *f));
            }
            now.insert(rel, list);
        }
        last = now;
        // Encode this night's new chunks: whole, and against every ancestor.
        let ancestors: Vec<Vec<usize>> = (first_new..nodes.len())
            .map(|n| {
                let mut a = vec![];
                let mut p = nodes[n].parent;
                while let Some(x) = p {
                    a.push(x);
                    p = nodes[x].parent;
                }
                a
            })
            .collect();
        let sizes: Vec<(usize, Vec<usize>)> = (first_new..nodes.len())
            .into_par_iter()
            .map(|n| {
                let data = &nodes[n].bytes;
                let plain = compress::compress(data, LEVEL).1.len();
                let against = ancestors[n - first_new]
                    .iter()
                    .map(|&a| delta::compress(data, &nodes[a].bytes, DELTA_LEVEL).map_or(usize::MAX, |f| f.len() + DELTA_HEADER))
                    .collect();
                (plain, against)
            })
            .collect();
        for (i, (plain, against)) in sizes.into_iter().enumerate() {
            nodes[first_new + i].plain = plain;
            nodes[first_new + i].against = against;
        }
        eprintln!("night {}: {} new chunks", k + 1, nodes.len() - first_new);
    }
    report(&nodes, nights.len());
    global(&nodes, nights.len());
}

/// Cost per night (nights 2..N) under each rule.
fn report(nodes: &[Node], nights: usize) {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut chain = vec![0u64; nights];
    let mut root = vec![0u64; nights];
    let mut online = vec![0u64; nights];
    // Online rule: nodes are numbered in backup order, so a node's ancestors are decided first.
    let mut whole = vec![false; nodes.len()];
    for (n, node) in nodes.iter().enumerate() {
        let k = node.night;
        if node.parent.is_none() {
            whole[n] = true;
            for v in [&mut chain, &mut root, &mut online] {
                v[k] += node.plain as u64;
            }
            continue;
        }
        chain[k] += node.plain.min(node.against[0]) as u64;
        root[k] += node.plain.min(*node.against.last().unwrap()) as u64;
        // Nearest ancestor stored whole (the root always is).
        let mut p = node.parent;
        let mut i = 0;
        while let Some(x) = p {
            if whole[x] {
                break;
            }
            p = nodes[x].parent;
            i += 1;
        }
        let d = node.against[i];
        if d * 2 > node.plain {
            whole[n] = true;
            online[k] += node.plain as u64;
        } else {
            online[k] += d as u64;
        }
    }
    // Optimum: f[n][mask] = least cost of n's subtree given which ancestors are whole (bit d:
    // the ancestor at depth d). Children come after their parents in numbering, so a reverse
    // pass sees every child first.
    let mut f: Vec<Vec<u64>> = vec![vec![]; nodes.len()];
    for n in (0..nodes.len()).rev() {
        let node = &nodes[n];
        let t = node.depth;
        let masks = 1usize << t;
        let mut best = vec![0u64; masks];
        for (mask, b) in best.iter_mut().enumerate() {
            if t > 0 && mask & 1 == 0 {
                // The root is always whole: masks without bit 0 never happen.
                *b = u64::MAX / 4;
                continue;
            }
            let kids = |m: usize| -> u64 { node.children.iter().map(|&c| f[c][m]).sum() };
            let as_whole = node.plain as u64 + kids(mask | (1 << t));
            if t == 0 {
                *b = as_whole;
                continue;
            }
            // Ancestor at depth d is against[t - 1 - d].
            let delta = (0..t).filter(|d| mask >> d & 1 == 1).map(|d| node.against[t - 1 - d]).min().unwrap() as u64;
            *b = as_whole.min(delta + kids(mask));
        }
        f[n] = best;
    }
    // Total of the optimum over nights 2..N: roots of night 1 are excluded (their cost is P in
    // every rule), so subtract them from the forest totals.
    let mut optimum: u64 = 0;
    for (n, node) in nodes.iter().enumerate() {
        if node.parent.is_none() {
            optimum += f[n][0];
            if node.night == 0 {
                optimum -= node.plain as u64;
            }
        }
    }
    // No rule stores less than every version against its best ancestor, whole or not.
    let floor: u64 =
        nodes.iter().filter(|n| n.night > 0).map(|n| n.against.iter().copied().min().unwrap_or(usize::MAX).min(n.plain) as u64).sum();
    let sum = |v: &Vec<u64>| v[1..].iter().sum::<u64>();
    println!("| rule | {} | nights 2-{} |", (2..=nights).map(|k| format!("night {k}")).collect::<Vec<_>>().join(" | "), nights);
    println!("|---|{}---|", "---|".repeat(nights - 1));
    for (name, v) in
        [("chain (not one level)", &chain), ("root (one level, never refreshed)", &root), ("online (one level, refresh past P/2)", &online)]
    {
        println!("| {name} | {} | {:.1} |", v[1..].iter().map(|&b| format!("{:.1}", mib(b))).collect::<Vec<_>>().join(" | "), mib(sum(v)));
    }
    println!("| optimum (one level, knowing the future) | {} | {:.1} |", vec!["-"; nights - 1].join(" | "), mib(optimum));
    println!("| floor (each version against its best ancestor, any level) | {} | {:.1} |", vec!["-"; nights - 1].join(" | "), mib(floor));
    // Depth 1 is the online rule again (a check that both loops agree).
    for depth in [1usize, 2, 3, 4] {
        // Chains of at most `depth` deltas: against the nearest ancestor at a lower level.
        let mut level = vec![0usize; nodes.len()];
        let mut v = vec![0u64; nights];
        let mut decodes = 0u64;
        for (n, node) in nodes.iter().enumerate() {
            if node.parent.is_none() {
                v[node.night] += node.plain as u64;
                continue;
            }
            let (mut p, mut i) = (node.parent, 0);
            while let Some(x) = p {
                if level[x] < depth {
                    break;
                }
                p = nodes[x].parent;
                i += 1;
            }
            let d = node.against[i];
            if d * 2 > node.plain {
                v[node.night] += node.plain as u64;
            } else {
                level[n] = level[p.unwrap()] + 1;
                v[node.night] += d as u64;
            }
            if node.night == nights - 1 {
                decodes += level[n] as u64;
            }
        }
        let name = format!("online, chains of at most {depth} delta(s)");
        println!("| {name} | {} | {:.1} |", v[1..].iter().map(|&b| format!("{:.1}", mib(b))).collect::<Vec<_>>().join(" | "), mib(sum(&v)));
        eprintln!("{name}: the last night's new chunks need {decodes} decodes of deltas and bases below them");
    }
    println!("night 1 whole chunks: {:.1} MiB", mib(chain[0]));
}

/// The engine's way of finding bases instead of the links: the (up to) two chunks stored whole
/// so far, anywhere, that share the most features (2 for an earlier night's, 3 for the same
/// night's), the newest winning ties; refresh past P/2. Night 1 all whole, as above.
fn global(nodes: &[Node], nights: usize) {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let mut table: HashMap<u32, Vec<usize>> = HashMap::new();
    let (mut linked, mut all) = (vec![0u64; nights], vec![0u64; nights]);
    let mut found_parent = 0usize;
    let mut with_parent = 0usize;
    for (n, node) in nodes.iter().enumerate() {
        let k = node.night;
        let mut whole = true;
        if k > 0 {
            let mut votes: HashMap<usize, usize> = HashMap::new();
            let mut last = None;
            for &v in node.feat.iter().filter(|&&v| v != u32::MAX) {
                if last == Some(v) {
                    continue;
                }
                last = Some(v);
                for &h in table.get(&v).map_or(&[][..], |l| &l[l.len().saturating_sub(8)..]) {
                    *votes.entry(h).or_default() += 1;
                }
            }
            let mut ranked: Vec<(usize, usize)> = votes.into_iter().filter(|&(h, v)| v >= if nodes[h].night < k { 2 } else { 3 }).collect();
            ranked.sort_unstable_by_key(|&(h, v)| std::cmp::Reverse((v, h)));
            ranked.truncate(2);
            if let Some(p) = node.parent {
                with_parent += 1;
                // Is the nearest whole ancestor among the chosen? (Only meaningful for the
                // lineage rule's notion of whole; counted against this rule's own choices.)
                if ranked.iter().any(|&(h, _)| h == p || nodes[p].parent == Some(h)) {
                    found_parent += 1;
                }
            }
            let cost = if ranked.is_empty() {
                node.plain
            } else {
                let mut prefix = vec![];
                for &(h, _) in ranked.iter().rev() {
                    prefix.extend_from_slice(&nodes[h].bytes);
                }
                let d = delta::compress(&node.bytes, &prefix, DELTA_LEVEL).map_or(usize::MAX, |f| f.len() + 1 + 32 * ranked.len());
                if d * 2 > node.plain {
                    node.plain
                } else {
                    whole = false;
                    d
                }
            };
            all[k] += cost as u64;
            linked[k] += if node.parent.is_some() { cost } else { node.plain } as u64;
        }
        if whole {
            for &v in node.feat.iter().filter(|&&v| v != u32::MAX) {
                let l = table.entry(v).or_default();
                if l.last() != Some(&n) {
                    l.push(n);
                }
            }
        }
    }
    let sum = |v: &Vec<u64>| v[1..].iter().sum::<u64>();
    for (name, v) in [("engine's search, regions without a link stored whole", &linked), ("engine's search for every new chunk", &all)] {
        println!("| {name} | {} | {:.1} |", v[1..].iter().map(|&b| format!("{:.1}", mib(b))).collect::<Vec<_>>().join(" | "), mib(sum(v)));
    }
    eprintln!("linked chunks whose predecessor or its parent was among the chosen bases: {found_parent} of {with_parent}");
}
