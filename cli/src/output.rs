//! Human and JSON rendering helpers.

use serde_json::Value;

/// `1.5 MiB` style sizes.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Prints one JSON document with the output schema version.
pub fn print_json(mut v: Value) {
    if let Value::Object(m) = &mut v {
        m.insert("version".into(), Value::from(1));
    }
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_else(|_| "{}".into()));
}

/// RFC 3339 (UTC, seconds) of Unix nanoseconds.
pub fn time(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats() {
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(1536), "1.5 KiB");
        assert_eq!(super::time(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::time(1_764_115_200_000_000_000), "2025-11-26T00:00:00Z");
    }
}
