//! Command-line arguments. Each subcommand's arguments live next to its code in
//! `commands::<name>`; this file only assembles them.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands;

/// imgbuild turns a homelab description into golden images and
/// self-configuring guests on Proxmox VE.
///
/// Typical flow: `imgbuild validate` checks lab/*.yaml and images/*.yaml,
/// `imgbuild lock` pins every artifact's digest, `imgbuild bake` builds the
/// images (no root needed), and the guests configure themselves at first boot.
///
/// Exit codes: 0 success, 1 failure, 2 bad input (the message names the file,
/// line, column and field).
#[derive(Debug, Parser)]
#[command(name = "imgbuild", version, propagate_version = true)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Artifact cache directory (content-addressed).
    /// Default: $XDG_CACHE_HOME/imgbuild, else ~/.cache/imgbuild.
    #[arg(long, env = "IMGBUILD_CACHE_DIR", global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a lab file and image recipes; report every problem with its location.
    Validate(commands::validate::Args),
    /// Show what the lab will build: guests, addresses, ports, images, roles.
    Plan(commands::plan::Args),
    /// Resolve every artifact's digest from upstream checksum files into the lock file.
    Lock(commands::lock::Args),
    /// Download and verify a recipe's artifacts into the cache.
    Fetch(commands::fetch::Args),
    /// Build an image (VM qcow2 or LXC template) from a recipe, without root.
    Bake(commands::bake::Args),
    /// Write one guest's seed: the YAML, a cidata ISO (VMs) or a personalized template (LXC).
    Seed(commands::seed::Args),
    /// Deploy the lab to Proxmox VE over its API: preflight, plan, apply, wait until ready.
    Deploy(commands::deploy::Args),
    /// Remove this lab's guests and uploads from Proxmox VE.
    Destroy(commands::destroy::Args),
    /// Snapshot this lab's guests (--label, --keep N prunes), or install a timer that does.
    Snapshot(commands::snapshot::Args),
    /// List this lab's snapshots with label and age.
    Snapshots(commands::snapshots::Args),
    /// Roll a guest back to one of this lab's snapshots: stop, roll back, start, wait ready.
    Rollback(commands::rollback::Args),
    /// List the lab's vzdump backups, or restore a guest from one: stop, restore, start, wait ready.
    Restore(commands::restore::Args),
    /// Run the lab on this machine (namespace, nspawn, QEMU); wait until every guest is ready.
    Up(commands::up::Args),
    /// Show the lab's guests on this machine: running, ready or stopped, with their web UIs.
    Status(commands::status::Args),
    /// Show a guest's console log and its firstboot status and journal.
    Logs(commands::logs::Args),
    /// SSH into a guest of the lab on this machine as root, with the lab's key.
    Ssh(commands::ssh::Args),
    /// Stop and remove everything `imgbuild up` created for the lab.
    Down(commands::down::Args),
    /// Check the running lab: SSH, services, web UIs, S3, a Spark job, logs, firewall.
    Verify(commands::verify::Args),
    /// Print an Ansible inventory of the lab's guests (groups by role) or Prometheus file_sd targets.
    Inventory(commands::inventory::Args),
    /// Run a Proxmox VE guest config (container or VM) on this machine (create, start, stop).
    PveGuest(commands::pve_guest::Args),
    /// (internal) Forward the lab's web UIs to 127.0.0.1; started by `up`.
    #[command(hide = true)]
    LocalForward(crate::target::local::forward::ServeArgs),
    /// Print shell completions for bash, zsh, fish, elvish or powershell.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

impl Cli {
    /// Logs go to stderr; `RUST_LOG` wins over `-v`.
    pub fn init_logging(&self) {
        use tracing_subscriber::EnvFilter;
        let default = match self.verbose {
            0 => "warn",
            1 => "info",
            2 => "debug",
            _ => "trace",
        };
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false)
            .init();
    }

    /// The cache directory to use.
    pub fn cache_dir(&self) -> PathBuf {
        if let Some(d) = &self.cache_dir {
            return d.clone();
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"));
        base.join("imgbuild")
    }
}
