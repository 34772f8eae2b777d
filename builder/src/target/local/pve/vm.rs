//! A Proxmox VM config on the local runner: QEMU with the config's disks
//! as Proxmox attaches them (`scsiN` on virtio-scsi controllers as scsi-hd,
//! with their `serial`; the boot disk first), `ide2` as an IDE CD-ROM (the
//! `cidata` seed ISO), `net0`'s virtio NIC with its MAC on `tap<vmid>i0` in
//! the namespace's bridge, `cores`/`memory`. KVM or TCG as asked (no
//! automatic fallback: a disk written by a half-booted guest is not
//! recreated here). Not exercised by the test suite (a TCG boot takes 5-9
//! minutes on its machines): the translation is unit-tested only.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result};

use super::{diag, path_of, props, save_running, stop, PveConfig, Running};
use crate::diag::BadInput;
use crate::target::local::net::{self, Netns};
use crate::target::local::sys::Proc;
use crate::target::local::vm::Accel;

/// VM keys read but without effect here, and why.
pub const VM_IGNORED: &[(&str, &str)] = &[
    ("cpu", "QEMU's default CPU model"),
    ("ostype", "Proxmox metadata"),
    ("onboot", "nothing boots this host's guests on its own"),
    ("tags", "Proxmox metadata"),
    ("description", "a comment"),
    ("meta", "Proxmox metadata"),
    ("smbios1", "QEMU's default SMBIOS"),
    ("vmgenid", "no VM generation id"),
    ("serial0", "the serial console goes to console.log"),
    ("vga", "no display"),
    ("digest", "Proxmox metadata"),
    ("parent", "snapshot metadata"),
    ("agent", "no guest agent channel"),
    ("balloon", "no balloon device"),
    ("numa", "no NUMA topology"),
    ("protection", "Proxmox metadata"),
    ("startup", "nothing boots this host's guests on its own"),
];

/// A VM as the local runner boots it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPlan {
    pub name: String,
    pub cores: u32,
    pub memory_mib: u64,
    pub mac: String,
    pub bridge: String,
    /// (config key, volume id, serial) of each disk, the boot disk first.
    pub disks: Vec<(String, String, Option<String>)>,
    /// The CD-ROM's volume id (`ide2`), if one is attached.
    pub cdrom: Option<String>,
    pub ignored: Vec<String>,
}

fn drive_key(k: &str) -> bool {
    ["scsi", "virtio", "sata", "ide"]
        .iter()
        .any(|p| k.strip_prefix(p).is_some_and(|n| n.parse::<u32>().is_ok()))
}

/// Translates a VM config; every problem at once.
pub fn vm_plan(cfg: &PveConfig) -> Result<VmPlan, BadInput> {
    let mut bad = Vec::new();
    let mut ignored = Vec::new();
    let mut disks = Vec::new();
    let mut cdrom = None;
    for (k, (v, _)) in &cfg.entries {
        if drive_key(k) {
            let p = props(v, "file");
            let file = p.get("file").cloned().unwrap_or_default();
            if p.get("media").map(String::as_str) == Some("cdrom") {
                match (k.as_str(), file.as_str()) {
                    (_, "none") => {}
                    ("ide2", f) if !f.starts_with('/') && f != "cdrom" => {
                        cdrom = Some(f.to_string())
                    }
                    _ => bad.push(cfg.bad(k, "only `ide2` with an ISO volume as CD-ROM")),
                }
            } else if k.starts_with("scsi") && !file.starts_with('/') && !file.is_empty() {
                let allowed = [
                    "file", "discard", "size", "serial", "backup", "ssd", "iothread",
                ];
                if let Some(x) = p.keys().find(|x| !allowed.contains(&x.as_str())) {
                    bad.push(cfg.bad(k, format!("`{x}=` is not supported by the local runner")));
                }
                disks.push((k.clone(), file, p.get("serial").cloned()));
            } else {
                bad.push(cfg.bad(
                    k,
                    "the local runner attaches `scsiN` volumes and an `ide2` CD-ROM only",
                ));
            }
            continue;
        }
        if matches!(
            k.as_str(),
            "name" | "cores" | "sockets" | "memory" | "net0" | "boot" | "scsihw"
        ) {
            continue;
        }
        if k.starts_with("unused") && k[6..].parse::<u32>().is_ok() {
            ignored.push(format!("{k}: a detached volume"));
        } else if k == "lock" {
            bad.push(cfg.bad(k, format!("the VM is locked ({v}): not started")));
        } else if let Some((_, why)) = VM_IGNORED.iter().find(|(i, _)| i == k) {
            ignored.push(format!("{k}: {why}"));
        } else {
            bad.push(cfg.bad(
                k,
                "not supported by the local runner (it would be silently dropped)",
            ));
        }
    }
    if let Some(h) = cfg.get("scsihw") {
        if !h.starts_with("virtio-scsi") {
            bad.push(cfg.bad(
                "scsihw",
                "the local runner has virtio-scsi controllers only",
            ));
        }
    }
    // The boot order's first disk boots.
    if let Some(order) = cfg
        .get("boot")
        .and_then(|b| props(b, "legacy").get("order").cloned())
    {
        if let Some(first) = order.split(';').find(|d| drive_key(d) && *d != "ide2") {
            match disks.iter().position(|(k, _, _)| k == first) {
                Some(i) => {
                    let d = disks.remove(i);
                    disks.insert(0, d);
                }
                None => {
                    bad.push(cfg.bad("boot", format!("boots `{first}`, which is no disk here")))
                }
            }
        }
    }
    if disks.is_empty() {
        bad.push(diag(&cfg.file, 1, "scsi0", "missing: the VM has no disk"));
    }
    let num = |k: &str, default: u64| -> u64 {
        match cfg.get(k) {
            None => default,
            Some(v) => v
                .split(',')
                .next()
                .and_then(|n| n.trim_start_matches("current=").parse().ok())
                .unwrap_or(0),
        }
    };
    let cores = num("cores", 1) * num("sockets", 1);
    let memory_mib = num("memory", 512);
    if cores == 0 {
        bad.push(cfg.bad("cores", "not a positive number"));
    }
    if memory_mib < 64 {
        bad.push(cfg.bad("memory", "not a number of MiB (at least 64)"));
    }
    for k in cfg.entries.keys() {
        if k.starts_with("net") && k != "net0" && k[3..].parse::<u32>().is_ok() {
            bad.push(cfg.bad(k, "the local runner gives a VM one NIC (net0)"));
        }
    }
    let mut nic = None;
    match cfg.get("net0") {
        None => bad.push(diag(
            &cfg.file,
            1,
            "net0",
            "missing: the VM would have no network",
        )),
        Some(v) => {
            let p = props(v, "model");
            let mac = p.get("virtio").cloned();
            let bridge = p.get("bridge").cloned();
            if let Some(x) = p
                .keys()
                .find(|x| !["virtio", "bridge", "firewall"].contains(&x.as_str()))
            {
                bad.push(cfg.bad(
                    "net0",
                    format!("`{x}=` is not supported (a virtio NIC: `virtio=MAC`)"),
                ));
            }
            if p.get("firewall").is_some_and(|f| f != "0") {
                bad.push(cfg.bad("net0", "`firewall=1` needs Proxmox's firewall"));
            }
            match (mac, bridge) {
                (Some(m), Some(b)) => nic = Some((m, b)),
                _ => bad.push(cfg.bad("net0", "needs `virtio=MAC` and `bridge=`")),
            }
        }
    }
    if !bad.is_empty() {
        return Err(BadInput(bad));
    }
    let (mac, bridge) = nic.expect("checked");
    Ok(VmPlan {
        name: cfg.get("name").unwrap_or("vm").to_string(),
        cores: cores as u32,
        memory_mib,
        mac,
        bridge,
        disks,
        cdrom,
        ignored,
    })
}

/// The QEMU command line for `plan` (volumes resolved), as Proxmox lays
/// the devices out (one virtio-scsi controller per disk, scsi-hd with its
/// serial, the boot disk bootindex 100, an IDE CD-ROM).
pub fn qemu_args(
    plan: &VmPlan,
    vols: &BTreeMap<String, PathBuf>,
    tap: &str,
    console: &Path,
    accel: Accel,
) -> Result<Vec<String>> {
    let mut a: Vec<String> = vec![
        "-name".into(),
        plan.name.clone(),
        "-accel".into(),
        match accel {
            Accel::Kvm => "kvm".into(),
            _ => "tcg,thread=multi".into(),
        },
        "-m".into(),
        plan.memory_mib.to_string(),
        "-smp".into(),
        plan.cores.to_string(),
        "-display".into(),
        "none".into(),
        "-monitor".into(),
        "none".into(),
        "-serial".into(),
        format!("file:{}", console.display()),
    ];
    for (i, (key, volid, serial)) in plan.disks.iter().enumerate() {
        let path = path_of(vols, volid, key)?;
        a.push("-device".into());
        a.push(format!("virtio-scsi-pci,id=virtioscsi{i}"));
        a.push("-drive".into());
        a.push(format!(
            "file={},if=none,id=drive-{key},format=qcow2,cache=unsafe,discard=unmap",
            path.display()
        ));
        let mut dev = format!(
            "scsi-hd,bus=virtioscsi{i}.0,channel=0,scsi-id=0,lun=0,drive=drive-{key},id={key}"
        );
        if let Some(s) = serial {
            dev.push_str(&format!(",serial={s}"));
        }
        if i == 0 {
            dev.push_str(",bootindex=100");
        }
        a.push("-device".into());
        a.push(dev);
    }
    if let Some(iso) = &plan.cdrom {
        let path = path_of(vols, iso, "ide2")?;
        a.push("-drive".into());
        a.push(format!(
            "file={},if=none,id=drive-ide2,media=cdrom,readonly=on",
            path.display()
        ));
        a.push("-device".into());
        a.push("ide-cd,bus=ide.1,unit=0,drive=drive-ide2,id=ide2".into());
    }
    a.push("-netdev".into());
    a.push(format!("tap,id=net0,ifname={tap},script=no,downscript=no"));
    a.push("-device".into());
    a.push(format!(
        "virtio-net-pci,netdev=net0,mac={},id=net0",
        plan.mac
    ));
    Ok(a)
}

/// Boots the VM in `netns` on `tap<vmid>i0` in net0's bridge; returns once
/// QEMU runs (it keeps running). `dir` gets console.log, qemu.log and what
/// [`stop`] needs.
pub fn start_vm(
    cfg: &PveConfig,
    vmid: u32,
    vols: &BTreeMap<String, PathBuf>,
    netns: &Netns,
    dir: &Path,
    accel: Accel,
) -> Result<VmPlan> {
    use std::os::unix::process::CommandExt;
    let plan = vm_plan(cfg)?;
    stop(dir)?;
    super::check_bridge(netns, &plan.bridge)?;
    crate::target::local::sys::private_dir(dir)?;
    let tap = net::tap_name(vmid);
    let console = dir.join("console.log");
    let args = qemu_args(&plan, vols, &tap, &console, accel)?;
    netns.ensure_tap(&tap, &plan.bridge)?;
    let qlog = dir.join("qemu.log");
    let err = fs::File::create(&qlog).with_context(|| format!("creating {}", qlog.display()))?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", &netns.name, "qemu-system-x86_64"])
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .process_group(0)
        .spawn()
        .context("starting qemu-system-x86_64 (package qemu-system-x86)")?;
    std::thread::sleep(std::time::Duration::from_millis(500));
    if let Some(st) = child.try_wait()? {
        netns.remove_link(&tap);
        let log = fs::read_to_string(&qlog).unwrap_or_default();
        anyhow::bail!(
            "QEMU for VM {vmid} exited at once ({st}): {}",
            crate::target::local::guest::tail(&log, 10)
        );
    }
    save_running(
        dir,
        &Running {
            vmid,
            kind: "qemu".into(),
            pid: Proc::of(child.id()),
            machine: None,
            netns: netns.name.clone(),
            link: tap,
            rootfs: None,
        },
    )?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config `imgbuild deploy` gives the e2e VM (as the stand-in
    /// stores it after the import and the resize).
    const VM: &str = "\
#imgbuild lab e2e-vm guest vmlab
boot: order=scsi0
cores: 2
cpu: x86-64-v2-AES
ide2: local:iso/imgbuild-e2e-vm-vmlab-seed-0123456789ab.iso,media=cdrom
memory: 3072
meta: creation-qemu=9.2.0,ctime=1764480000
name: vmlab
net0: virtio=02:11:22:33:44:55,bridge=vmbr0,firewall=0
onboot: 1
ostype: l26
scsi0: local-lvm:vm-100-disk-0,discard=on,size=8G
scsi1: local-lvm:vm-100-disk-1,backup=1,discard=on,serial=imgbuild-data,size=10G
scsihw: virtio-scsi-single
serial0: socket
smbios1: uuid=5c6f0d52-9e36-4c43-a0a5-6c0d2f2f1d11
sockets: 1
tags: imgbuild;lab-e2e-vm
vga: serial0
vmgenid: 3f1e0e52-0000-4000-8000-000000000000
";

    fn parse(t: &str) -> PveConfig {
        PveConfig::parse(Path::new("100.conf"), t).unwrap()
    }

    #[test]
    fn deploys_vm_config_becomes_qemus_devices() {
        let p = vm_plan(&parse(VM)).unwrap();
        assert_eq!((p.cores, p.memory_mib), (2, 3072));
        assert_eq!(
            (p.mac.as_str(), p.bridge.as_str()),
            ("02:11:22:33:44:55", "vmbr0")
        );
        assert_eq!(
            p.cdrom.as_deref(),
            Some("local:iso/imgbuild-e2e-vm-vmlab-seed-0123456789ab.iso")
        );
        let vols: BTreeMap<String, PathBuf> = [
            ("local-lvm:vm-100-disk-0", "/v/d0.qcow2"),
            ("local-lvm:vm-100-disk-1", "/v/d1.qcow2"),
            (
                "local:iso/imgbuild-e2e-vm-vmlab-seed-0123456789ab.iso",
                "/v/seed.iso",
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), PathBuf::from(v)))
        .collect();
        let a = qemu_args(
            &p,
            &vols,
            "tap100i0",
            Path::new("/r/console.log"),
            Accel::Tcg,
        )
        .unwrap()
        .join(" ");
        for want in [
            "-m 3072 -smp 2",
            "file=/v/d0.qcow2,if=none,id=drive-scsi0",
            "scsi-hd,bus=virtioscsi0.0,channel=0,scsi-id=0,lun=0,drive=drive-scsi0,id=scsi0,bootindex=100",
            "drive=drive-scsi1,id=scsi1,serial=imgbuild-data",
            "file=/v/seed.iso,if=none,id=drive-ide2,media=cdrom",
            "tap,id=net0,ifname=tap100i0",
            "virtio-net-pci,netdev=net0,mac=02:11:22:33:44:55",
        ] {
            assert!(a.contains(want), "{want} in {a}");
        }
    }

    #[test]
    fn a_vm_without_its_disk_nic_or_mapped_iso_is_refused() {
        let e = vm_plan(&parse(
            &VM.replace("net0: virtio=02:11:22:33:44:55,", "net0: "),
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("100.conf:9:1: net0: needs `virtio=MAC`"), "{e}");
        let e = vm_plan(&parse(&VM.replace(
            "scsi0: local-lvm:vm-100-disk-0,",
            "efidisk0: local-lvm:vm-100-disk-0,",
        )))
        .unwrap_err()
        .to_string();
        assert!(e.contains("efidisk0: not supported"), "{e}");
        assert!(
            e.contains("boot: boots `scsi0`, which is no disk here"),
            "{e}"
        );
        let p = vm_plan(&parse(VM)).unwrap();
        let e = qemu_args(&p, &BTreeMap::new(), "t", Path::new("c"), Accel::Tcg)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("scsi0: volume local-lvm:vm-100-disk-0 is not mapped"),
            "{e}"
        );
        // Without the CD-ROM (deploy detaches it once the guest is ready) it still boots.
        let p = vm_plan(&parse(&VM.replace(
            "ide2: local:iso/imgbuild-e2e-vm-vmlab-seed-0123456789ab.iso,media=cdrom\n",
            "",
        )))
        .unwrap();
        assert_eq!(p.cdrom, None);
    }
}
