//! `imgbuild pve-guest`: run a Proxmox VE container config
//! (`/etc/pve/lxc/<vmid>.conf`, or what `pct config` prints) on this machine
//! with the local runner: `create` extracts its template into its root
//! volume as `pct create` does, `start` boots it in systemd-nspawn on its
//! `net0` bridge inside a network namespace, `stop` stops it. Volumes are
//! directories given as `--volume VOLID=DIR`. The tests' Proxmox stand-in
//! hands every container it creates and starts to this, so the config
//! `imgbuild deploy` sends is the config that boots.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::target::local::net::Netns;
use crate::target::local::pve::{self, PveConfig};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
}

#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Extract the template into the root volume, create the mount points'
    /// directories, write the SSH keys (what `pct create` does).
    Create {
        #[command(flatten)]
        guest: Guest,
        /// The container template (tar.zst) to extract.
        #[arg(long, value_name = "FILE")]
        ostemplate: PathBuf,
        /// Public keys for root's authorized_keys (`pct create --ssh-public-keys`).
        #[arg(long, value_name = "FILE")]
        ssh_public_keys: Option<PathBuf>,
    },
    /// Boot the container in systemd-nspawn on its net0 bridge inside NETNS.
    Start {
        #[command(flatten)]
        guest: Guest,
        /// The network namespace (`ip netns`) holding net0's bridge.
        #[arg(long, value_name = "NAME")]
        netns: String,
        /// Where the console log and the running state go.
        #[arg(long, value_name = "DIR")]
        run_dir: PathBuf,
    },
    /// Stop what `start` started with this run directory (idempotent).
    Stop {
        #[arg(long, value_name = "DIR")]
        run_dir: PathBuf,
    },
}

#[derive(Debug, clap::Args)]
pub struct Guest {
    /// The guest config (`key: value` lines, as Proxmox stores it).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The container's vmid (default: the config file's name, `300.conf`).
    #[arg(long)]
    pub vmid: Option<u32>,
    /// Where a volume of the config is on this host, as `VOLID=DIR` (repeat).
    #[arg(long = "volume", value_name = "VOLID=DIR")]
    pub volumes: Vec<String>,
}

impl Guest {
    fn vmid(&self) -> Result<u32> {
        match self.vmid {
            Some(v) => Ok(v),
            None => stem_vmid(&self.config),
        }
    }
}

fn stem_vmid(config: &Path) -> Result<u32> {
    config
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .with_context(|| {
            format!(
                "{}: name the vmid with --vmid (the file is not named <vmid>.conf)",
                config.display()
            )
        })
}

pub fn run(args: Args) -> Result<()> {
    match args.action {
        Action::Create {
            guest,
            ostemplate,
            ssh_public_keys,
        } => {
            let cfg = PveConfig::load(&guest.config)?;
            let vols = pve::volume_map(&guest.volumes)?;
            let keys = match &ssh_public_keys {
                Some(f) => Some(
                    std::fs::read_to_string(f)
                        .with_context(|| format!("reading {}", f.display()))?,
                ),
                None => None,
            };
            let plan = pve::create_container(&cfg, &vols, &ostemplate, keys.as_deref())?;
            eprintln!(
                "pve-guest: extracted {} into {}",
                ostemplate.display(),
                plan.rootfs
            );
            Ok(())
        }
        Action::Start {
            guest,
            netns,
            run_dir,
        } => {
            let vmid = guest.vmid()?;
            let cfg = PveConfig::load(&guest.config)?;
            let vols = pve::volume_map(&guest.volumes)?;
            let plan = pve::start_container(&cfg, vmid, &vols, &Netns::new(netns), &run_dir)?;
            for i in &plan.ignored {
                eprintln!("pve-guest: {vmid}: ignored {i}");
            }
            eprintln!(
                "pve-guest: {vmid} started: {} at {}/{} on {}",
                plan.net.hostname, plan.net.address, plan.net.prefix, plan.net.bridge
            );
            Ok(())
        }
        Action::Stop { run_dir } => {
            if pve::stop(&run_dir)? {
                eprintln!("pve-guest: stopped ({})", run_dir.display());
            }
            Ok(())
        }
    }
}
