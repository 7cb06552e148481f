//! Pure readers of database dump formats.

pub mod bson;
