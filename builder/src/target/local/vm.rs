//! VMs: a copy-on-write qcow2 overlay over the baked image, grown to the
//! lab's disk size (cloud-init grows the root partition at first boot, as on
//! Proxmox after `import-from` and a resize), the guest's `cidata` ISO as a
//! CD-ROM, a virtio NIC with the guest's MAC on a TAP in the lab namespace.
//!
//! KVM: `/dev/kvm` can exist and open fine while a KVM guest still hangs in
//! its firmware (seen on this project's machines: not one serial byte). So a
//! KVM boot only counts once the serial console shows output within
//! [`KVM_FIRST_OUTPUT`]; otherwise QEMU is killed, the overlay recreated and
//! the guest booted under TCG, and the verdict is remembered for the host.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::net::Netns;
use super::sys::run;

/// How long a KVM boot may stay silent on the serial console.
pub const KVM_FIRST_OUTPUT: Duration = Duration::from_secs(20);

/// The accelerator to use or used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// KVM when it really boots, else TCG.
    Auto,
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// A fresh overlay at `overlay` over `base`, of virtual size `size_gib`.
pub fn create_overlay(base: &Path, overlay: &Path, size_gib: u64) -> Result<()> {
    let _ = fs::remove_file(overlay);
    let base = fs::canonicalize(base).with_context(|| format!("{}", base.display()))?;
    run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(&base)
            .arg(overlay)
            .arg(format!("{size_gib}G")),
        "creating the VM's disk overlay (package qemu-utils)",
    )?;
    Ok(())
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub name: String,
    pub tap: String,
    pub mac: String,
    pub disk: PathBuf,
    pub cidata: PathBuf,
    pub console_log: PathBuf,
    pub qemu_log: PathBuf,
    pub memory_mib: u64,
    pub cores: u32,
    /// The data volume's qcow2, attached as Proxmox attaches `scsi1`.
    pub data_disk: Option<PathBuf>,
}

/// QEMU arguments attaching the data disk the way Proxmox attaches a
/// guest's `scsi1` with `serial=imgbuild-data` (its own virtio-scsi
/// controller, `scsi-hd`): the guest sees
/// `/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_imgbuild-data`.
pub fn data_disk_args(disk: &Path) -> Vec<String> {
    vec![
        "-device".into(),
        "virtio-scsi-pci,id=virtioscsi1".into(),
        "-drive".into(),
        format!(
            "file={},if=none,id=drive-scsi1,format=qcow2,cache=unsafe,discard=unmap",
            disk.display()
        ),
        "-device".into(),
        "scsi-hd,bus=virtioscsi1.0,channel=0,scsi-id=0,lun=0,drive=drive-scsi1,id=scsi1,serial=imgbuild-data".into(),
    ]
}

/// Starts QEMU inside `netns` with `accel` (Kvm or Tcg), detached from our
/// process group so it outlives `imgbuild up`.
pub fn spawn(netns: &Netns, spec: &VmSpec, accel: Accel) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let _ = fs::remove_file(&spec.console_log);
    let err = fs::File::create(&spec.qemu_log)
        .with_context(|| format!("creating {}", spec.qemu_log.display()))?;
    Command::new("ip")
        .args(["netns", "exec", &netns.name, "qemu-system-x86_64"])
        .args(["-name", &spec.name])
        .args([
            "-accel",
            match accel {
                Accel::Kvm => "kvm",
                _ => "tcg,thread=multi",
            },
        ])
        .args(["-m", &spec.memory_mib.to_string()])
        .args(["-smp", &spec.cores.to_string()])
        .args(["-display", "none", "-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", spec.console_log.display()))
        // The system disk boots first (bootindex): SeaBIOS would otherwise
        // try a data disk first and, blank as it starts, stop there.
        .arg("-drive")
        .arg(format!(
            "file={},if=none,id=drive-virtio0,format=qcow2,cache=unsafe",
            spec.disk.display()
        ))
        .args([
            "-device",
            "virtio-blk-pci,drive=drive-virtio0,bootindex=100",
        ])
        .arg("-drive")
        .arg(format!(
            "file={},media=cdrom,if=ide,readonly=on",
            spec.cidata.display()
        ))
        .args(spec.data_disk.iter().flat_map(|d| data_disk_args(d)))
        .arg("-netdev")
        .arg(format!(
            "tap,id=n0,ifname={},script=no,downscript=no",
            spec.tap
        ))
        .arg("-device")
        .arg(format!("virtio-net-pci,netdev=n0,mac={}", spec.mac))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .process_group(0)
        .spawn()
        .context("starting qemu-system-x86_64 (package qemu-system-x86)")
}

/// Whether /dev/kvm opens for reading and writing.
pub fn kvm_device_usable() -> bool {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Boots `spec`: with `Auto`, KVM first unless `kvm_known_bad` or /dev/kvm
/// is unusable, falling back to TCG (overlay recreated from `base`) when KVM
/// stays silent. Returns QEMU, the accelerator used, and why KVM was not.
pub fn boot(
    netns: &Netns,
    spec: &VmSpec,
    accel: Accel,
    kvm_known_bad: bool,
    base: &Path,
    disk_gib: u64,
) -> Result<(Child, Accel, Option<String>)> {
    let try_kvm = match accel {
        Accel::Tcg => return Ok((spawn(netns, spec, Accel::Tcg)?, Accel::Tcg, None)),
        Accel::Kvm => {
            if !kvm_device_usable() {
                bail!("--accel kvm: /dev/kvm is missing or not writable (kernel module kvm_intel/kvm_amd)");
            }
            true
        }
        Accel::Auto => !kvm_known_bad && kvm_device_usable(),
    };
    if !try_kvm {
        let why = if kvm_known_bad {
            "KVM hung on this host before".to_string()
        } else {
            "/dev/kvm is missing or not writable".to_string()
        };
        return Ok((spawn(netns, spec, Accel::Tcg)?, Accel::Tcg, Some(why)));
    }
    let mut q = spawn(netns, spec, Accel::Kvm)?;
    let end = Instant::now() + KVM_FIRST_OUTPUT;
    let why = loop {
        if fs::metadata(&spec.console_log).is_ok_and(|m| m.len() > 0) {
            return Ok((q, Accel::Kvm, None));
        }
        if let Some(st) = q.try_wait()? {
            let err = fs::read_to_string(&spec.qemu_log).unwrap_or_default();
            break format!(
                "KVM QEMU exited at once ({st}): {}",
                err.lines().last().unwrap_or("")
            );
        }
        if Instant::now() >= end {
            break format!(
                "KVM boot hung: no serial output within {}s",
                KVM_FIRST_OUTPUT.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let _ = q.kill();
    let _ = q.wait();
    if accel == Accel::Kvm {
        bail!("--accel kvm: {why}");
    }
    create_overlay(base, &spec.disk, disk_gib)?;
    Ok((spawn(netns, spec, Accel::Tcg)?, Accel::Tcg, Some(why)))
}
