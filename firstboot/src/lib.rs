//! The seed document imgbuild hands to every guest, and the engine that applies it.
//!
//! The builder depends on this library for [`seed::Seed`] and for the exact
//! unit file it bakes ([`UNIT_NAME`], [`UNIT_FILE`], [`AGENT_PATH`]).

pub mod accounts;
pub mod apply;
pub mod checks;
pub mod discover;
pub mod fsutil;
pub mod http;
pub mod iso9660;
pub mod plan;
pub mod roles;
pub mod seed;
pub mod sigv4;
pub mod status;
pub mod systemd;

pub use seed::Seed;

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

/// Where the agent binary lives in every guest.
pub const AGENT_PATH: &str = "/usr/local/sbin/firstboot";
/// The agent's systemd unit name.
pub const UNIT_NAME: &str = "imgbuild-firstboot.service";
/// The text of `/etc/systemd/system/imgbuild-firstboot.service`, baked verbatim.
pub const UNIT_FILE: &str = include_str!("../unit/imgbuild-firstboot.service");
/// Where the builder puts a per-guest seed (mode 0600 root:root).
pub const SEED_PATH: &str = "/etc/imgbuild/seed.yaml";
/// Path of the seed inside the NoCloud `cidata` volume.
pub const CIDATA_SEED_PATH: &str = "imgbuild/seed.yaml";
/// The agent's status document.
pub const STATUS_PATH: &str = "/var/lib/imgbuild/status.json";
