//! Finding the seed: `/etc/imgbuild/seed.yaml`, else `imgbuild/seed.yaml` on
//! the NoCloud `cidata` ISO 9660 volume, read directly (no mount, no cloud-init).
//!
//! The file on disk wins (LXC templates are personalized that way). The seed
//! read from the ISO is never copied to /etc, so booting the same disk with a
//! changed ISO applies the new seed. Only ISO 9660 `cidata` volumes are read
//! (that is what Proxmox and imgbuild produce); a vfat `cidata` is not.

use crate::{fsutil::under, iso9660, CIDATA_SEED_PATH, SEED_PATH};
use anyhow::{Context, Result};
use imgbuild_seed::MAX_SEED_BYTES;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Reads at most one byte more than a seed may have, so an oversized file
/// is refused by the parser without being read whole.
pub fn read_bounded(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    File::open(path)?
        .take(MAX_SEED_BYTES as u64 + 1)
        .read_to_end(&mut data)?;
    Ok(data)
}

/// Where the seed text came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file under the root.
    File(PathBuf),
    /// `imgbuild/seed.yaml` on this block device.
    Cidata(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(p) => write!(f, "{}", p.display()),
            Source::Cidata(d) => write!(f, "{}:{CIDATA_SEED_PATH}", d.display()),
        }
    }
}

/// Finds the seed's bytes (at most one more than a seed may have; UTF-8 is
/// the parser's to check). `root` is the guest root (`/` in production);
/// block devices are searched only when `root` is `/`, because they belong
/// to the running machine. `Ok(None)` when there is no seed anywhere.
pub fn find_seed(root: &Path) -> Result<Option<(Source, Vec<u8>)>> {
    let file = under(root, SEED_PATH);
    match read_bounded(&file) {
        Ok(data) => return Ok(Some((Source::File(file), data))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    }
    if root != Path::new("/") {
        return Ok(None);
    }
    for dev in cidata_candidates() {
        let Ok(mut f) = File::open(&dev) else {
            continue;
        };
        match iso9660::volume_label(&mut f) {
            Ok(Some(label)) if label.eq_ignore_ascii_case("cidata") => {}
            _ => continue,
        }
        let data = iso9660::read_file(&mut f, CIDATA_SEED_PATH)
            .with_context(|| format!("reading {CIDATA_SEED_PATH} from {}", dev.display()))?;
        if let Some(mut data) = data {
            data.truncate(MAX_SEED_BYTES + 1);
            return Ok(Some((Source::Cidata(dev), data)));
        }
        tracing::warn!(device = %dev.display(), "cidata volume has no {CIDATA_SEED_PATH}");
    }
    Ok(None)
}

/// The udev label links first, then every block device the kernel knows
/// (udev may not have run yet, or at all in a container).
fn cidata_candidates() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = ["/dev/disk/by-label/cidata", "/dev/disk/by-label/CIDATA"]
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect();
    if let Ok(rd) = std::fs::read_dir("/sys/class/block") {
        let mut names: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with("loop") && !n.starts_with("ram") && !n.starts_with("zram"))
            .collect();
        // CD-ROMs first: that is where Proxmox and QEMU put cidata.
        names.sort_by_key(|n| (!n.starts_with("sr"), n.clone()));
        out.extend(names.into_iter().map(|n| PathBuf::from("/dev").join(n)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_under_root_wins_and_absent_is_none() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(find_seed(d.path()).unwrap(), None);
        std::fs::create_dir_all(d.path().join("etc/imgbuild")).unwrap();
        std::fs::write(d.path().join("etc/imgbuild/seed.yaml"), "x").unwrap();
        let (src, text) = find_seed(d.path()).unwrap().unwrap();
        assert_eq!(src, Source::File(d.path().join("etc/imgbuild/seed.yaml")));
        assert_eq!(text, b"x");
    }
}
