//! Content-defined chunking (FastCDC v2020) over a buffer that may be only a window of a file.
//!
//! Cut points depend only on the bytes from a chunk's start, so chunking a file window by window
//! (restarting each window at the last cut) gives exactly the cuts of chunking it whole, as long
//! as a window holds more than `max` bytes.

use fastcdc::v2020::FastCDC;

/// Chunker parameters; fixed per store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkParams {
    /// Minimum chunk size.
    pub min: u32,
    /// Target average size.
    pub avg: u32,
    /// Maximum chunk size.
    pub max: u32,
}

impl ChunkParams {
    /// The store default: 16 KiB average, min = avg/4, max = 4 x avg. On the RPGer dumps this sees
    /// ~27% of a night as new against ~76% at 1 MiB (see `docs/ARCHITECTURE.md`).
    pub const DEFAULT: ChunkParams = ChunkParams { min: 4096, avg: 16384, max: 65536 };
}

/// Returns `(start, len)` of the chunks of `data`. When `eof` is false the last, possibly
/// premature chunk is left out: the caller starts the next window at its start.
pub fn cut_points(data: &[u8], p: ChunkParams, eof: bool) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = FastCDC::new(data, p.min, p.avg, p.max).map(|c| (c.offset, c.length)).collect();
    if !eof {
        if let Some(&(s, l)) = out.last() {
            if s + l == data.len() {
                out.pop();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: ChunkParams = ChunkParams { min: 256, avg: 1024, max: 4096 };

    fn data(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn windowed(d: &[u8], window: usize) -> Vec<(usize, usize)> {
        let mut pos = 0;
        let mut out = vec![];
        while pos < d.len() {
            let end = (pos + window).min(d.len());
            let cuts = cut_points(&d[pos..end], P, end == d.len());
            for (s, l) in cuts {
                out.push((pos + s, l));
            }
            pos = out.last().map(|&(s, l)| s + l).unwrap_or(pos);
        }
        out
    }

    proptest! {
        #[test]
        fn chunks_cover_input_within_bounds(seed in any::<u64>(), len in 0usize..40_000) {
            let d = data(seed, len);
            let cuts = cut_points(&d, P, true);
            let mut pos = 0;
            for (i, &(s, l)) in cuts.iter().enumerate() {
                prop_assert_eq!(s, pos);
                prop_assert!(l as u32 <= P.max);
                if i + 1 < cuts.len() { prop_assert!(l as u32 >= P.min); }
                pos += l;
            }
            prop_assert_eq!(pos, d.len());
        }

        #[test]
        fn windows_give_the_same_cuts(seed in any::<u64>(), len in 0usize..60_000, w in 4097usize..20_000) {
            let d = data(seed, len);
            prop_assert_eq!(windowed(&d, w), cut_points(&d, P, true));
        }
    }

    #[test]
    fn an_insert_only_changes_nearby_chunks() {
        let d = data(7, 200_000);
        let mut e = d.clone();
        e.splice(100_000..100_000, [1u8, 2, 3]);
        let ids = |x: &[u8]| -> std::collections::HashSet<Vec<u8>> {
            cut_points(x, P, true).iter().map(|&(s, l)| x[s..s + l].to_vec()).collect()
        };
        let (a, b) = (ids(&d), ids(&e));
        let changed = b.difference(&a).count();
        assert!(changed <= 3, "{changed} chunks changed for a 3-byte insert");
    }

    #[test]
    fn pinned_boundaries() {
        // Changing these breaks dedup against every existing store: bump the format instead.
        let d = data(42, 20_000);
        let cuts: Vec<usize> = cut_points(&d, P, true).iter().map(|c| c.1).collect();
        assert_eq!(cuts.iter().sum::<usize>(), 20_000);
        assert_eq!(cuts, PINNED.to_vec(), "chunk boundaries changed");
    }

    const PINNED: &[usize] =
        &[712, 1239, 469, 1031, 1073, 1036, 1103, 1102, 584, 584, 1170, 1163, 1219, 456, 1298, 1742, 1120, 1062, 1230, 307, 300];
}
