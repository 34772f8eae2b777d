//! A Proxmox container config on the local runner: `pct create`'s
//! extraction into the root volume, then pct's network files from `net0`,
//! `hostname` and `nameserver` and systemd-nspawn on `veth<vmid>i0` into the
//! namespace's bridge named in `net0`, eth0 given `net0`'s `hwaddr`, the
//! `mpN` volumes bound at their `mp=`; `unprivileged: 1` as pct does it
//! (Proxmox's default id map: the root extracted in a user namespace,
//! nspawn with `--private-users=100000:65536`).

use std::collections::BTreeMap;
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{diag, path_of, props, running_file, save_running, stop, PveConfig, Running};
use crate::diag::{BadInput, Diagnostic};
use crate::target::local::container::{self, CtNet, CtSpec};
use crate::target::local::net::{self, Netns};
use crate::target::local::sys::Proc;
use crate::target::local::userns::{self, IdMap};

/// Container keys read but without effect here, and why.
pub const CT_IGNORED: &[(&str, &str)] = &[
    ("arch", "the host's architecture is used"),
    ("description", "a comment"),
    ("tags", "Proxmox metadata"),
    ("onboot", "nothing boots this host's guests on its own"),
    ("swap", "no swap limit under systemd-nspawn"),
    (
        "features",
        "nesting is always possible under systemd-nspawn",
    ),
    ("cores", "no CPU limit under systemd-nspawn"),
    ("memory", "no memory limit under systemd-nspawn"),
    ("cpulimit", "no CPU limit under systemd-nspawn"),
    ("cpuunits", "no CPU weight under systemd-nspawn"),
    ("digest", "Proxmox metadata"),
    ("protection", "Proxmox metadata"),
    ("startup", "nothing boots this host's guests on its own"),
    ("timezone", "the template's own"),
    ("parent", "snapshot metadata"),
];

/// A container as the local runner boots it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtPlan {
    pub net: CtNetPlan,
    /// The root file system's volume id.
    pub rootfs: String,
    /// (volume id, path in the container) of each `mpN`, in order.
    pub mounts: Vec<(String, String)>,
    /// `unprivileged: 1`: Proxmox's default id map (no `lxc.idmap`); else
    /// privileged (Proxmox's default when the key is absent).
    pub map: Option<IdMap>,
    /// Keys without effect here (key: why).
    pub ignored: Vec<String>,
}

/// `net0` and the DNS keys, as pct applies them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CtNetPlan {
    pub hostname: String,
    pub bridge: String,
    pub hwaddr: Option<String>,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
}

impl CtNetPlan {
    fn ct_net(&self) -> CtNet {
        CtNet {
            hostname: self.hostname.clone(),
            address: self.address,
            prefix: self.prefix,
            gateway: self.gateway,
            dns: self.dns.clone(),
        }
    }
}

/// Translates a container config; every problem at once.
pub fn container_plan(cfg: &PveConfig) -> Result<CtPlan, BadInput> {
    let mut bad = Vec::new();
    let mut ignored = Vec::new();
    let mut mounts = Vec::new();
    for (k, (v, _)) in &cfg.entries {
        let known = matches!(
            k.as_str(),
            "hostname" | "net0" | "nameserver" | "rootfs" | "ostype" | "unprivileged"
        ) || is_mp(k);
        if known {
            continue;
        }
        if k.starts_with("unused") && k[6..].parse::<u32>().is_ok() {
            ignored.push(format!("{k}: a detached volume"));
        } else if k == "lock" {
            bad.push(cfg.bad(k, format!("the container is locked ({v}): not started")));
        } else if let Some((_, why)) = CT_IGNORED.iter().find(|(i, _)| i == k) {
            ignored.push(format!("{k}: {why}"));
        } else {
            bad.push(cfg.bad(
                k,
                "not supported by the local runner (it would be silently dropped)",
            ));
        }
    }
    match cfg.get("ostype") {
        Some("ubuntu") | Some("debian") => {}
        Some(o) => bad.push(cfg.bad(
            "ostype",
            format!("`{o}`: the local runner writes pct's files for ubuntu and debian only"),
        )),
        None => bad.push(diag(&cfg.file, 1, "ostype", "missing")),
    }
    let map = match cfg.get("unprivileged") {
        None | Some("0") => None,
        Some("1") => Some(IdMap::PVE),
        Some(v) => {
            bad.push(cfg.bad("unprivileged", format!("`{v}`: expected 1 or 0")));
            None
        }
    };
    let hostname = cfg.get("hostname").map(str::to_string);
    if hostname.is_none() {
        bad.push(diag(&cfg.file, 1, "hostname", "missing"));
    }
    let rootfs = match cfg.get("rootfs") {
        Some(v) => props(v, "volume").get("volume").cloned(),
        None => None,
    };
    if rootfs.is_none() {
        bad.push(diag(&cfg.file, 1, "rootfs", "missing"));
    }
    let mut mps: Vec<(u32, &str)> = cfg
        .entries
        .keys()
        .filter(|k| is_mp(k))
        .filter_map(|k| k[2..].parse().ok().map(|n| (n, k.as_str())))
        .collect();
    mps.sort();
    for (_, k) in mps {
        let p = props(cfg.get(k).unwrap_or_default(), "volume");
        match (p.get("volume"), p.get("mp")) {
            (Some(vol), Some(mp)) if mp.starts_with('/') && !vol.starts_with('/') => {
                mounts.push((vol.clone(), mp.clone()))
            }
            (Some(vol), Some(_)) if vol.starts_with('/') => {
                bad.push(cfg.bad(k, "bind mounts of host paths are not supported"))
            }
            _ => bad.push(cfg.bad(k, "needs a volume and an absolute `mp=` path")),
        }
    }
    let mut dns = Vec::new();
    if let Some(ns) = cfg.get("nameserver") {
        for a in ns.split_whitespace() {
            match a.parse() {
                Ok(ip) => dns.push(ip),
                Err(_) => bad.push(cfg.bad("nameserver", format!("`{a}` is no IPv4 address"))),
            }
        }
    }
    let net = net0(cfg, &mut bad);
    if !bad.is_empty() {
        return Err(BadInput(bad));
    }
    let (bridge, hwaddr, address, prefix, gateway) = net.expect("no problem implies net0");
    Ok(CtPlan {
        net: CtNetPlan {
            hostname: hostname.expect("checked"),
            bridge,
            hwaddr,
            address,
            prefix,
            gateway,
            dns,
        },
        rootfs: rootfs.expect("checked"),
        mounts,
        map,
        ignored,
    })
}

fn is_mp(k: &str) -> bool {
    k.strip_prefix("mp")
        .is_some_and(|n| !n.is_empty() && n.parse::<u32>().is_ok())
}

type Net0 = (String, Option<String>, Ipv4Addr, u8, Ipv4Addr);

fn net0(cfg: &PveConfig, bad: &mut Vec<Diagnostic>) -> Option<Net0> {
    for k in cfg.entries.keys() {
        if k.starts_with("net") && k != "net0" && k[3..].parse::<u32>().is_ok() {
            bad.push(cfg.bad(k, "the local runner gives a container one NIC (net0)"));
        }
    }
    let Some(v) = cfg.get("net0") else {
        bad.push(diag(
            &cfg.file,
            1,
            "net0",
            "missing: the container would have no network",
        ));
        return None;
    };
    let p = props(v, "name");
    let n = bad.len();
    for k in p.keys() {
        if !matches!(
            k.as_str(),
            "name" | "bridge" | "hwaddr" | "ip" | "gw" | "type" | "firewall"
        ) {
            bad.push(cfg.bad(
                "net0",
                format!("`{k}=` is not supported by the local runner"),
            ));
        }
    }
    if p.get("name").map(String::as_str) != Some("eth0") {
        bad.push(cfg.bad("net0", "needs `name=eth0`"));
    }
    if p.get("type").is_some_and(|t| t != "veth") {
        bad.push(cfg.bad("net0", "only `type=veth`"));
    }
    if p.get("firewall").is_some_and(|f| f != "0") {
        bad.push(cfg.bad(
            "net0",
            "`firewall=1` needs Proxmox's firewall, which the local runner does not have",
        ));
    }
    let bridge = p.get("bridge").cloned();
    if bridge.is_none() {
        bad.push(cfg.bad("net0", "needs `bridge=`"));
    }
    let ip = p.get("ip").and_then(|ip| {
        let (a, l) = ip.split_once('/')?;
        Some((a.parse::<Ipv4Addr>().ok()?, l.parse::<u8>().ok()?))
    });
    let ip = match ip {
        Some((a, l)) if l <= 32 => Some((a, l)),
        _ => {
            bad.push(cfg.bad(
                "net0",
                format!(
                    "needs a static `ip=ADDRESS/PREFIX` (got {:?})",
                    p.get("ip").map(String::as_str).unwrap_or("none")
                ),
            ));
            None
        }
    };
    let gw = match p.get("gw").map(|g| g.parse::<Ipv4Addr>()) {
        Some(Ok(g)) => Some(g),
        _ => {
            bad.push(cfg.bad("net0", "needs `gw=` (an IPv4 address)"));
            None
        }
    };
    if bad.len() != n {
        return None;
    }
    let (address, prefix) = ip?;
    Some((bridge?, p.get("hwaddr").cloned(), address, prefix, gw?))
}

/// `pct create`'s part after the volumes exist: the template extracted into
/// the root volume with pct's tar flags (unprivileged: inside a user
/// namespace with the map), the mount points' directories created, and the
/// SSH keys written to root's `authorized_keys`, all the container root's.
pub fn create_container(
    cfg: &PveConfig,
    vols: &BTreeMap<String, PathBuf>,
    ostemplate: &Path,
    ssh_keys: Option<&str>,
) -> Result<CtPlan> {
    let plan = container_plan(cfg)?;
    let root = path_of(vols, &plan.rootfs, "rootfs")?;
    if root.exists() && fs::read_dir(root)?.next().is_some() {
        bail!(
            "the root volume {} ({}) is not empty: the container exists already",
            plan.rootfs,
            root.display()
        );
    }
    let _ = fs::remove_dir(root);
    container::extract(ostemplate, root, plan.map)?;
    for (vol, _) in &plan.mounts {
        let d = path_of(vols, vol, "mp")?;
        if !d.exists() {
            // A new volume: its top is the container root's, as after mkfs.
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            userns::own(d, plan.map)?;
        }
    }
    if let Some(keys) = ssh_keys.filter(|k| !k.trim().is_empty()) {
        use std::os::unix::fs::PermissionsExt;
        let ssh = root.join("root/.ssh");
        userns::mkdirs(root, Path::new("root/.ssh"), plan.map)?;
        fs::set_permissions(&ssh, fs::Permissions::from_mode(0o700))?;
        let f = ssh.join("authorized_keys");
        fs::write(&f, format!("{}\n", keys.trim_end()))
            .with_context(|| format!("writing {}", f.display()))?;
        fs::set_permissions(&f, fs::Permissions::from_mode(0o600))?;
        userns::own(&f, plan.map)?;
    }
    Ok(plan)
}

/// Starts the container: pct's network files from `net0`/`hostname`/
/// `nameserver`, then systemd-nspawn on `veth<vmid>i0` into `netns`'s
/// bridge named in `net0`, the mount points bound. Returns once the veth is
/// on the bridge; the container keeps running. `dir` gets its console log
/// and what [`stop`] needs.
pub fn start_container(
    cfg: &PveConfig,
    vmid: u32,
    vols: &BTreeMap<String, PathBuf>,
    netns: &Netns,
    dir: &Path,
) -> Result<CtPlan> {
    let plan = container_plan(cfg)?;
    if running_file(dir).exists() {
        stop(dir)?;
    }
    super::check_bridge(netns, &plan.net.bridge)?;
    let root = path_of(vols, &plan.rootfs, "rootfs")?.to_path_buf();
    if !root.join("etc").is_dir() {
        bail!(
            "the root volume {} ({}) holds no system: was the container created?",
            plan.rootfs,
            root.display()
        );
    }
    // `unprivileged` is fixed at creation on Proxmox: a root extracted in
    // the other mode would boot with every file owned by nobody.
    if !userns::owned_for(&root, plan.map)? {
        bail!(
            "the root volume {} ({}) was created {}, but the config says `unprivileged: {}` (it cannot change after `pct create`)",
            plan.rootfs,
            root.display(),
            if plan.map.is_some() { "privileged" } else { "unprivileged" },
            u8::from(plan.map.is_some())
        );
    }
    container::pct_prepare(&root, &plan.net.ct_net(), plan.map)?;
    let mut mounts = Vec::new();
    for (vol, mp) in &plan.mounts {
        let d = path_of(vols, vol, "mp")?;
        userns::mkdirs(&root, Path::new(mp), plan.map)?;
        mounts.push((d.to_path_buf(), mp.clone()));
    }
    crate::target::local::sys::private_dir(dir)?;
    let veth = net::veth_name(vmid);
    netns.remove_link(&veth);
    let machine = machine_name(vmid, dir);
    let spec = CtSpec {
        machine: machine.clone(),
        rootfs: root,
        veth: veth.clone(),
        console_log: dir.join("console.log"),
        mounts,
        map: plan.map,
    };
    let mut child = container::start(netns, &spec)?;
    let run = Running {
        vmid,
        kind: "lxc".into(),
        pid: Proc::of(child.id()),
        machine: Some(machine),
        netns: netns.name.clone(),
        link: veth.clone(),
        rootfs: Some(spec.rootfs.clone()),
    };
    save_running(dir, &run)?;
    if let Err(e) = netns.attach_when_present(&veth, &plan.net.bridge, Duration::from_secs(30)) {
        let _ = child.kill();
        let _ = fs::remove_file(running_file(dir));
        let log = fs::read_to_string(&spec.console_log).unwrap_or_default();
        return Err(e.context(format!(
            "container {vmid} did not come up; its console says:\n{}",
            crate::target::local::guest::tail(&log, 20)
        )));
    }
    if let Some(mac) = &plan.net.hwaddr {
        if let Err(e) = set_guest_mac(child.id(), mac) {
            let _ = stop(dir);
            return Err(e);
        }
    }
    Ok(plan)
}

/// Gives the container's eth0 net0's `hwaddr` (nspawn picks its own MAC),
/// right after the veth exists, before the guest's network comes up.
fn set_guest_mac(nspawn_pid: u32, mac: &str) -> Result<()> {
    let end = std::time::Instant::now() + Duration::from_secs(10);
    let leader = loop {
        if let Some(l) = container::leader(nspawn_pid) {
            break l;
        }
        if std::time::Instant::now() >= end {
            bail!("the container's init did not appear within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    crate::target::local::sys::run(
        std::process::Command::new("nsenter")
            .arg(format!("--target={leader}"))
            .args([
                "--net", "--", "ip", "link", "set", "dev", "eth0", "address", mac,
            ]),
        &format!("setting net0's hwaddr {mac} on the container's eth0"),
    )?;
    Ok(())
}

/// nspawn's machine name: unique per vmid and run directory.
fn machine_name(vmid: u32, dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let h = hex::encode(Sha256::digest(dir.as_os_str().as_encoded_bytes()));
    format!("pve{vmid}-{}", &h[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// net0 and the rest as `imgbuild deploy` creates the e2e lab's
    /// container (what the stand-in stores and `pct config` would print).
    const CT: &str = "\
#imgbuild lab e2e guest lab1
arch: amd64
cores: 2
features: nesting=1
hostname: lab1
memory: 4096
mp0: local-lvm:vm-300-disk-1,mp=/var/lib/minio,backup=1,size=10G
nameserver: 10.77.0.1
net0: name=eth0,bridge=vmbr0,firewall=0,gw=10.77.0.1,hwaddr=02:A1:B2:C3:D4:E5,ip=10.77.0.10/24,type=veth
onboot: 1
ostype: ubuntu
rootfs: local-lvm:vm-300-disk-0,size=8G
swap: 512
tags: imgbuild;lab-e2e
unprivileged: 1

[before-upgrade]
hostname: old
";

    fn parse(t: &str) -> PveConfig {
        PveConfig::parse(Path::new("300.conf"), t).unwrap()
    }

    #[test]
    fn deploys_container_config_translates_key_by_key() {
        let p = container_plan(&parse(CT)).unwrap();
        assert_eq!(
            p.net,
            CtNetPlan {
                hostname: "lab1".into(),
                bridge: "vmbr0".into(),
                hwaddr: Some("02:A1:B2:C3:D4:E5".into()),
                address: "10.77.0.10".parse().unwrap(),
                prefix: 24,
                gateway: "10.77.0.1".parse().unwrap(),
                dns: vec!["10.77.0.1".parse().unwrap()],
            }
        );
        assert_eq!(p.rootfs, "local-lvm:vm-300-disk-0");
        assert_eq!(
            p.mounts,
            vec![(
                "local-lvm:vm-300-disk-1".to_string(),
                "/var/lib/minio".to_string()
            )]
        );
        assert_eq!(p.map, Some(IdMap::PVE), "unprivileged: 1");
        assert!(!p.ignored.iter().any(|i| i.starts_with("unprivileged")));
    }

    #[test]
    fn unprivileged_is_honoured_and_defaults_to_privileged_as_on_proxmox() {
        let map = |t: &str| container_plan(&parse(t)).map(|p| p.map);
        assert_eq!(map(CT).unwrap(), Some(IdMap::PVE));
        assert_eq!(
            map(&CT.replace("unprivileged: 1", "unprivileged: 0")).unwrap(),
            None
        );
        assert_eq!(map(&CT.replace("unprivileged: 1\n", "")).unwrap(), None);
        let e = map(&CT.replace("unprivileged: 1", "unprivileged: yes"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("300.conf:15:1: unprivileged: `yes`: expected 1 or 0"),
            "{e}"
        );
        // A custom map is Proxmox's too, but not the runner's: refused, not dropped.
        let e = map(&CT.replace("swap: 512", "lxc.idmap: u 0 200000 65536"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("300.conf:13:1: lxc.idmap: not supported"), "{e}");
    }

    #[test]
    fn a_wrong_or_missing_network_is_refused_naming_the_line() {
        let cases = [
            ("ip=10.77.0.10/24,", "ip=dhcp,", "static `ip="),
            (",gw=10.77.0.1", "", "needs `gw=`"),
            ("bridge=vmbr0,", "", "needs `bridge=`"),
            ("type=veth", "type=veth,tag=5", "`tag=` is not supported"),
            ("firewall=0", "firewall=1", "firewall"),
        ];
        for (from, to, want) in cases {
            let t = CT.replace(from, to);
            let e = container_plan(&parse(&t)).unwrap_err().to_string();
            assert!(e.contains("300.conf:9:1: net0: "), "{from}->{to}: {e}");
            assert!(e.contains(want), "{from}->{to}: {e}");
        }
        let e = container_plan(&parse(&CT.replace("net0:", "net1:")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("net0: missing"), "{e}");
        assert!(e.contains("net1: the local runner gives"), "{e}");
    }

    #[test]
    fn unknown_keys_locks_and_bad_lines_are_errors() {
        let e = container_plan(&parse(&CT.replace("swap: 512", "lxc.apparmor.profile: x")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("300.conf:13:1: lxc.apparmor.profile: not supported"),
            "{e}"
        );
        let e = PveConfig::parse(Path::new("c"), "hostname lab1\n").unwrap_err();
        assert!(
            e.to_string().contains("c:1:1: : expected `key: value`"),
            "{e}"
        );
        let e = container_plan(&parse(
            &CT.replace("swap: 512", "hookscript: local:snippets/x"),
        ))
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("300.conf:13:1: hookscript: not supported"),
            "{e}"
        );
        // pct would write it into resolv.conf; the runner does not: refused, not dropped.
        let e = container_plan(&parse(&CT.replace("swap: 512", "searchdomain: lan")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("300.conf:13:1: searchdomain: not supported"),
            "{e}"
        );
        let e = container_plan(&parse(&format!("lock: create\n{CT}")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("lock: the container is locked (create)"), "{e}");
        let e = container_plan(&parse(&CT.replace("mp=/var/lib/minio,", "")))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mp0: needs a volume and an absolute `mp=`"),
            "{e}"
        );
    }
}
