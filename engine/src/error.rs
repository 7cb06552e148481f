//! The engine's one public error: a kind that callers (verify, exit codes) can match on, and a
//! context that names the file, snapshot or pack involved.

use std::fmt;
use std::path::Path;

/// What sort of failure this is; decides exit codes and how verify reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// Stored data is damaged (bad checksum, undecodable file, hash mismatch).
    Corrupt,
    /// Something that should exist does not (pack, snapshot, source path).
    Missing,
    /// An operating-system I/O error.
    Io,
    /// The request itself is wrong (bad name, non-empty target, bad option).
    InvalidInput,
    /// The directory is not an rpger-store store.
    NotAStore,
    /// The store already exists.
    AlreadyExists,
    /// Another process holds a conflicting lock.
    Locked,
    /// The operation was interrupted.
    Interrupted,
    /// This build cannot do what was asked (the message says what to do instead).
    Unsupported,
}

/// An engine error: kind + human context + underlying cause.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    context: String,
    cause: Option<String>,
}

/// Result alias used across the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error with no cause.
    pub fn new(kind: ErrorKind, context: impl Into<String>) -> Self {
        Error { kind, context: context.into(), cause: None }
    }

    /// A new error with a cause rendered into the message.
    pub fn with_cause(kind: ErrorKind, context: impl Into<String>, cause: impl fmt::Display) -> Self {
        Error { kind, context: context.into(), cause: Some(cause.to_string()) }
    }

    /// An I/O error on `path`; `ENOENT` becomes [`ErrorKind::Missing`].
    pub fn io(what: &str, path: &Path, e: std::io::Error) -> Self {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::Missing,
            std::io::ErrorKind::Interrupted => ErrorKind::Interrupted,
            _ => ErrorKind::Io,
        };
        Error::with_cause(kind, format!("{what} {}", path.display()), e)
    }

    /// A decode failure of a stored file.
    pub fn corrupt(what: impl Into<String>, e: impl fmt::Display) -> Self {
        Error::with_cause(ErrorKind::Corrupt, what, e)
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The same error with another kind.
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// Prefixes more context (outermost first).
    pub fn context(mut self, outer: impl fmt::Display) -> Self {
        self.context = format!("{outer}: {}", self.context);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Some(c) => write!(f, "{}: {c}", self.context),
            None => f.write_str(&self.context),
        }
    }
}

impl std::error::Error for Error {}

/// Adds path context to `std::io::Result`.
pub(crate) trait IoContext<T> {
    fn at(self, what: &str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, what: &str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(what, path, e))
    }
}

impl<T> IoContext<T> for rustix::io::Result<T> {
    fn at(self, what: &str, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(what, path, e.into()))
    }
}
