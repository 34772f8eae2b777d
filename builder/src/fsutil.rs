//! The one way imgbuild publishes a file, so a reader sees either the old
//! file or the whole new one, never a half-written one: a temporary file
//! beside the target (created 0600, so a secret is never readable by others,
//! not even briefly), written, then at [`AtomicFile::commit`] chmod to its
//! final mode, fsync, rename over the target, fsync the directory. Dropped
//! without a commit (an error on the way), the temporary file is removed.
//!
//! Small outputs (lock, manifest, seed, cidata) use [`write_atomic`]; streamed
//! outputs (templates) write through [`AtomicFile::file`]; outputs written by
//! another program (qemu-img) go to [`AtomicFile::path`]. The artifact cache
//! publishes its blobs by the same steps ([`crate::fetch::cache`]), keyed by
//! digest instead of a temporary name so downloads can resume.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// An output file being written; it replaces its target only on [`commit`](Self::commit).
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    target: PathBuf,
    mode: u32,
}

impl AtomicFile {
    /// Starts writing `target`, which gets permission bits `mode` (0600 for
    /// anything holding a secret, 0644 otherwise) when committed.
    pub fn create(target: &Path, mode: u32) -> Result<Self> {
        let dir = parent_dir(target);
        let name = target
            .file_name()
            .with_context(|| format!("output path {} has no file name", target.display()))?
            .to_string_lossy()
            .into_owned();
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}.tmp-"))
            .tempfile_in(dir)
            .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
        Ok(AtomicFile {
            tmp,
            target: target.to_path_buf(),
            mode,
        })
    }

    /// The temporary file, to write the content through.
    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// The temporary file's path, for a program that writes the content itself.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Sets the mode, syncs, renames into place, syncs the directory; returns
    /// the file's size.
    pub fn commit(self) -> Result<u64> {
        let path = self.tmp.path().to_path_buf();
        // Through the path, not our handle: a program given `path()` may have
        // replaced the file rather than written into it.
        let f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        f.set_permissions(std::fs::Permissions::from_mode(self.mode))
            .and_then(|()| f.sync_all())
            .with_context(|| format!("syncing {}", path.display()))?;
        let len = f
            .metadata()
            .with_context(|| format!("reading {}", path.display()))?
            .len();
        let target = self.target;
        self.tmp
            .persist(&target)
            .map_err(|e| e.error)
            .with_context(|| format!("renaming into {}", target.display()))?;
        let dir = parent_dir(&target);
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing directory {}", dir.display()))?;
        Ok(len)
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Replaces `path` with `bytes` atomically, with permission bits `mode`
/// (0600 for anything holding a secret, 0644 otherwise).
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut out = AtomicFile::create(path, mode)?;
    out.file()
        .write_all(bytes)
        .with_context(|| format!("writing {}", out.path().display()))?;
    out.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_sets_mode_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.json");
        write_atomic(&p, b"one", 0o644).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out.json"]);
    }

    #[test]
    fn uncommitted_output_leaves_nothing_and_the_old_file_stays() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("image.qcow2");
        std::fs::write(&p, b"old").unwrap();
        let mut out = AtomicFile::create(&p, 0o644).unwrap();
        out.file().write_all(b"half").unwrap();
        let tmp = out.path().to_path_buf();
        assert_eq!(
            std::fs::metadata(&tmp).unwrap().permissions().mode() & 0o777,
            0o600
        );
        drop(out);
        assert!(!tmp.exists());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
    }

    #[test]
    fn a_program_may_replace_the_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("out.img");
        let out = AtomicFile::create(&p, 0o644).unwrap();
        // As a tool that writes a new file and renames it over its output would.
        let other = d.path().join("other");
        std::fs::write(&other, b"from the tool").unwrap();
        std::fs::rename(&other, out.path()).unwrap();
        assert_eq!(out.commit().unwrap(), 13);
        assert_eq!(std::fs::read(&p).unwrap(), b"from the tool");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn missing_directory_is_an_error_naming_it() {
        let e = write_atomic(Path::new("/nonexistent-dir-imgbuild/x"), b"", 0o644).unwrap_err();
        assert!(
            format!("{e:#}").contains("/nonexistent-dir-imgbuild"),
            "{e:#}"
        );
    }
}
