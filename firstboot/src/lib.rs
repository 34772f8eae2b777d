//! The seed document imgbuild hands to every guest, and the engine that applies it.
//!
//! The builder depends on this library for [`seed::Seed`] and for the exact
//! unit file it bakes ([`UNIT_NAME`], [`UNIT_FILE`], [`AGENT_PATH`]).

pub mod seed;

pub use seed::Seed;

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
