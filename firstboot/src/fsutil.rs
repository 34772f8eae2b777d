//! Atomic, idempotent filesystem writes under an alternative root.
//!
//! Every write goes to a temp file beside the target, is fsynced, renamed over
//! the target and the directory is fsynced, so a power cut leaves either the
//! old or the new content, never a torn file. Writes are skipped when content,
//! mode and owner already match, which is what makes a second run change nothing.

use anyhow::{Context, Result};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Joins an absolute guest path under `root`.
pub fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))
}

/// Writes `content` to `path` atomically with `mode` and owner `uid:gid`.
/// Returns whether anything changed (content, mode or owner).
pub fn write_file(path: &Path, content: &[u8], mode: u32, uid: u32, gid: u32) -> Result<bool> {
    if let Ok(meta) = fs::symlink_metadata(path) {
        if meta.is_file() && fs::read(path).map(|c| c == content).unwrap_or(false) {
            return fix_meta(path, &meta, mode, uid, gid);
        }
    }
    let dir = path.parent().context("target has no parent directory")?;
    let name = path
        .file_name()
        .context("target has no file name")?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.firstboot-tmp"));
    let result = (|| -> Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        // Owner and mode before any content, so a secret is never readable
        // by the wrong user even for a moment.
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
            .with_context(|| format!("chown {}", tmp.display()))?;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", tmp.display()))?;
        f.write_all(content)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map(|()| true)
}

fn fix_meta(path: &Path, meta: &fs::Metadata, mode: u32, uid: u32, gid: u32) -> Result<bool> {
    let mut changed = false;
    if meta.uid() != uid || meta.gid() != gid {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .with_context(|| format!("chown {}", path.display()))?;
        changed = true;
    }
    if !meta.file_type().is_symlink() && meta.mode() & 0o7777 != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", path.display()))?;
        changed = true;
    }
    Ok(changed)
}

/// Creates `path` (and missing parents, 0755 root) as a directory with `mode`
/// and owner. Returns whether anything changed.
pub fn ensure_dir(path: &Path, mode: u32, uid: u32, gid: u32) -> Result<bool> {
    let mut changed = false;
    if !path.is_dir() {
        if let Some(parent) = path.parent() {
            if !parent.is_dir() {
                ensure_dir(parent, 0o755, 0, 0)?;
            }
        }
        match fs::create_dir(path) {
            Ok(()) => changed = true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e).with_context(|| format!("creating directory {}", path.display()))
            }
        }
        if let Some(parent) = path.parent() {
            fsync_dir(parent)?;
        }
    }
    let meta =
        fs::symlink_metadata(path).with_context(|| format!("inspecting {}", path.display()))?;
    Ok(fix_meta(path, &meta, mode, uid, gid)? || changed)
}

/// Points the symlink `path` at `target`, atomically replacing whatever is
/// there. Returns whether anything changed.
pub fn ensure_symlink(path: &Path, target: &str) -> Result<bool> {
    if fs::read_link(path)
        .map(|t| t == Path::new(target))
        .unwrap_or(false)
    {
        return Ok(false);
    }
    let dir = path.parent().context("symlink has no parent directory")?;
    let name = path
        .file_name()
        .context("symlink has no file name")?
        .to_string_lossy();
    let tmp = dir.join(format!(".{name}.firstboot-tmp"));
    let _ = fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)
        .with_context(|| format!("creating symlink {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    fsync_dir(dir)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_once_then_no_change() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        assert!(write_file(&p, b"a\n", 0o640, 0, 0).unwrap());
        assert!(!write_file(&p, b"a\n", 0o640, 0, 0).unwrap());
        assert!(
            write_file(&p, b"a\n", 0o600, 0, 0).unwrap(),
            "mode change counts"
        );
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        assert!(write_file(&p, b"b\n", 0o600, 0, 0).unwrap());
        assert_eq!(fs::read(&p).unwrap(), b"b\n");
        let leftovers: Vec<_> = fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp files left");
    }

    #[test]
    fn dirs_and_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b/c");
        assert!(ensure_dir(&p, 0o750, 0, 0).unwrap());
        assert!(!ensure_dir(&p, 0o750, 0, 0).unwrap());
        let l = d.path().join("a/link");
        assert!(ensure_symlink(&l, "/usr/share/zoneinfo/Etc/UTC").unwrap());
        assert!(!ensure_symlink(&l, "/usr/share/zoneinfo/Etc/UTC").unwrap());
        assert!(ensure_symlink(&l, "/usr/share/zoneinfo/Europe/Berlin").unwrap());
    }
}
