//! Database sources: turning a live database into a consistent set of files to back up.
//! (Files, streams and commands are handled by [`crate::backup`] directly.)

pub mod docker;
pub mod freeze;
pub mod mongo;
pub mod redis;
