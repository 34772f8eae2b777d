//! A Proxmox VE guest config (`/etc/pve/lxc/<vmid>.conf` or
//! `/etc/pve/qemu-server/<vmid>.conf`, as `pct config`/`qm config` print it)
//! run on the local target: `imgbuild pve-guest`. The config is read as
//! Proxmox stores it and translated key by key into what the local runner
//! boots, so a wrong `net0`, a missing mount point or seed ISO, or an unknown
//! key shows up here instead of being re-derived from the lab file. The
//! Proxmox stand-in of the tests hands every container it starts to this
//! (tests/pve-standin/README.md).
//!
//! Keys are honoured, knowingly ignored (each with its reason), or refused:
//! a key the runner does not know is an error naming its line.
//!
//! - [`ct`]: containers (pct's files, systemd-nspawn on a veth).
//! - [`vm`]: VMs (QEMU on a TAP, the disk and the cidata ISO as configured).

pub mod ct;
pub mod vm;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

use super::net::Netns;
use super::sys::Proc;
use crate::diag::{BadInput, Diagnostic};

pub use ct::{container_plan, create_container, start_container, CtPlan};
pub use vm::{start_vm, vm_plan, VmPlan};

/// One guest config: `key: value` lines of the current config (the
/// `[snapshot]` sections after it are not part of it).
#[derive(Debug, Clone)]
pub struct PveConfig {
    pub file: PathBuf,
    /// key -> (value, 1-based line).
    pub entries: BTreeMap<String, (String, usize)>,
}

impl PveConfig {
    /// Parses the text of a guest config.
    pub fn parse(file: &Path, text: &str) -> Result<PveConfig, BadInput> {
        let mut entries = BTreeMap::new();
        let mut bad = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let t = line.trim_end();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if t.starts_with('[') {
                break;
            }
            match t.split_once(':') {
                Some((k, v))
                    if !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) =>
                {
                    if entries
                        .insert(k.to_string(), (v.trim().to_string(), n))
                        .is_some()
                    {
                        bad.push(diag(file, n, k, "set twice"));
                    }
                }
                _ => bad.push(diag(file, n, "", "expected `key: value`")),
            }
        }
        if bad.is_empty() {
            Ok(PveConfig {
                file: file.to_path_buf(),
                entries,
            })
        } else {
            Err(BadInput(bad))
        }
    }

    /// Reads and parses `file`.
    pub fn load(file: &Path) -> Result<PveConfig> {
        let text =
            fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        Ok(PveConfig::parse(file, &text)?)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(|(v, _)| v.as_str())
    }

    pub(crate) fn bad(&self, key: &str, message: impl Into<String>) -> Diagnostic {
        let line = self.entries.get(key).map(|(_, l)| *l).unwrap_or(1);
        diag(&self.file, line, key, message)
    }
}

pub(crate) fn diag(
    file: &Path,
    line: usize,
    field: &str,
    message: impl Into<String>,
) -> Diagnostic {
    Diagnostic {
        file: file.to_path_buf(),
        line,
        column: 1,
        field: field.to_string(),
        message: message.into(),
    }
}

/// A property string (`default,k=v,k=v`) as a map; the bare first value
/// under `default_key`.
pub fn props(value: &str, default_key: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for part in value.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            Some((k, v)) => m.insert(k.to_string(), v.to_string()),
            None => m.insert(default_key.to_string(), part.to_string()),
        };
    }
    m
}

/// Volume ids mapped to where they are on this host (`VOLID=PATH`).
pub fn volume_map(pairs: &[String]) -> Result<BTreeMap<String, PathBuf>> {
    let mut m = BTreeMap::new();
    for p in pairs {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| anyhow!("--volume {p}: expected VOLID=PATH"))?;
        m.insert(k.to_string(), PathBuf::from(v));
    }
    Ok(m)
}

pub(crate) fn path_of<'a>(
    vols: &'a BTreeMap<String, PathBuf>,
    volid: &str,
    key: &str,
) -> Result<&'a Path> {
    vols.get(volid).map(PathBuf::as_path).ok_or_else(|| {
        anyhow!("{key}: volume {volid} is not mapped to a path here (--volume {volid}=PATH)")
    })
}

/// What `start` leaves in the run directory for `stop`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Running {
    pub vmid: u32,
    /// `lxc` or `qemu`.
    pub kind: String,
    /// systemd-nspawn or QEMU.
    pub pid: Option<Proc>,
    /// Containers: nspawn's machine name.
    pub machine: Option<String>,
    pub netns: String,
    /// The veth or TAP on the bridge.
    pub link: String,
    /// Containers: the root directory (nspawn locks it with `.#NAME.lck` beside it).
    #[serde(default)]
    pub rootfs: Option<PathBuf>,
}

fn running_file(dir: &Path) -> PathBuf {
    dir.join("running.json")
}

fn save_running(dir: &Path, run: &Running) -> Result<()> {
    crate::fsutil::write_atomic(&running_file(dir), &serde_json::to_vec(run)?, 0o600)
}

/// Stops what `start` started in `dir` (a hard stop, as `pct stop` /
/// `qm stop`) and removes its veth or TAP; nothing to do when nothing runs.
/// Idempotent.
pub fn stop(dir: &Path) -> Result<bool> {
    let f = running_file(dir);
    let run: Running = match fs::read(&f) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("reading {}", f.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e).with_context(|| format!("reading {}", f.display())),
    };
    if run.kind == "lxc" {
        let st = super::state::GuestState {
            kind: crate::model::lab::GuestKind::Lxc.as_str().into(),
            vmid: run.vmid,
            address: std::net::Ipv4Addr::UNSPECIFIED,
            fingerprint: String::new(),
            instance_id: String::new(),
            proc: run.pid,
            machine: run.machine.clone(),
            accel: None,
            accel_note: None,
            memory_mib: 0,
            started: 0,
        };
        super::guest::stop(&st);
        // A killed nspawn leaves its image lock beside the root.
        if let Some(lock) = run.rootfs.as_deref().and_then(nspawn_lock) {
            let _ = fs::remove_file(lock);
        }
    } else if let Some(p) = run.pid {
        p.kill();
        let _ = p.wait_gone(Duration::from_secs(10));
    }
    let ns = Netns::new(run.netns);
    if ns.exists() {
        ns.remove_link(&run.link);
    }
    fs::remove_file(&f).with_context(|| format!("removing {}", f.display()))?;
    Ok(true)
}

/// The lock file systemd-nspawn keeps beside a directory image.
fn nspawn_lock(rootfs: &Path) -> Option<PathBuf> {
    let name = rootfs.file_name()?.to_str()?;
    Some(rootfs.with_file_name(format!(".#{name}.lck")))
}

/// Whether `netns` holds the bridge `bridge` (pve's words when not).
fn check_bridge(netns: &Netns, bridge: &str) -> Result<()> {
    if !netns.exists() {
        anyhow::bail!("network namespace {} does not exist", netns.name);
    }
    if !super::sys::succeeds(std::process::Command::new("ip").args([
        "-n",
        &netns.name,
        "link",
        "show",
        bridge,
    ])) {
        anyhow::bail!(
            "bridge '{bridge}' does not exist (in network namespace {})",
            netns.name
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_sections_are_not_the_current_config() {
        let c = PveConfig::parse(Path::new("c"), "hostname: a\n\n[snap]\nhostname: old\n").unwrap();
        assert_eq!(c.get("hostname"), Some("a"));
        let e = PveConfig::parse(Path::new("c"), "hostname lab1\n").unwrap_err();
        assert!(
            e.to_string().contains("c:1:1: : expected `key: value`"),
            "{e}"
        );
        let e = PveConfig::parse(Path::new("c"), "a: 1\na: 2\n").unwrap_err();
        assert!(e.to_string().contains("c:2:1: a: set twice"), "{e}");
    }

    #[test]
    fn volumes_map_by_id() {
        let m = volume_map(&["local-lvm:vm-300-disk-0=/s/a=b".into()]).unwrap();
        assert_eq!(m["local-lvm:vm-300-disk-0"], PathBuf::from("/s/a=b"));
        assert!(volume_map(&["x".into()]).is_err());
    }
}
