//! Containers: the personalized template extracted the way Proxmox's `pct`
//! does (PVE::LXC::Create: GNU tar with PVE::Storage's flags), the files pct
//! writes before the first start (PVE::LXC::Setup::Ubuntu: the interface's
//! systemd-networkd file, resolv.conf, hostname, hosts), then booted with
//! `systemd-nspawn --boot` on a veth into the lab's namespace. Works without
//! systemd as the host's PID 1 (`--register=no --keep-unit`).

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{anyhow, Context, Result};

use super::net::Netns;
use super::sys::run;

/// The network settings Proxmox writes for a container's `net0`.
#[derive(Debug, Clone)]
pub struct CtNet {
    pub hostname: String,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
}

/// Extracts `template` into `rootfs` (which must not exist yet) with pct's
/// tar flags, then writes what pct writes before a start.
pub fn create(template: &Path, rootfs: &Path, net: &CtNet) -> Result<()> {
    extract(template, rootfs)?;
    pct_prepare(rootfs, net)
}

/// Extracts `template` into `rootfs` (which must not exist yet) with pct's
/// tar flags (PVE::LXC::Create::restore_archive).
pub fn extract(template: &Path, rootfs: &Path) -> Result<()> {
    fs::create_dir(rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
    let file =
        fs::File::open(template).with_context(|| format!("opening {}", template.display()))?;
    run(
        Command::new("tar")
            .args([
                "xpf",
                "-",
                "--zstd",
                "--totals",
                "--one-file-system",
                "-p",
                "--sparse",
                "--numeric-owner",
                "--acls",
                "--xattrs",
                "--xattrs-include=user.*",
                "--xattrs-include=security.capability",
                "--warning=no-file-ignored",
                "--warning=no-xattr-write",
                "-C",
            ])
            .arg(rootfs)
            .args(["--skip-old-files", "--anchored", "--exclude", "./dev/*"])
            .stdin(file),
        &format!("extracting {} as pct does", template.display()),
    )?;
    Ok(())
}

/// What pct writes into an Ubuntu container's root before it starts.
pub fn pct_prepare(rootfs: &Path, net: &CtNet) -> Result<()> {
    let w = |rel: &str, text: String| -> Result<()> {
        let p = rootfs.join(rel);
        if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
        if let Some(dir) = p.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    };
    w(
        "etc/systemd/network/eth0.network",
        format!(
            "[Match]\nName = eth0\n\n[Network]\nDescription = Interface eth0 autoconfigured by PVE\n\
             Address = {}/{}\nGateway = {}\nDHCP = no\nIPv6AcceptRA = false\n",
            net.address, net.prefix, net.gateway
        ),
    )?;
    let ns: String = net
        .dns
        .iter()
        .map(|d| format!("nameserver {d}\n"))
        .collect();
    w(
        "etc/resolv.conf",
        format!("# --- BEGIN PVE ---\n{ns}# --- END PVE ---\n"),
    )?;
    w("etc/hostname", format!("{}\n", net.hostname))?;
    w(
        "etc/hosts",
        format!(
            "127.0.0.1 localhost.localdomain localhost\n# --- BEGIN PVE ---\n127.0.1.1 {0}\n# --- END PVE ---\n",
            net.hostname
        ),
    )?;
    for (unit, wants) in [
        ("systemd-networkd.service", "multi-user.target.wants"),
        (
            "systemd-networkd-wait-online.service",
            "network-online.target.wants",
        ),
    ] {
        let target = ["usr/lib/systemd/system", "lib/systemd/system"]
            .iter()
            .map(|d| rootfs.join(d).join(unit))
            .find(|p| p.is_file())
            .ok_or_else(|| anyhow!("the template has no {unit}"))?;
        let link = rootfs.join("etc/systemd/system").join(wants).join(unit);
        if fs::symlink_metadata(&link).is_err() {
            fs::create_dir_all(link.parent().unwrap_or(rootfs))?;
            let abs = Path::new("/").join(target.strip_prefix(rootfs).unwrap_or(&target));
            std::os::unix::fs::symlink(abs, &link)
                .with_context(|| format!("linking {}", link.display()))?;
        }
    }
    Ok(())
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct CtSpec {
    /// nspawn's machine name (unique on the host).
    pub machine: String,
    pub rootfs: PathBuf,
    /// The veth's host side (in the lab namespace); the guest sees `eth0`.
    pub veth: String,
    pub console_log: PathBuf,
    /// Extra `--bind=` arguments (the data volume, as Proxmox's `mp0`).
    pub binds: Vec<String>,
}

/// Starts `systemd-nspawn --boot` inside `netns` (nsenter switches only the
/// network namespace: nspawn needs the host's /sys), detached from our
/// process group so it outlives `imgbuild up`.
pub fn start(netns: &Netns, spec: &CtSpec) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let log = fs::File::create(&spec.console_log)
        .with_context(|| format!("creating {}", spec.console_log.display()))?;
    let _ = fs::remove_dir_all(Path::new("/run/systemd/nspawn/propagate").join(&spec.machine));
    Command::new("nsenter")
        .arg(format!("--net={}", netns.path().display()))
        .arg("--")
        .arg("systemd-nspawn")
        .args(["--boot", "--quiet"])
        // The host may have no systemd/machined: do not register with it.
        .args(["--register=no", "--keep-unit"])
        .arg(format!("--network-veth-extra={}:eth0", spec.veth))
        .args(&spec.binds)
        .arg("-D")
        .arg(&spec.rootfs)
        .args(["-M", &spec.machine])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting systemd-nspawn (package systemd-container)")
}

/// The container's init: nspawn's child.
pub fn leader(nspawn_pid: u32) -> Option<u32> {
    super::sys::children(nspawn_pid).into_iter().next()
}

/// Leftovers nspawn keeps under /run for a machine.
pub fn remove_runtime_dirs(machine: &str) {
    for d in ["propagate", "unix-export"] {
        let _ = fs::remove_dir_all(Path::new("/run/systemd/nspawn").join(d).join(machine));
    }
}

/// The agent's status in a container's root, when it wrote one.
pub fn status(rootfs: &Path) -> Option<serde_json::Value> {
    let p = rootfs.join("var/lib/imgbuild/status.json");
    serde_json::from_slice(&fs::read(p).ok()?).ok()
}
