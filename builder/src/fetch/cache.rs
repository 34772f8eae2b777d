//! The content-addressed cache on disk:
//!
//! ```text
//! <cache>/blobs/<algo>/<hex>      verified artifacts, read-only, named by digest
//! <cache>/partial/<algo>-<hex>    an unfinished download of that digest (resumable)
//! ```
//!
//! A blob only ever appears by `rename` of a partial whose digest was checked
//! and which was fsynced, so a blob path that exists holds the right bytes.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::artifact::Digest;

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Cache { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the verified artifact with this digest lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algo.name())
            .join(digest.hex())
    }

    /// Where an unfinished download of this digest is kept between attempts and runs.
    pub fn partial_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("partial")
            .join(format!("{}-{}", digest.algo.name(), digest.hex()))
    }

    /// The cached blob, if present. With `rehash`, the blob is hashed again and a
    /// corrupt one is removed (then `None`), so the caller fetches it anew.
    pub fn lookup(&self, digest: &Digest, rehash: bool) -> Result<Option<PathBuf>> {
        let path = self.blob_path(digest);
        let meta = match fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("checking cached {}", path.display())),
        };
        if !meta.is_file() {
            anyhow::bail!(
                "{} is in the cache but is not a regular file",
                path.display()
            );
        }
        if rehash {
            let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
            let (actual, _) = super::hash::hash_reader(digest.algo, file)
                .with_context(|| format!("reading {}", path.display()))?;
            if &actual != digest {
                tracing::warn!(
                    "cached {} is corrupt (hashes to {actual}); removing it and fetching again",
                    path.display()
                );
                fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
                return Ok(None);
            }
        }
        Ok(Some(path))
    }

    /// Opens (creating) the partial file for `digest` and takes an exclusive lock on
    /// it, so two imgbuild processes never append to the same partial. Returns the
    /// file positioned nowhere in particular; the caller seeks.
    pub fn lock_partial(&self, digest: &Digest) -> Result<(File, PathBuf)> {
        let path = self.partial_path(digest);
        let dir = path.parent().expect("partial path has a parent");
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        loop {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive)
                .is_err()
            {
                tracing::info!(
                    "waiting for another imgbuild downloading to {}",
                    path.display()
                );
                rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)
                    .with_context(|| format!("locking {}", path.display()))?;
            }
            // The holder we waited for may have published (renamed) or removed the
            // file: only keep the lock if it is still on the file at `path`.
            let held = file
                .metadata()
                .with_context(|| format!("reading {}", path.display()))?;
            match fs::metadata(&path) {
                Ok(now) if now.ino() == held.ino() && now.dev() == held.dev() => {
                    return Ok((file, path))
                }
                _ => continue,
            }
        }
    }

    /// Makes a verified partial the blob: read-only, fsync, rename, fsync the directory.
    pub fn publish(&self, file: &File, partial: &Path, digest: &Digest) -> Result<PathBuf> {
        let blob = self.blob_path(digest);
        let dir = blob.parent().expect("blob path has a parent");
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        file.set_permissions(fs::Permissions::from_mode(0o444))
            .with_context(|| format!("making {} read-only", partial.display()))?;
        file.sync_all()
            .with_context(|| format!("syncing {}", partial.display()))?;
        fs::rename(partial, &blob)
            .with_context(|| format!("moving {} to {}", partial.display(), blob.display()))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", dir.display()))?;
        Ok(blob)
    }
}
