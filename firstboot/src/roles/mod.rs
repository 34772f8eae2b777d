//! Role renderers: each adds its accounts, files, units and checks to a plan.

pub mod common;
pub mod minio;
pub mod spark;

/// First line of every file the agent writes.
pub const HEADER: &str =
    "# Written by imgbuild firstboot from this guest's seed; local changes are overwritten.";
