//! `imgbuild pve-guest`: run a Proxmox VE guest config
//! (`/etc/pve/lxc/<vmid>.conf` or `/etc/pve/qemu-server/<vmid>.conf`, or
//! what `pct config`/`qm config` print) on this machine with the local
//! runner: `create` extracts a container's template into its root volume as
//! `pct create` does, `start` boots the guest (systemd-nspawn or QEMU) on its
//! `net0` bridge inside a network namespace, `stop` stops it. Volumes are
//! given as `--volume VOLID=PATH` (a directory for a container volume, a
//! qcow2 or ISO file for a VM's). The tests' Proxmox stand-in hands every
//! container it creates and starts to this, so the config `imgbuild deploy`
//! sends is the config that boots.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::target::local::net::Netns;
use crate::target::local::pve::{self, PveConfig};
use crate::target::local::vm::Accel;

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
    /// Boot the guest (a container in systemd-nspawn, a VM in QEMU) on its
    /// net0 bridge inside NETNS.
    Start {
        #[command(flatten)]
        guest: Guest,
        /// The config's kind (default: `lxc` when it has a `rootfs`, else `qemu`).
        #[arg(long, value_enum)]
        kind: Option<Kind>,
        /// VMs: `kvm` or `tcg` (no automatic fallback here: `auto` is refused).
        #[arg(long, value_enum, default_value_t = Accel::Tcg)]
        accel: Accel,
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

/// A Proxmox guest type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Lxc,
    Qemu,
}

#[derive(Debug, clap::Args)]
pub struct Guest {
    /// The guest config (`key: value` lines, as Proxmox stores it).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The guest's vmid (default: the config file's name, `300.conf`).
    #[arg(long)]
    pub vmid: Option<u32>,
    /// Where a volume of the config is on this host, as `VOLID=PATH` (repeat):
    /// a directory for a container's volume, a qcow2 or ISO file for a VM's.
    #[arg(long = "volume", value_name = "VOLID=PATH")]
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
            kind,
            accel,
            netns,
            run_dir,
        } => {
            let vmid = guest.vmid()?;
            let cfg = PveConfig::load(&guest.config)?;
            let vols = pve::volume_map(&guest.volumes)?;
            let netns = Netns::new(netns);
            let kind = kind.unwrap_or(if cfg.entries.contains_key("rootfs") {
                Kind::Lxc
            } else {
                Kind::Qemu
            });
            let (ignored, what) = match kind {
                Kind::Lxc => {
                    let p = pve::start_container(&cfg, vmid, &vols, &netns, &run_dir)?;
                    let n = &p.net;
                    let what = format!(
                        "container {} at {}/{} on {}",
                        n.hostname, n.address, n.prefix, n.bridge
                    );
                    (p.ignored, what)
                }
                Kind::Qemu => {
                    if accel == Accel::Auto {
                        return Err(crate::diag::BadInput::whole_file(
                            &guest.config,
                            "--accel",
                            "choose kvm or tcg: pve-guest does not fall back on its own",
                        )
                        .into());
                    }
                    let p = pve::start_vm(&cfg, vmid, &vols, &netns, &run_dir, accel)?;
                    let what = format!(
                        "VM {} ({}) with {} disk(s){} on {}",
                        p.name,
                        accel.as_str(),
                        p.disks.len(),
                        if p.cdrom.is_some() {
                            " and a CD-ROM"
                        } else {
                            ""
                        },
                        p.bridge
                    );
                    (p.ignored, what)
                }
            };
            for i in &ignored {
                eprintln!("pve-guest: {vmid}: ignored {i}");
            }
            eprintln!("pve-guest: {vmid} started: {what}");
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
