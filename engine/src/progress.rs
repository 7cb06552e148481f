//! How long operations report progress without printing: the CLI draws it.

/// Receives progress events. Implementations must be cheap: `advance` is called per batch.
pub trait Progress: Sync {
    /// A phase starts; `total` bytes when known.
    fn start(&self, _phase: &str, _total: Option<u64>) {}
    /// `bytes` more were processed.
    fn advance(&self, _bytes: u64) {}
    /// The phase ended.
    fn finish(&self) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}
