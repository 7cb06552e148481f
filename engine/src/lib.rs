//! rpger-store's engine: a content-addressed, deduplicating backup store.
//!
//! Layers, lowest first (a layer never imports a higher one):
//! [`chunking`], [`compress`] -> [`store`] (packs, index, manifests, snapshots, locks) ->
//! operations ([`backup`], [`restore`], [`stats`]). [`demo`] generates test data. The engine
//! never prints: progress goes through [`progress::Progress`], results come back as reports.
//!
//! ```no_run
//! use rpger_engine::{backup, store::{Store, InitOptions}, progress::NoProgress};
//! let store = Store::init(std::path::Path::new("/tmp/store"), InitOptions::default())?;
//! let opts = backup::BackupOptions::new(vec![backup::SourceSpec {
//!     name: "redis".into(),
//!     input: backup::SourceInput::Path("/data/redis".into()),
//! }]);
//! let report = backup::backup(&store, opts, &NoProgress)?;
//! println!("snapshot {}", report.snapshot.name);
//! # Ok::<(), rpger_engine::Error>(())
//! ```

pub mod backup;
pub mod chunking;
pub mod compress;
pub mod dbrestore;
pub mod delta;
pub mod demo;
pub mod dumpcheck;
pub mod error;
mod fsutil;
pub mod legacy;
mod pipeline;
pub mod progress;
pub mod restore;
pub mod retention;
pub mod sources;
pub mod stats;
pub mod store;
pub mod testrestore;
pub mod verify;

pub use error::{Error, ErrorKind, Result};
pub use rpger_formats::snapshot::{Entry, EntryKind, Manifest, Snapshot, SourceRef};
pub use rpger_formats::Id;
