//! QEMU helpers for the VM end-to-end test (`e2e_vm.rs`): a TAP device on the
//! lab subnet inside the test's network namespace, copy-on-write overlays over
//! the baked image, and a QEMU process (killed on drop) booted from its own
//! disk with the cidata ISO as a CD-ROM, KVM when it really works, else TCG.
//!
//! KVM: `/dev/kvm` can exist and open fine while a KVM guest still hangs in
//! the firmware (this machine: no serial byte ever, even GRUB's). So a KVM
//! boot only counts when the serial log shows output within
//! [`KVM_FIRST_OUTPUT`]; otherwise QEMU is killed, the overlay recreated and
//! the boot retried under TCG. The verdict is cached for the rest of the run.
//! `IMGBUILD_TEST_ACCEL=tcg|kvm` forces one (kvm: no fallback).

#![allow(dead_code)]

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a KVM boot may stay silent on the serial console before it counts as hung.
pub const KVM_FIRST_OUTPUT: Duration = Duration::from_secs(20);

/// The accelerator a boot used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// `Some(true)`: KVM booted; `Some(false)`: KVM hung or failed; `None`: untried.
static KVM_VERDICT: Mutex<Option<bool>> = Mutex::new(None);

/// Why KVM was not used (for the test's report), once known.
static KVM_NOTE: Mutex<String> = Mutex::new(String::new());

pub fn kvm_note() -> String {
    KVM_NOTE.lock().unwrap().clone()
}

fn set_kvm(ok: bool, note: String) {
    *KVM_VERDICT.lock().unwrap() = Some(ok);
    *KVM_NOTE.lock().unwrap() = note;
}

/// Whether /dev/kvm can be opened for reading and writing.
pub fn kvm_device_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

/// Runs `cmd` to success within a minute, panicking with its output otherwise.
fn run(cmd: &mut Command, what: &str) -> String {
    super::run_ok(cmd, None, Duration::from_secs(60), what)
        .unwrap_or_else(|e| panic!("{e}"))
        .stdout
}

/// A persistent TAP device inside `netns` holding `gateway/prefix` (the host
/// side of the lab network). It goes away with the namespace.
pub fn add_tap(netns: &str, tap: &str, gateway_cidr: &str) {
    let ip = |args: &[&str]| {
        run(
            Command::new("ip").args(["-n", netns]).args(args),
            "setting up the TAP device",
        )
    };
    ip(&["tuntap", "add", "dev", tap, "mode", "tap"]);
    ip(&["addr", "add", gateway_cidr, "dev", tap]);
    ip(&["link", "set", tap, "up"]);
}

/// A fresh qcow2 overlay at `overlay` over `base` (the baked image stays pristine).
pub fn create_overlay(base: &Path, overlay: &Path) {
    let _ = std::fs::remove_file(overlay);
    run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(base)
            .arg(overlay),
        "creating the disk overlay",
    );
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct BootSpec {
    pub netns: String,
    pub tap: String,
    pub mac: String,
    pub disk: PathBuf,
    pub cidata: PathBuf,
    pub serial_log: PathBuf,
    pub memory_mib: u32,
    pub cpus: u32,
}

/// A running QEMU; killed (and reaped) on drop.
pub struct Qemu {
    child: Option<Child>,
    pub accel: Accel,
    pub serial_log: PathBuf,
    pub started: Instant,
    stderr_log: PathBuf,
}

impl Qemu {
    fn spawn(spec: &BootSpec, accel: Accel) -> Qemu {
        let _ = std::fs::remove_file(&spec.serial_log);
        let stderr_log = spec.serial_log.with_extension("qemu.log");
        let err = File::create(&stderr_log).expect("creating the QEMU log");
        let mut cmd = Command::new("ip");
        // setpriv: QEMU dies with the test (even a SIGKILLed one), never orphaned.
        cmd.args(["netns", "exec", &spec.netns])
            .args(["setpriv", "--pdeathsig", "KILL", "qemu-system-x86_64"])
            // TCG: one host thread per vCPU.
            .args([
                "-accel",
                match accel {
                    Accel::Kvm => "kvm",
                    Accel::Tcg => "tcg,thread=multi",
                },
            ])
            .args(["-m", &spec.memory_mib.to_string()])
            .args(["-smp", &spec.cpus.to_string()])
            .args(["-display", "none", "-monitor", "none", "-no-reboot"])
            .arg("-serial")
            .arg(format!("file:{}", spec.serial_log.display()))
            .arg("-drive")
            .arg(format!(
                "file={},if=virtio,format=qcow2,cache=unsafe",
                spec.disk.display()
            ))
            .arg("-drive")
            .arg(format!(
                "file={},media=cdrom,if=ide,readonly=on",
                spec.cidata.display()
            ))
            .arg("-netdev")
            .arg(format!(
                "tap,id=n0,ifname={},script=no,downscript=no",
                spec.tap
            ))
            .arg("-device")
            .arg(format!("virtio-net-pci,netdev=n0,mac={}", spec.mac))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err);
        let child = cmd.spawn().expect("starting qemu-system-x86_64");
        Qemu {
            child: Some(child),
            accel,
            serial_log: spec.serial_log.clone(),
            started: Instant::now(),
            stderr_log,
        }
    }

    /// Whether QEMU has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// QEMU's own stderr (warnings, errors).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// Waits up to `limit` for QEMU to exit by itself (after a guest poweroff).
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if self.exited().is_some() {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The last `lines` lines of the serial log.
    pub fn serial_tail(&self, lines: usize) -> String {
        file_tail(&self.serial_log, lines)
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a text file (lossy), or a note that it is missing.
pub fn file_tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("({} does not exist)", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(64 * 1024);
    let _ = f.seek(SeekFrom::Start(from));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Whether the file at `path` contains `needle`.
pub fn file_contains(path: &Path, needle: &str) -> bool {
    std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).contains(needle))
        .unwrap_or(false)
}

/// Boots `spec`: KVM first when `/dev/kvm` is usable and KVM has not failed
/// earlier in this run, else (or when KVM stays silent) TCG. The overlay is
/// recreated from `base` before a fallback, since the hung attempt may have
/// touched it.
pub fn boot(spec: &BootSpec, base_for_fallback: Option<&Path>) -> Qemu {
    let forced = std::env::var("IMGBUILD_TEST_ACCEL").ok();
    let try_kvm = match forced.as_deref() {
        Some("tcg") => {
            set_kvm(false, "IMGBUILD_TEST_ACCEL=tcg".into());
            false
        }
        Some("kvm") => true,
        _ => {
            let v = *KVM_VERDICT.lock().unwrap();
            match v {
                Some(ok) => ok,
                None if !kvm_device_usable() => {
                    set_kvm(false, "/dev/kvm is missing or not writable".into());
                    false
                }
                None => true,
            }
        }
    };
    if try_kvm {
        let mut q = Qemu::spawn(spec, Accel::Kvm);
        let end = Instant::now() + KVM_FIRST_OUTPUT;
        loop {
            let bytes = std::fs::metadata(&spec.serial_log)
                .map(|m| m.len())
                .unwrap_or(0);
            if bytes > 0 {
                if KVM_VERDICT.lock().unwrap().is_none() {
                    set_kvm(true, "KVM boot printed on the serial console".into());
                }
                return q;
            }
            if let Some(st) = q.exited() {
                let err = q.stderr();
                set_kvm(
                    false,
                    format!(
                        "KVM QEMU exited at once ({st}): {}",
                        err.lines().last().unwrap_or("")
                    ),
                );
                break;
            }
            if Instant::now() >= end {
                set_kvm(
                    false,
                    format!(
                        "KVM boot hung: no serial output within {}s",
                        KVM_FIRST_OUTPUT.as_secs()
                    ),
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        q.kill();
        assert!(
            forced.as_deref() != Some("kvm"),
            "IMGBUILD_TEST_ACCEL=kvm but {}",
            kvm_note()
        );
        eprintln!("e2e-vm: {}; falling back to TCG", kvm_note());
        if let Some(base) = base_for_fallback {
            create_overlay(base, &spec.disk);
        }
    }
    Qemu::spawn(spec, Accel::Tcg)
}

/// Reads one file out of the root filesystem of a (stopped) VM disk without
/// mounting it: the partition labelled `cloudimg-rootfs` is converted to a
/// sparse raw file and read with `debugfs -R cat`. For failure diagnostics.
pub fn read_file_offline(disk: &Path, work: &Path, path: &str) -> Result<String, String> {
    let out = Command::new("qemu-img")
        .args(["convert", "-q", "-O", "raw"])
        .arg(disk)
        .arg(work.join("diag.raw"))
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let raw = work.join("diag.raw");
    let sg = Command::new("sgdisk")
        .arg("-p")
        .arg(&raw)
        .output()
        .map_err(|e| e.to_string())?;
    let table = String::from_utf8_lossy(&sg.stdout).into_owned();
    let start: u64 = table
        .lines()
        .find(|l| l.trim_start().starts_with("1 "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no partition 1 in:\n{table}"))?;
    let r = Command::new("debugfs")
        .arg("-R")
        .arg(format!("cat {path}"))
        .arg(format!("{}?offset={}", raw.display(), start * 512))
        .output()
        .map_err(|e| e.to_string());
    let _ = std::fs::remove_file(&raw);
    let r = r?;
    Ok(String::from_utf8_lossy(&r.stdout).into_owned())
}

/// `ssh root@addr CMD` with `key` from inside `netns`, within `timeout`.
pub fn guest_ssh(
    netns: &str,
    addr: &str,
    key: &Path,
    cmd: &str,
    timeout: Duration,
) -> Result<super::Output, String> {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", netns, "ssh"])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
        .args(["-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"])
        .arg("-i")
        .arg(key)
        .arg(format!("root@{addr}"))
        .arg(cmd);
    super::run_timeout(&mut c, None, timeout, &format!("ssh {addr} {cmd}"))
}

/// Like [`guest_ssh`], but a non-zero exit is an error; returns stdout.
pub fn guest_ssh_ok(
    netns: &str,
    addr: &str,
    key: &Path,
    cmd: &str,
    timeout: Duration,
) -> Result<String, String> {
    let o = guest_ssh(netns, addr, key, cmd, timeout)?;
    if !o.ok() {
        return Err(format!(
            "ssh {addr} {cmd}: {}\nstdout:\n{}\nstderr:\n{}",
            o.status,
            super::tail(&o.stdout, 40),
            super::tail(&o.stderr, 40)
        ));
    }
    Ok(o.stdout)
}
