//! Data volumes on the local target: the object store's data directory
//! lives outside the guest's root or disk, so recreating the guest from a new
//! image (an upgrade) keeps it, the way Proxmox keeps `mp0`/`scsi1`.
//!
//! A container's volume is a directory `<lab dir>/data/<guest>/volume`,
//! bind-mounted by systemd-nspawn at the role's data directory: inside the
//! container it is a mount point at the data directory, as Proxmox's `mp0`
//! appears there. Unlike a Proxmox volume it has no size of its own (it
//! shares the host file system). `up` never removes it: a guest that is
//! recreated, or leaves the lab file, keeps it; `down` keeps it too, and only
//! `down --purge-data` removes it.
//!
//! A VM's volume is a blank qcow2 `<lab dir>/data/<guest>/data.qcow2` of the
//! declared size, attached as Proxmox attaches `scsi1` (virtio-scsi,
//! `scsi-hd` with serial `imgbuild-data`), so firstboot finds it by serial,
//! formats it when blank and mounts it by label, exactly as on Proxmox.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::state::LabDir;
use crate::model::lab::{Guest, GuestKind};

/// A guest's data volume on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalVolume {
    /// The host directory holding the data.
    pub host: PathBuf,
    /// Where the guest sees it (the object store's data directory).
    pub mount: String,
    /// VMs: the size of the disk (`host` is its qcow2); containers: None
    /// (`host` is a directory).
    pub disk_gib: Option<u64>,
}

/// Where all of a lab's data volumes live: `down` keeps this directory.
pub fn root(labdir: &LabDir) -> PathBuf {
    labdir.dir.join("data")
}

/// The directory of one guest's volume.
pub fn host_dir(labdir: &LabDir, guest: &str) -> PathBuf {
    root(labdir).join(guest).join("volume")
}

/// The volume `guest` gets locally: guests with an object store whose
/// `data_volume` is on (the default).
pub fn for_guest(labdir: &LabDir, guest: &Guest) -> Option<LocalVolume> {
    let os = guest.roles.object_store.as_ref()?;
    let v = os.data_volume.as_ref()?;
    let name = guest.name.as_str();
    Some(match guest.kind {
        GuestKind::Lxc => LocalVolume {
            host: host_dir(labdir, name),
            mount: os.data_dir.clone(),
            disk_gib: None,
        },
        GuestKind::Vm => LocalVolume {
            host: root(labdir).join(name).join(DISK),
            mount: os.data_dir.clone(),
            disk_gib: Some(v.size.gib()),
        },
    })
}

/// A VM's data disk file in its guest's data directory.
const DISK: &str = "data.qcow2";

/// Creates the volume when missing, under a 0700 parent: a container's
/// directory (root's, 0755, like the root of a fresh file system; the
/// container's start gives it to the container's root, shifted when
/// unprivileged; the object-store role sets its owner and mode), a VM's
/// blank qcow2 (firstboot formats it). An existing volume is left exactly as it is. Returns whether
/// it was created.
pub fn ensure(v: &LocalVolume) -> Result<bool> {
    use std::os::unix::fs::DirBuilderExt;
    if v.host.exists() {
        return Ok(false);
    }
    let parent = v.host.parent().unwrap_or(Path::new("/"));
    super::sys::private_dir(parent)?;
    if let Some(gib) = v.disk_gib {
        super::sys::run(
            std::process::Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2"])
                .arg(&v.host)
                .arg(format!("{gib}G")),
            "creating the VM's data disk (package qemu-utils)",
        )?;
        return Ok(true);
    }
    std::fs::DirBuilder::new()
        .mode(0o755)
        .create(&v.host)
        .with_context(|| format!("creating the data volume {}", v.host.display()))?;
    Ok(true)
}

/// Guests with a volume in the lab directory, by name (to report what
/// `down` keeps and what a guest that left the lab left behind).
pub fn kept(labdir: &LabDir) -> Vec<(String, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(root(labdir)) else {
        return Vec::new();
    };
    let mut v: Vec<(String, PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let p = [e.path().join("volume"), e.path().join(DISK)]
                .into_iter()
                .find(|p| p.exists())?;
            Some((e.file_name().to_string_lossy().into_owned(), p))
        })
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab() -> crate::model::lab::Lab {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/seed/lab.yaml");
        crate::model::lab::load(&p).unwrap()
    }

    #[test]
    fn containers_with_an_object_store_get_a_directory_outside_their_root() {
        let lab = lab();
        let d = tempfile::tempdir().unwrap();
        let labdir = LabDir::new(d.path(), &lab.path).unwrap();
        let minio = lab.guest("minio").unwrap();
        assert_eq!(minio.kind, GuestKind::Lxc);
        let v = for_guest(&labdir, minio).expect("the object store's volume is on by default");
        assert_eq!(v.mount, "/var/lib/minio");
        assert!(v.host.starts_with(labdir.dir.join("data")));
        assert!(!v.host.starts_with(labdir.guest_dir("minio")));
        assert_eq!(v.disk_gib, None);
        // The Spark VM has no object store: nothing.
        assert!(for_guest(&labdir, lab.guest("devlab").unwrap()).is_none());
        // An object store on a VM: a disk of the declared size beside it.
        let mut vm = lab.clone();
        vm.guests[0].kind = GuestKind::Vm;
        let d = for_guest(&labdir, vm.guest("minio").unwrap()).unwrap();
        assert_eq!(d.disk_gib, Some(crate::model::volume::DEFAULT_SIZE_GIB));
        assert_eq!(d.host, labdir.dir.join("data/minio/data.qcow2"));
        // `data_volume: none`: the data stays in the root.
        let mut off = lab.clone();
        off.guests[0]
            .roles
            .object_store
            .as_mut()
            .unwrap()
            .data_volume = None;
        assert!(for_guest(&labdir, off.guest("minio").unwrap()).is_none());
    }

    #[test]
    fn ensure_creates_once_and_keeps_what_is_there() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let v = LocalVolume {
            host: d.path().join("data/minio/volume"),
            mount: "/var/lib/minio".into(),
            disk_gib: None,
        };
        assert!(ensure(&v).unwrap());
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&v.host), 0o755);
        assert_eq!(mode(v.host.parent().unwrap()), 0o700);
        std::fs::write(v.host.join("object"), b"kept").unwrap();
        std::fs::set_permissions(&v.host, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert!(!ensure(&v).unwrap());
        assert_eq!(mode(&v.host), 0o750, "an existing volume is left alone");
        assert_eq!(std::fs::read(v.host.join("object")).unwrap(), b"kept");
        // A VM's: a blank qcow2 of the size, created once (real qemu-img).
        let disk = LocalVolume {
            host: d.path().join("data/vm/data.qcow2"),
            mount: "/var/lib/minio".into(),
            disk_gib: Some(2),
        };
        assert!(ensure(&disk).unwrap());
        let info = std::process::Command::new("qemu-img")
            .args(["info", "--output=json"])
            .arg(&disk.host)
            .output()
            .unwrap();
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).unwrap();
        assert_eq!(
            (info["format"].as_str(), info["virtual-size"].as_u64()),
            (Some("qcow2"), Some(2 << 30))
        );
        let before = std::fs::metadata(&disk.host).unwrap().modified().unwrap();
        assert!(!ensure(&disk).unwrap());
        assert_eq!(
            std::fs::metadata(&disk.host).unwrap().modified().unwrap(),
            before
        );
        let labdir = LabDir {
            id: "x-00000000".into(),
            dir: d.path().to_path_buf(),
        };
        let names: Vec<String> = kept(&labdir).into_iter().map(|(g, _)| g).collect();
        assert_eq!(names, ["minio", "vm"]);
    }
}
