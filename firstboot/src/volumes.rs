//! The object store's data volume on a VM: the second disk deploy gives the
//! guest (`scsi1`, serial `imgbuild-data`) is formatted only when it is blank
//! and mounted by label at the data directory, before the roles run (so the
//! object-store role sets up its directory on the volume). A volume that
//! holds anything (a file system, a partition table) is never formatted: an
//! upgraded guest finds its data there. Containers get their data volume
//! mounted by Proxmox (`mp0`), and a guest without the disk is left alone.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The disk's serial as deploy sets it, and the file system label.
pub const DATA_LABEL: &str = "imgbuild-data";

/// `/dev/disk/by-id/<...>imgbuild-data` (virtio-scsi names it
/// `scsi-0QEMU_QEMU_HARDDISK_imgbuild-data`), partitions left out.
pub fn find_disk(by_id: &Path) -> Option<PathBuf> {
    let mut hits: Vec<PathBuf> = std::fs::read_dir(by_id)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(DATA_LABEL) && !n.contains("-part"))
        })
        .collect();
    hits.sort();
    hits.into_iter().next()
}

/// Whether `dev` holds nothing blkid recognises (no file system, no
/// partition table, no RAID/LVM signature).
pub fn is_blank(dev: &Path) -> Result<bool> {
    let out = Command::new("blkid")
        .arg("-p")
        .arg(dev)
        .output()
        .context("running blkid")?;
    match out.status.code() {
        Some(0) => Ok(false),
        // blkid: 2 = nothing found
        Some(2) => Ok(true),
        _ => bail!(
            "blkid -p {}: {}",
            dev.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

/// ext4 with the data label on the whole device.
pub fn format(dev: &Path) -> Result<()> {
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", DATA_LABEL, "-m", "0"])
        .arg(dev)
        .status()
        .context("running mkfs.ext4")?;
    if !st.success() {
        bail!("mkfs.ext4 {} failed ({st})", dev.display());
    }
    Ok(())
}

/// The fstab line that mounts the volume at `dir` at every boot (before the
/// services: no `nofail`, so the object store never writes to the system
/// disk when its volume is missing).
pub fn fstab_line(dir: &str) -> String {
    format!("LABEL={DATA_LABEL} {dir} ext4 defaults,x-systemd.device-timeout=60s 0 2")
}

/// `fstab` with the line for `dir` (an older line for the label replaced).
pub fn with_fstab_line(fstab: &str, dir: &str) -> String {
    let line = fstab_line(dir);
    let mut out: Vec<&str> = fstab
        .lines()
        .filter(|l| !l.trim_start().starts_with(&format!("LABEL={DATA_LABEL} ")))
        .collect();
    out.push(&line);
    let mut s = out.join("\n");
    s.push('\n');
    s
}

/// Formats the data disk if blank, records it in `<root>/etc/fstab` and
/// mounts it at `dir` (unless it already is). `dev` None = no data disk.
pub fn prepare(root: &Path, dev: Option<&Path>, dir: &str, mount_now: bool) -> Result<bool> {
    let Some(dev) = dev else {
        return Ok(false);
    };
    if is_blank(dev)? {
        tracing::info!(device = %dev.display(), "data volume is blank: formatting it");
        format(dev)?;
    } else {
        tracing::info!(device = %dev.display(), "data volume holds data: keeping it");
    }
    let fstab = root.join("etc/fstab");
    let old = std::fs::read_to_string(&fstab).unwrap_or_default();
    let new = with_fstab_line(&old, dir);
    if new != old {
        std::fs::create_dir_all(root.join("etc"))
            .with_context(|| format!("creating {}", root.join("etc").display()))?;
        crate::fsutil::write_file(&fstab, new.as_bytes(), 0o644, 0, 0)
            .with_context(|| format!("writing {}", fstab.display()))?;
    }
    let target = crate::fsutil::under(root, dir);
    std::fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    if mount_now && !is_mountpoint(&target) {
        let st = Command::new("mount")
            .arg(format!("LABEL={DATA_LABEL}"))
            .arg(&target)
            .status()
            .context("running mount")?;
        if !st.success() {
            bail!(
                "mounting the data volume at {} failed ({st})",
                target.display()
            );
        }
    }
    Ok(true)
}

fn is_mountpoint(p: &Path) -> bool {
    Command::new("mountpoint")
        .arg("-q")
        .arg(p)
        .status()
        .is_ok_and(|s| s.success())
}

/// The hook the agent runs before applying the roles: a VM with an object
/// store and the data disk gets it formatted (if blank) and mounted.
pub fn prepare_for_seed(root: &Path, seed: &crate::Seed) -> Result<()> {
    let Some(os) = seed.roles.object_store.as_ref() else {
        return Ok(());
    };
    let disk = find_disk(&root.join("dev/disk/by-id"));
    prepare(
        root,
        disk.as_deref(),
        os.data_dir.as_str(),
        root == Path::new("/"),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_line_is_added_once() {
        let a = with_fstab_line(
            "# static\nLABEL=cloudimg-rootfs / ext4 defaults 0 1\n",
            "/var/lib/minio",
        );
        assert!(a.ends_with(&format!("{}\n", fstab_line("/var/lib/minio"))));
        assert_eq!(with_fstab_line(&a, "/var/lib/minio"), a);
        let b = with_fstab_line(&a, "/srv/data");
        assert_eq!(b.matches("LABEL=imgbuild-data").count(), 1);
        assert!(b.contains("cloudimg-rootfs"));
    }

    #[test]
    fn finds_the_disk_by_serial_not_its_partitions() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            "scsi-0QEMU_QEMU_HARDDISK_drive-scsi0",
            "scsi-0QEMU_QEMU_HARDDISK_imgbuild-data-part1",
            "scsi-0QEMU_QEMU_HARDDISK_imgbuild-data",
        ] {
            std::fs::write(d.path().join(n), b"").unwrap();
        }
        assert_eq!(
            find_disk(d.path()).unwrap().file_name().unwrap(),
            "scsi-0QEMU_QEMU_HARDDISK_imgbuild-data"
        );
        assert!(find_disk(&d.path().join("missing")).is_none());
    }

    /// Real blkid and mkfs.ext4 on a file: blank is formatted, a volume
    /// with a file system (data) is never formatted again.
    #[test]
    fn formats_only_blank_volumes() {
        let d = tempfile::tempdir().unwrap();
        let dev = d.path().join("disk.img");
        let f = std::fs::File::create(&dev).unwrap();
        f.set_len(64 << 20).unwrap();
        drop(f);
        let root = d.path().join("root");
        assert!(is_blank(&dev).unwrap());
        assert!(prepare(&root, Some(&dev), "/var/lib/minio", false).unwrap());
        assert!(!is_blank(&dev).unwrap());
        let label = Command::new("blkid")
            .args(["-p", "-o", "value", "-s", "LABEL"])
            .arg(&dev)
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), DATA_LABEL);
        // Mark the file system: a second run must keep it (no mkfs).
        let uuid = |p: &Path| {
            let o = Command::new("blkid")
                .args(["-p", "-o", "value", "-s", "UUID"])
                .arg(p)
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).trim().to_string()
        };
        let before = uuid(&dev);
        assert!(prepare(&root, Some(&dev), "/var/lib/minio", false).unwrap());
        assert_eq!(
            uuid(&dev),
            before,
            "a volume with a file system was formatted again"
        );
        let fstab = std::fs::read_to_string(root.join("etc/fstab")).unwrap();
        assert_eq!(fstab, format!("{}\n", fstab_line("/var/lib/minio")));
        assert!(root.join("var/lib/minio").is_dir());
        assert!(!prepare(&root, None, "/var/lib/minio", false).unwrap());
    }
}
