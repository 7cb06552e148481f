//! Retention policy: which snapshots to keep and why. Pure: no I/O, no clock.
//!
//! Semantics as restic/borg users know them: within each group, newest first, `keep_last` keeps
//! the N newest; `keep_daily`/`weekly`/`monthly` keep the newest snapshot of each of the last N
//! days/ISO weeks/months that have one; `keep_within` keeps everything within that duration of
//! the group's newest snapshot. The policies are a union. Snapshots are grouped by their set of
//! source names, so a manual `redis`-only backup never pushes a nightly full one out, and the
//! newest complete snapshot of every group is always kept. Calendar buckets use UTC, like
//! snapshot names. Partial snapshots (a source failed) never count toward any rule: one is kept
//! only while it is newer than every complete snapshot of its group.

use chrono::{DateTime, Datelike, Utc};
use std::collections::BTreeMap;

/// How many snapshots of each kind to keep. All `None`/0 means "keep only the newest".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep the N newest.
    pub keep_last: u32,
    /// Keep the newest of each of the last N days that have a snapshot.
    pub keep_daily: u32,
    /// Same per ISO week.
    pub keep_weekly: u32,
    /// Same per month.
    pub keep_monthly: u32,
    /// Keep every snapshot newer than the group's newest minus this many seconds.
    pub keep_within_secs: Option<u64>,
}

impl Policy {
    /// The default nightly policy: `--keep-daily 7`.
    pub const DEFAULT: Policy = Policy { keep_last: 0, keep_daily: 7, keep_weekly: 0, keep_monthly: 0, keep_within_secs: None };

    /// True when no rule is set.
    pub fn is_empty(&self) -> bool {
        self.keep_last == 0 && self.keep_daily == 0 && self.keep_weekly == 0 && self.keep_monthly == 0 && self.keep_within_secs.is_none()
    }
}

/// What the policy needs to know of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapInfo {
    /// Snapshot name.
    pub name: String,
    /// Start time.
    pub time: DateTime<Utc>,
    /// Its source names, sorted.
    pub sources: Vec<String>,
    /// Committed with some sources missing (`backup --allow-partial`).
    pub partial: bool,
}

/// The decision for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Snapshot name.
    pub name: String,
    /// The group: source names joined by `,`.
    pub group: String,
    /// Kept or forgotten.
    pub keep: bool,
    /// Why it is kept (e.g. `daily 2026-11-20`, `last 1`, `newest of its group`); empty when forgotten.
    pub reasons: Vec<String>,
}

/// The calendar bucket (day, ISO week, month) a snapshot time falls in.
type BucketKey = fn(&DateTime<Utc>) -> String;

/// Applies `policy` to `snaps`; returns one decision per snapshot, newest first within each
/// group, groups in name order.
pub fn plan(snaps: &[SnapInfo], policy: &Policy) -> Vec<Decision> {
    let mut groups: BTreeMap<String, Vec<&SnapInfo>> = BTreeMap::new();
    for s in snaps {
        groups.entry(s.sources.join(",")).or_default().push(s);
    }
    let mut out = vec![];
    for (group, mut members) in groups {
        // Newest first; the name breaks ties (`_1` suffixes sort after the base name).
        members.sort_by(|a, b| (b.time, &b.name).cmp(&(a.time, &a.name)));
        let mut decisions: Vec<Decision> =
            members.iter().map(|s| Decision { name: s.name.clone(), group: group.clone(), keep: false, reasons: vec![] }).collect();
        // The rules only see complete snapshots; `idx` maps back to `decisions`.
        let idx: Vec<usize> = (0..members.len()).filter(|&i| !members[i].partial).collect();
        let newest_complete = idx.first().map(|&i| members[i].time);
        for (i, s) in members.iter().enumerate() {
            if s.partial && newest_complete.is_none_or(|t| s.time > t) {
                decisions[i].reasons.push("partial, newer than every complete snapshot".into());
            }
        }
        if let Some(&first) = idx.first() {
            decisions[first].reasons.push("newest of its group".into());
        }
        for (n, &i) in idx.iter().enumerate().take(policy.keep_last as usize) {
            decisions[i].reasons.push(format!("last {}", n + 1));
        }
        let buckets: [(&str, u32, BucketKey); 3] = [
            ("daily", policy.keep_daily, |t| t.format("%Y-%m-%d").to_string()),
            ("weekly", policy.keep_weekly, |t| {
                let w = t.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }),
            ("monthly", policy.keep_monthly, |t| t.format("%Y-%m").to_string()),
        ];
        for (label, n, key) in buckets {
            let mut last: Option<String> = None;
            let mut kept = 0;
            for &i in &idx {
                if kept >= n {
                    break;
                }
                let k = key(&members[i].time);
                if last.as_ref() != Some(&k) {
                    decisions[i].reasons.push(format!("{label} {k}"));
                    last = Some(k);
                    kept += 1;
                }
            }
        }
        if let (Some(secs), Some(newest)) = (policy.keep_within_secs, newest_complete) {
            let limit = newest - chrono::Duration::seconds(secs.min(i64::MAX as u64 / 2) as i64);
            for &i in &idx {
                if members[i].time >= limit {
                    decisions[i].reasons.push("within".into());
                }
            }
        }
        for d in &mut decisions {
            d.keep = !d.reasons.is_empty();
        }
        out.extend(decisions);
    }
    out
}

/// Parses `30d`, `12h`, `2w`, `1y` (365 days), `90m` into seconds.
///
/// # Errors
/// A message naming the bad value.
pub fn parse_within(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid duration {s:?}: use e.g. 30d, 12h, 2w, 1y");
    let s = s.trim();
    let unit = s.chars().last().ok_or_else(bad)?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    let mult = match unit {
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        'y' => 365 * 86_400,
        _ => return Err(bad()),
    };
    Ok(n.saturating_mul(mult))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn snap(name: &str, t: DateTime<Utc>, sources: &[&str]) -> SnapInfo {
        SnapInfo { name: name.into(), time: t, sources: sources.iter().map(|s| s.to_string()).collect(), partial: false }
    }

    fn nightly(days: u32) -> Vec<SnapInfo> {
        (0..days)
            .map(|d| {
                let t = Utc.with_ymd_and_hms(2026, 11, 1, 2, 0, 0).unwrap() + chrono::Duration::days(d as i64);
                snap(&t.format("%Y-%m-%d_%H-%M-%S").to_string(), t, &["chroma", "mongodb", "redis"])
            })
            .collect()
    }

    fn kept(d: &[Decision]) -> Vec<String> {
        let mut v: Vec<String> = d.iter().filter(|d| d.keep).map(|d| d.name.clone()).collect();
        v.sort();
        v
    }

    #[test]
    fn keep_daily_7_over_20_days_keeps_the_last_7_days() {
        let snaps = nightly(20);
        let d = plan(&snaps, &Policy::DEFAULT);
        let expect: Vec<String> = snaps[13..].iter().map(|s| s.name.clone()).collect();
        assert_eq!(kept(&d), expect);
        assert!(d.iter().filter(|d| !d.keep).all(|d| d.reasons.is_empty()));
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day_and_skips_days_without_snapshots() {
        let mut snaps = nightly(10);
        // a second run on day 9 (newer than the nightly) and no snapshot on days 5-6
        let extra = Utc.with_ymd_and_hms(2026, 11, 9, 14, 0, 0).unwrap();
        snaps.push(snap("2026-11-09_14-00-00", extra, &["chroma", "mongodb", "redis"]));
        snaps.retain(|s| !s.name.starts_with("2026-11-05") && !s.name.starts_with("2026-11-06"));
        let d = plan(&snaps, &Policy { keep_daily: 5, ..Policy::default() });
        // newest first: day 10, day 9 (the 14:00 run, not the nightly), 8, 7, then 4 (5-6 had none)
        let expect = ["2026-11-04_02-00-00", "2026-11-07_02-00-00", "2026-11-08_02-00-00", "2026-11-09_14-00-00", "2026-11-10_02-00-00"];
        assert_eq!(kept(&d), expect.map(String::from).to_vec());
    }

    #[test]
    fn policies_are_a_union() {
        let snaps = nightly(90);
        let p = Policy { keep_last: 2, keep_daily: 3, keep_weekly: 4, keep_monthly: 3, keep_within_secs: None };
        let d = plan(&snaps, &p);
        let k = kept(&d);
        // last 2 and daily 3 overlap: 3 newest days; weekly adds the newest of 4 ISO weeks;
        // monthly the newest of Jan, Dec, Nov.
        assert!(k.contains(&"2027-01-29_02-00-00".to_string()));
        assert!(k.contains(&"2026-12-31_02-00-00".to_string()), "{k:?}");
        assert!(k.contains(&"2026-11-30_02-00-00".to_string()), "{k:?}");
        let weekly: Vec<_> = d.iter().filter(|d| d.reasons.iter().any(|r| r.starts_with("weekly"))).collect();
        assert_eq!(weekly.len(), 4);
        assert!(k.len() <= 2 + 3 + 4 + 3 && k.len() >= 7, "{k:?}");
        let within = plan(&snaps, &Policy { keep_within_secs: Some(parse_within("10d").unwrap()), ..Policy::default() });
        assert_eq!(kept(&within).len(), 11); // the newest and the 10 days before it, inclusive
    }

    #[test]
    fn groups_by_source_set_and_always_keeps_the_newest() {
        let mut snaps = nightly(10);
        for d in 0..5 {
            let t = Utc.with_ymd_and_hms(2026, 11, 10, 12, d, 0).unwrap();
            snaps.push(snap(&t.format("%Y-%m-%d_%H-%M-%S").to_string(), t, &["redis"]));
        }
        let d = plan(&snaps, &Policy { keep_daily: 3, ..Policy::default() });
        let full: Vec<_> = d.iter().filter(|x| x.group == "chroma,mongodb,redis" && x.keep).collect();
        assert_eq!(full.len(), 3, "manual redis backups must not push nightly ones out");
        let redis: Vec<_> = d.iter().filter(|x| x.group == "redis" && x.keep).collect();
        assert_eq!(redis.len(), 1, "one day: only its newest is kept");
        assert_eq!(redis[0].name, "2026-11-10_12-04-00");
        let none = plan(&snaps, &Policy::default());
        assert_eq!(kept(&none).len(), 2, "an empty policy still keeps the newest of each group");
    }

    #[test]
    fn partial_snapshots_never_count() {
        let mut snaps = nightly(10);
        // nights 8 and 10 partial: 10 is newer than every complete one, so it is kept, but the
        // daily slots go to complete nights 9, 7, 6
        snaps[7].partial = true;
        snaps[9].partial = true;
        let d = plan(&snaps, &Policy { keep_daily: 3, ..Policy::default() });
        assert_eq!(kept(&d), vec!["2026-11-06_02-00-00", "2026-11-07_02-00-00", "2026-11-09_02-00-00", "2026-11-10_02-00-00"]);
        let newest = d.iter().find(|x| x.name == "2026-11-09_02-00-00").unwrap();
        assert!(newest.reasons.contains(&"newest of its group".to_string()), "the newest complete one is protected");
    }

    #[test]
    fn within_parsing() {
        assert_eq!(parse_within("30d").unwrap(), 30 * 86400);
        assert_eq!(parse_within("2w").unwrap(), 14 * 86400);
        assert!(parse_within("30").is_err() && parse_within("d").is_err() && parse_within("5x").is_err());
    }
}
