//! Containers: the personalized template extracted the way Proxmox's `pct`
//! does (PVE::LXC::Create: GNU tar with PVE::Storage's flags), the files pct
//! writes before the first start (PVE::LXC::Setup::Ubuntu: the interface's
//! systemd-networkd file, resolv.conf, hostname, hosts), then booted with
//! `systemd-nspawn --boot` on a veth into the lab's namespace. Works without
//! systemd as the host's PID 1 (`--register=no --keep-unit`, a cgroup of its
//! own: [`super::cgroup`]).
//!
//! Unprivileged (an [`IdMap`], as `unprivileged: 1` on Proxmox): the template
//! is extracted inside a user namespace with the map, as pct does, so the
//! root is owned by the shifted ids; what the runner writes into it is
//! given to the container's root; the data volumes are shifted to the map
//! when they hold the other mode's ids ([`super::userns::conform`]); nspawn
//! runs it with `--private-users=BASE:COUNT` and leaves ownership alone.

use std::ffi::OsString;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{anyhow, Context, Result};

use super::net::Netns;
use super::sys::run;
use super::userns::{self, IdMap};

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
pub fn create(template: &Path, rootfs: &Path, net: &CtNet, map: Option<IdMap>) -> Result<()> {
    extract(template, rootfs, map)?;
    pct_prepare(rootfs, net, map)
}

/// Extracts `template` into `rootfs` (which must not exist yet) with pct's
/// tar flags (PVE::LXC::Create::restore_archive): unprivileged, as the
/// container's root inside a user namespace with `map` (pct's
/// `lxc-usernsexec`), into a root directory owned by it.
pub fn extract(template: &Path, rootfs: &Path, map: Option<IdMap>) -> Result<()> {
    fs::create_dir(rootfs).with_context(|| format!("creating {}", rootfs.display()))?;
    userns::own(rootfs, map)?;
    let file =
        fs::File::open(template).with_context(|| format!("opening {}", template.display()))?;
    let ns = map.map(userns::UserNs::new).transpose()?;
    let mut tar = match &ns {
        Some(ns) => ns.command("tar"),
        None => Command::new("tar"),
    };
    // From inside the root (the shifted ids may not reach it by its path).
    run(
        tar.current_dir(rootfs)
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
                ".",
            ])
            .args(["--skip-old-files", "--anchored", "--exclude", "./dev/*"])
            .stdin(file),
        &format!(
            "extracting {} as pct does{}",
            template.display(),
            if map.is_some() { " (unprivileged)" } else { "" }
        ),
    )?;
    Ok(())
}

/// What pct writes into an Ubuntu container's root before it starts, owned
/// by the container's root.
pub fn pct_prepare(rootfs: &Path, net: &CtNet, map: Option<IdMap>) -> Result<()> {
    let w = |rel: &str, text: String| -> Result<()> {
        let p = rootfs.join(rel);
        if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
        }
        if let Some(dir) = Path::new(rel).parent() {
            userns::mkdirs(rootfs, dir, map)?;
        }
        fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        userns::own(&p, map)
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
        let rel = Path::new("etc/systemd/system").join(wants);
        let link = rootfs.join(&rel).join(unit);
        if fs::symlink_metadata(&link).is_err() {
            userns::mkdirs(rootfs, &rel, map)?;
            let abs = Path::new("/").join(target.strip_prefix(rootfs).unwrap_or(&target));
            std::os::unix::fs::symlink(abs, &link)
                .with_context(|| format!("linking {}", link.display()))?;
            userns::own(&link, map)?;
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
    /// (host directory, path in the container) of each data volume, as
    /// Proxmox's `mpN`.
    pub mounts: Vec<(PathBuf, String)>,
    /// The container's id map; None: privileged.
    pub map: Option<IdMap>,
}

/// Starts `systemd-nspawn --boot` inside `netns` (nsenter switches only the
/// network namespace: nspawn needs the host's /sys), in a cgroup or scope
/// of its own ([`super::cgroup`]), detached from our process group so it
/// outlives `imgbuild up`. The volumes are first made
/// the container's ([`userns::conform`]: data a run in the other mode
/// left is shifted in place, never lost).
pub fn start(netns: &Netns, spec: &CtSpec) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let mut binds = Vec::new();
    for (host, mount) in &spec.mounts {
        let n = userns::conform(host, spec.map)
            .with_context(|| format!("giving the volume {} to the container", host.display()))?;
        if n.entries > 0 {
            tracing::info!(
                "{}: {} entries shifted to the container's ids ({})",
                host.display(),
                n.entries,
                match spec.map {
                    Some(m) => format!("unprivileged, base {}", m.base),
                    None => "privileged".into(),
                }
            );
        }
        binds.push(nspawn_bind(host, mount));
    }
    let log = fs::File::create(&spec.console_log)
        .with_context(|| format!("creating {}", spec.console_log.display()))?;
    let _ = fs::remove_dir_all(Path::new("/run/systemd/nspawn/propagate").join(&spec.machine));
    let place = super::cgroup::prepare(&spec.machine)?;
    let argv = command_line(&place, &netns.path(), spec, &binds);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting systemd-nspawn (package systemd-container)")
}

/// The command starting `spec`'s nspawn in `place` ([`super::cgroup`]):
/// its launcher, then nsenter, which switches only the network namespace
/// (nspawn needs the host's /sys) and execs nspawn, so the pid spawned is
/// nspawn's.
fn command_line(
    place: &super::cgroup::Placement,
    netns: &Path,
    spec: &CtSpec,
    binds: &[String],
) -> Vec<OsString> {
    let mut v = super::cgroup::launcher(place);
    v.extend([
        "nsenter".into(),
        format!("--net={}", netns.display()).into(),
        "--".into(),
        "systemd-nspawn".into(),
        "--boot".into(),
        "--quiet".into(),
        // The host may have no systemd/machined: do not register with it.
        "--register=no".into(),
        "--keep-unit".into(),
        format!("--network-veth-extra={}:eth0", spec.veth).into(),
    ]);
    v.extend(binds.iter().map(OsString::from));
    if let Some(m) = spec.map {
        // The tree is shifted already (extracted in the namespace).
        v.extend([
            m.nspawn_arg().into(),
            "--private-users-ownership=off".into(),
        ]);
    }
    v.extend([
        "-D".into(),
        spec.rootfs.clone().into(),
        "-M".into(),
        spec.machine.clone().into(),
    ]);
    v
}

/// systemd-nspawn's `--bind=` argument (`:` and `\` in paths escaped as
/// nspawn reads them).
pub fn nspawn_bind(host: &Path, mount: &str) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace(':', "\\:");
    format!("--bind={}:{}", esc(&host.to_string_lossy()), esc(mount))
}

/// The container's init: nspawn's child.
pub fn leader(nspawn_pid: u32) -> Option<u32> {
    super::sys::children(nspawn_pid).into_iter().next()
}

/// Leftovers nspawn keeps under /run for a machine, and its cgroups.
pub fn remove_runtime_dirs(machine: &str) {
    for d in ["propagate", "unix-export"] {
        let _ = fs::remove_dir_all(Path::new("/run/systemd/nspawn").join(d).join(machine));
    }
    super::cgroup::remove(machine);
}

/// The agent's status in a container's root, when it wrote one.
pub fn status(rootfs: &Path) -> Option<serde_json::Value> {
    let p = rootfs.join("var/lib/imgbuild/status.json");
    serde_json::from_slice(&fs::read(p).ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_argument_escapes_colons() {
        assert_eq!(
            nspawn_bind(Path::new("/srv/a:b/volume"), "/var/lib/minio"),
            "--bind=/srv/a\\:b/volume:/var/lib/minio"
        );
    }

    #[test]
    fn nspawn_starts_in_its_scope_or_its_groups() {
        use super::super::cgroup::Placement;
        let spec = CtSpec {
            machine: "ib200-0a1b2c3d".into(),
            rootfs: "/var/lib/imgbuild/local/x/guests/minio/rootfs".into(),
            veth: "vb200".into(),
            console_log: "/dev/null".into(),
            mounts: Vec::new(),
            map: Some(IdMap::PVE),
        };
        let binds = ["--bind=/srv/v:/var/lib/minio".to_string()];
        let line = |p: &Placement| {
            command_line(p, Path::new("/run/netns/imgbuild-x"), &spec, &binds)
                .into_iter()
                .map(|a| a.into_string().unwrap())
                .collect::<Vec<_>>()
        };
        let nspawn = [
            "nsenter",
            "--net=/run/netns/imgbuild-x",
            "--",
            "systemd-nspawn",
            "--boot",
            "--quiet",
            "--register=no",
            "--keep-unit",
            "--network-veth-extra=vb200:eth0",
            "--bind=/srv/v:/var/lib/minio",
            "--private-users=100000:65536",
            "--private-users-ownership=off",
            "-D",
            "/var/lib/imgbuild/local/x/guests/minio/rootfs",
            "-M",
            "ib200-0a1b2c3d",
        ];
        // Under a manager: cgroup.rs' launcher (its exact words are tested
        // there), then nspawn.
        let placement = Placement::Scope("imgbuild-ib200-0a1b2c3d.scope".into());
        let launcher: Vec<String> = super::super::cgroup::launcher(&placement)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        assert_eq!(launcher[0], "systemd-run");
        let scope = line(&placement);
        assert_eq!(scope[..launcher.len()], launcher[..]);
        assert_eq!(scope[launcher.len()..], nspawn);
        // Where nothing manages cgroups: the command imgbuild ran before.
        let own = line(&Placement::Own(vec![
            "/sys/fs/cgroup/systemd/imgbuild/ib200-0a1b2c3d/cgroup.procs".into(),
        ]));
        assert_eq!(
            own[..5],
            [
                "sh",
                "-c",
                r#"while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@""#,
                "sh",
                "/sys/fs/cgroup/systemd/imgbuild/ib200-0a1b2c3d/cgroup.procs",
            ]
        );
        assert_eq!(own[5], "--");
        assert_eq!(own[6..], nspawn);
        assert_eq!(line(&Placement::Inherit), nspawn);
    }
}
