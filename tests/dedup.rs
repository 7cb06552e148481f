//! Issue 2, must-show 2: seven nights of database-like dumps cost much less than seven copies; a
//! shifted file dedups; an unchanged source adds no pack data.

use crate::common::*;
use rpger_engine::demo::Dataset;
use std::fs;
use std::path::Path;

fn backup_night(store: &Path, night: &Path) -> serde_json::Value {
    let mut args = vec!["--json".to_string(), "backup".to_string()];
    for s in ["mongodb", "redis", "chroma"] {
        args.push("--source".into());
        args.push(format!("{s}={}", night.join(s).display()));
    }
    ok(store, &args).json()
}

#[test]
fn seven_nights_cost_much_less_than_seven_copies() {
    let t = tempfile::tempdir().unwrap();
    let store = init_store(t.path());
    let mut data = Dataset::new(7, 8_000_000);
    let mut logical_night1 = 0;
    let mut snaps = vec![];
    for night in 1..=7 {
        if night > 1 {
            data.advance();
        }
        let dir = t.path().join(format!("night-{night}"));
        let bytes = data.write(&dir).unwrap();
        if night == 1 {
            logical_night1 = bytes;
        }
        snaps.push((backup_night(&store, &dir)["snapshot"].as_str().unwrap().to_string(), dir));
    }
    let list = ok(&store, &["--json", "snapshots"]).json();
    let news: Vec<u64> = list["snapshots"].as_array().unwrap().iter().map(|s| s["new_stored_bytes"].as_u64().unwrap()).collect();
    let st = ok(&store, &["--json", "stats"]).json();
    let store_bytes = st["store_bytes"].as_u64().unwrap();
    let logical = st["logical_bytes"].as_u64().unwrap();
    let dedup = st["dedup_ratio"].as_f64().unwrap();
    let later: u64 = news[1..].iter().sum::<u64>() / 6;
    eprintln!(
        "DEDUP REPORT: 7 nights, {logical} logical bytes in a {store_bytes}-byte store: dedup {dedup:.2}x, total {:.2}x; \
         night 1 stored {} bytes, nights 2-7 {later} bytes/night on average ({:.0}% of night 1)",
        logical as f64 / store_bytes as f64,
        news[0],
        100.0 * later as f64 / news[0] as f64
    );
    // Seven full compressed copies would be ~7 x night 1; churn of a few % a day must cost far less.
    assert!(store_bytes * 10 < news[0] * 7 * 6, "store {store_bytes} is not much less than 7 x {}", news[0]);
    assert!(dedup > 2.0, "dedup ratio {dedup}");
    assert!(logical > 7 * logical_night1 * 9 / 10);
    // nights 3 and 7 restore exactly
    for i in [2usize, 6] {
        let target = t.path().join(format!("restore-{i}"));
        ok(&store, &["restore", &snaps[i].0, target.to_str().unwrap()]);
        for s in ["mongodb", "redis", "chroma"] {
            assert_same_tree(&snaps[i].1.join(s), &target.join(s));
        }
    }
}

#[test]
fn a_file_shifted_by_a_few_bytes_dedups() {
    let t = tempfile::tempdir().unwrap();
    let store = init_store(t.path());
    let dir = t.path().join("d");
    fs::create_dir(&dir).unwrap();
    let base = noise(5, 8 << 20); // incompressible, so stored bytes = new chunk bytes
    fs::write(dir.join("dump.bin"), &base).unwrap();
    ok(&store, &["backup", "--source", &format!("s={}", dir.display())]);
    let mut shifted = b"abc".to_vec();
    shifted.extend_from_slice(&base[..4 << 20]);
    shifted.extend_from_slice(b"12345");
    shifted.extend_from_slice(&base[4 << 20..]);
    fs::write(dir.join("dump.bin"), &shifted).unwrap();
    let r = ok(&store, &["--json", "backup", "--source", &format!("s={}", dir.display())]).json();
    let new_raw = r["new_raw_bytes"].as_u64().unwrap();
    let new_chunks = r["new_chunks"].as_u64().unwrap();
    eprintln!("shifted 8 MiB file: {new_chunks} new chunks, {new_raw} new bytes");
    assert!(new_chunks <= 4 && new_raw <= 4 * 65536, "{new_chunks} chunks / {new_raw} bytes new after two small inserts");
}

#[test]
fn an_unchanged_source_adds_no_pack_data() {
    let t = tempfile::tempdir().unwrap();
    let store = init_store(t.path());
    let night = t.path().join("night");
    Dataset::new(3, 2_000_000).write(&night).unwrap();
    backup_night(&store, &night);
    let packs = count_files(&store.join("packs"));
    let manifests = count_files(&store.join("manifests"));
    let r = backup_night(&store, &night);
    assert_eq!(r["new_stored_bytes"], 0);
    assert_eq!(r["new_chunks"], 0);
    assert_eq!(count_files(&store.join("packs")), packs, "a pack was written for unchanged data");
    assert_eq!(count_files(&store.join("manifests")), manifests, "unchanged sources must reuse their manifests");
}
