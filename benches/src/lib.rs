//! Benchmarks for rpger-store live in `benches/`; see `benches/README.md`.
