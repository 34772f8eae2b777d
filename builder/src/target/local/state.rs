//! Where the local target keeps a lab: one private directory per lab file
//! (`<state root>/<lab id>/`) with `state.json` (what `up` started, with which
//! inputs) and one directory per guest (console log, root file system or
//! disk overlay, cidata ISO). `down` removes the directory; nothing of the
//! lab lives anywhere else except its network namespace and processes.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::forward::Forward;
use super::net::Netns;
use super::sys::Proc;

/// The default state root: `$IMGBUILD_STATE_DIR`, else /var/lib/imgbuild/local.
pub fn default_root() -> PathBuf {
    std::env::var_os("IMGBUILD_STATE_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/imgbuild/local"))
}

/// One lab's place on this machine.
#[derive(Debug, Clone)]
pub struct LabDir {
    /// `<file stem>-<8 hex of the lab path's hash>`: two lab files never share one.
    pub id: String,
    pub dir: PathBuf,
}

impl LabDir {
    pub fn new(state_root: &Path, lab_path: &Path) -> Result<LabDir> {
        use sha2::{Digest, Sha256};
        let canon = std::fs::canonicalize(lab_path)
            .with_context(|| format!("reading {}", lab_path.display()))?;
        let stem: String = canon
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(24)
            .collect();
        let h = hex::encode(Sha256::digest(canon.as_os_str().as_encoded_bytes()));
        let id = format!("{stem}-{}", &h[..8]);
        Ok(LabDir {
            dir: state_root.join(&id),
            id,
        })
    }

    pub fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub fn guest_dir(&self, guest: &str) -> PathBuf {
        self.dir.join("guests").join(guest)
    }

    /// The lab's network namespace.
    pub fn netns(&self) -> Netns {
        Netns::new(format!("imgbuild-{}", self.id))
    }

    /// nspawn's machine name for a container: unique per lab and vmid.
    pub fn machine(&self, vmid: u32) -> String {
        let h = &self.id[self.id.len() - 8..];
        format!("ib{vmid}-{h}")
    }

    pub fn load(&self) -> Result<Option<State>> {
        let p = self.state_file();
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(
                serde_json::from_slice(&b).with_context(|| format!("reading {}", p.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    pub fn save(&self, state: &State) -> Result<()> {
        let json = serde_json::to_vec_pretty(state)?;
        crate::fsutil::write_atomic(&self.state_file(), &json, 0o600)
    }
}

/// What `up` started.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub lab: PathBuf,
    pub guests: BTreeMap<String, GuestState>,
    pub forwarder: Option<Proc>,
    pub forwards: Vec<Forward>,
    /// KVM hung or failed here before: boot VMs under TCG at once.
    #[serde(default)]
    pub kvm_bad: Option<String>,
}

/// One guest as `up` left it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestState {
    pub kind: String,
    pub vmid: u32,
    pub address: Ipv4Addr,
    /// Everything the guest was created from (seed, image, resources,
    /// network), hashed: a different value means recreate.
    pub fingerprint: String,
    /// The seed's instance id.
    pub instance_id: String,
    /// QEMU or systemd-nspawn.
    pub proc: Option<Proc>,
    /// Containers: nspawn's machine name.
    pub machine: Option<String>,
    /// VMs: `kvm` or `tcg`, and why not KVM.
    pub accel: Option<String>,
    pub accel_note: Option<String>,
    pub memory_mib: u64,
    /// Unix seconds of the last start.
    pub started: u64,
}
