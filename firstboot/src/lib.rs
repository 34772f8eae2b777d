//! The engine that applies a guest's seed document, and the agent around it.
//!
//! The document itself and the paths both sides agree on live in the
//! `imgbuild-seed` crate, re-exported here as [`seed`].

pub mod accounts;
pub mod apply;
pub mod checks;
pub mod discover;
pub mod fsutil;
pub mod http;
pub mod madmin;
pub mod plan;
pub mod roles;
pub mod status;
pub mod systemd;
pub mod volumes;

pub use imgbuild_seed as seed;
pub use imgbuild_seed::status::STATUS_PATH;
pub use imgbuild_seed::{iso9660, Seed};
pub use imgbuild_seed::{AGENT_PATH, CIDATA_SEED_PATH, SEED_PATH, UNIT_FILE, UNIT_NAME};

use std::path::Path;

/// A failed step of a run; the message names the step.
#[derive(Debug, thiserror::Error)]
#[error("step `{step}` failed: {source:#}")]
pub struct StepFailed {
    /// The step's name, as in status.json.
    pub step: String,
    /// What went wrong.
    pub source: anyhow::Error,
}

/// Whether `seed` still needs applying under `root`: false only when it is
/// the instance that last succeeded.
pub fn should_run(root: &Path, seed: &Seed) -> anyhow::Result<bool> {
    Ok(status::applied_instance(root)?.as_deref() != Some(seed.instance_id().as_str()))
}
