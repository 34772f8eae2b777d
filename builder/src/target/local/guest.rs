//! One guest's life on the local target: created from its baked image and
//! its seed (delivered as Proxmox delivers it: a personalized template for a
//! container, a `cidata` ISO for a VM), started, restarted on its existing
//! disk after a crash, stopped and removed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::container::{self, CtNet, CtSpec};
use super::images::Baked;
use super::net::{self, Netns};
use super::state::{GuestState, LabDir};
use super::sys::{private_dir, Proc};
use super::userns::IdMap;
use super::vm::{self, Accel, VmSpec};
use crate::cidata;
use crate::model::lab::{Guest, GuestKind, Lab};

/// Everything a guest is created from.
pub struct Desired<'a> {
    pub lab: &'a Lab,
    pub guest: &'a Guest,
    pub image: &'a Baked,
    pub seed: &'a imgbuild_seed::Seed,
    pub seed_yaml: String,
    pub instance_id: String,
    pub memory_mib: u64,
    pub mac: String,
    /// Its data volume on this machine (kept when the guest is recreated).
    pub data: Option<super::data::LocalVolume>,
}

impl Desired<'_> {
    /// The hash of every input: a guest whose fingerprint changed is recreated.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let g = self.guest;
        let net = &self.lab.network;
        let text = format!(
            "kind={} vmid={} image={} seed={} cores={} memory={} disk={} address={} mac={} net={}/{}/{:?} data={:?}",
            g.kind.as_str(),
            g.vmid.get(),
            self.image.sha256,
            self.instance_id,
            g.resources.cores.get(),
            self.memory_mib,
            g.resources.disk.gib(),
            g.address,
            self.mac,
            net.cidr,
            net.gateway,
            net.dns,
            self.data.as_ref().map(|v| &v.mount)
        );
        // Containers: how the root was extracted (a root from before
        // unprivileged containers is recreated, not booted shifted).
        let text = match (g.kind, CT_IDMAP) {
            (GuestKind::Lxc, Some(m)) => format!("{text} idmap={}:{}", m.base, m.count),
            _ => text,
        };
        hex::encode(Sha256::digest(text.as_bytes()))
    }
}

/// Containers run unprivileged with Proxmox's id map, as `deploy` creates
/// them (`unprivileged: 1`).
pub const CT_IDMAP: Option<IdMap> = Some(IdMap::PVE);

fn rootfs(dir: &Path) -> PathBuf {
    dir.join("rootfs")
}

fn disk(dir: &Path) -> PathBuf {
    dir.join("disk.qcow2")
}

/// The console log `logs` shows.
pub fn console_log(dir: &Path) -> PathBuf {
    dir.join("console.log")
}

/// Whether a guest's disk or root exists (so a stopped guest can be restarted).
pub fn has_disk(dir: &Path, kind: GuestKind) -> bool {
    match kind {
        GuestKind::Lxc => rootfs(dir).join("etc").is_dir(),
        GuestKind::Vm => disk(dir).is_file() && dir.join("cidata.iso").is_file(),
    }
}

/// Creates the guest's disk from its image and seed (removing any old one),
/// then starts it.
pub fn create_and_start(
    labdir: &LabDir,
    netns: &Netns,
    d: &Desired,
    accel: Accel,
    kvm_bad: Option<&str>,
) -> Result<GuestState> {
    let name = d.guest.name.as_str();
    let dir = labdir.guest_dir(name);
    remove_dir(&dir)?;
    private_dir(&dir)?;
    if let Some(v) = &d.data {
        super::data::ensure(v)?;
    }
    match d.guest.kind {
        GuestKind::Lxc => {
            // Proxmox's way: a personalized copy of the template (seed inside),
            // extracted by pct, then removed.
            let personal = dir.join("template.tar.zst");
            crate::bake::personalize::personalize(
                &d.image.path,
                d.seed_yaml.as_bytes(),
                &personal,
            )?;
            let net = CtNet {
                hostname: name.to_string(),
                address: d.guest.address,
                prefix: d.lab.network.cidr.prefix(),
                gateway: d.lab.network.gateway,
                dns: d.lab.network.dns.clone(),
            };
            container::create(&personal, &rootfs(&dir), &net, CT_IDMAP)?;
            std::fs::remove_file(&personal)
                .with_context(|| format!("removing {}", personal.display()))?;
        }
        GuestKind::Vm => {
            write_cidata(d, &dir.join("cidata.iso"))?;
            vm::create_overlay(&d.image.path, &disk(&dir), d.guest.resources.disk.gib())?;
        }
    }
    start(labdir, netns, d, accel, kvm_bad)
}

/// The NoCloud ISO Proxmox would attach: meta-data (instance id = the seed's
/// hash), user-data (hostname, keys), network-config matched by MAC, and the
/// seed itself.
fn write_cidata(d: &Desired, out: &Path) -> Result<()> {
    let files = cidata::for_guest(d.lab, d.guest, d.seed, Some(&d.mac));
    cidata::write_iso(&files, out)
}

/// Starts the guest on its existing disk or root.
pub fn start(
    labdir: &LabDir,
    netns: &Netns,
    d: &Desired,
    accel: Accel,
    kvm_bad: Option<&str>,
) -> Result<GuestState> {
    let g = d.guest;
    let name = g.name.as_str();
    let dir = labdir.guest_dir(name);
    let vmid = g.vmid.get();
    let bridge = &d.lab.network.bridge;
    let mut st = GuestState {
        kind: g.kind.as_str().into(),
        vmid,
        address: g.address,
        fingerprint: d.fingerprint(),
        instance_id: d.instance_id.clone(),
        proc: None,
        machine: None,
        accel: None,
        accel_note: None,
        memory_mib: d.memory_mib,
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    // Like Proxmox with a missing `mp0`/`scsi1` volume: no start, rather
    // than an object store writing into its root.
    if let Some(v) = d.data.as_ref().filter(|v| !v.host.exists()) {
        anyhow::bail!(
                "{name}'s data volume {} is missing; it is created only with the guest (`imgbuild down --purge-data`, then `up`, starts the lab afresh)",
                v.host.display()
            );
    }
    match g.kind {
        GuestKind::Lxc => {
            let veth = net::veth_name(vmid);
            netns.remove_link(&veth);
            let machine = labdir.machine(vmid);
            let spec = CtSpec {
                machine: machine.clone(),
                rootfs: rootfs(&dir),
                veth: veth.clone(),
                console_log: console_log(&dir),
                mounts: d
                    .data
                    .iter()
                    .map(|v| (v.host.clone(), v.mount.clone()))
                    .collect(),
                map: CT_IDMAP,
            };
            let mut child = container::start(netns, &spec)?;
            let pid = child.id();
            st.proc = Proc::of(pid);
            st.machine = Some(machine);
            if let Err(e) = netns.attach_when_present(&veth, bridge, Duration::from_secs(30)) {
                let _ = child.kill();
                let log = std::fs::read_to_string(console_log(&dir)).unwrap_or_default();
                return Err(e.context(format!(
                    "container {name} did not come up; its console says:\n{}",
                    tail(&log, 20)
                )));
            }
        }
        GuestKind::Vm => {
            let tap = net::tap_name(vmid);
            netns.ensure_tap(&tap, bridge)?;
            let spec = VmSpec {
                name: name.to_string(),
                tap,
                mac: d.mac.clone(),
                disk: disk(&dir),
                cidata: dir.join("cidata.iso"),
                console_log: console_log(&dir),
                qemu_log: dir.join("qemu.log"),
                memory_mib: d.memory_mib,
                cores: g.resources.cores.get(),
                data_disk: d.data.as_ref().map(|v| v.host.clone()),
            };
            let (child, used, note) = vm::boot(
                netns,
                &spec,
                accel,
                kvm_bad.is_some(),
                &d.image.path,
                g.resources.disk.gib(),
            )?;
            st.proc = Proc::of(child.id());
            st.accel = Some(used.as_str().into());
            st.accel_note = note.or_else(|| kvm_bad.map(str::to_string));
        }
    }
    Ok(st)
}

/// Kills a guest's processes (a container's init first: killing it ends its
/// whole PID namespace; nspawn then exits).
pub fn stop(st: &GuestState) {
    if let Some(p) = st.proc {
        if st.kind == GuestKind::Lxc.as_str() && p.alive() {
            if let Some(leader) = container::leader(p.pid).and_then(Proc::of) {
                leader.kill();
                let _ = leader.wait_gone(Duration::from_secs(10));
            }
        }
        p.kill();
        let _ = p.wait_gone(Duration::from_secs(10));
    }
    if let Some(m) = &st.machine {
        container::remove_runtime_dirs(m);
    }
}

/// Removes a guest directory (its disk or root, logs, seed files).
pub fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
