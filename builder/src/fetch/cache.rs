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
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use super::hash::Hasher;
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

/// A cached blob that no longer hashes to its name: tampered with or corrupted
/// on disk. It has been removed from the cache, so the next fetch gets it anew.
#[derive(Debug, thiserror::Error)]
#[error(
    "cached {path} is corrupt: it hashes to {actual}, not {expected}; removed it from the \
     cache, run again to fetch it anew"
)]
pub struct CorruptBlob {
    pub path: String,
    pub expected: Digest,
    pub actual: Digest,
}

/// Opens a cached blob for reading and checks its digest on the way: the
/// returned reader hashes what it yields and, at end of file, fails with
/// [`CorruptBlob`] (an `InvalidData` I/O error) when the bytes are not the
/// blob's; [`BlobCheck::finish`] gives the verdict afterwards, hashing only the
/// tail a consumer left unread (a decompressor stopping at its end marker).
/// One pass over the bytes, the one the consumer makes anyway.
pub fn open_verified(path: &Path, digest: &Digest) -> Result<(VerifiedBlob, BlobCheck)> {
    let file = File::open(path).with_context(|| format!("opening cached {}", path.display()))?;
    let state = Arc::new(Mutex::new(CheckState {
        hasher: Hasher::new(digest.algo),
        len: 0,
        verdict: None,
    }));
    let shared = Shared {
        path: path.to_path_buf(),
        expected: digest.clone(),
        state,
    };
    Ok((
        VerifiedBlob {
            file,
            shared: shared.clone(),
        },
        BlobCheck { shared },
    ))
}

struct CheckState {
    hasher: Hasher,
    len: u64,
    /// `Some(None)`: verified; `Some(Some(actual))`: mismatch.
    verdict: Option<Option<Digest>>,
}

#[derive(Clone)]
struct Shared {
    path: PathBuf,
    expected: Digest,
    state: Arc<Mutex<CheckState>>,
}

impl Shared {
    /// Records the verdict for the bytes hashed so far (the whole file).
    fn conclude(&self, st: &mut CheckState) -> Result<(), CorruptBlob> {
        let verdict = st.verdict.get_or_insert_with(|| {
            let actual =
                std::mem::replace(&mut st.hasher, Hasher::new(self.expected.algo)).finish();
            if actual == self.expected {
                None
            } else {
                tracing::warn!(
                    "cached {} is corrupt (hashes to {actual}); removing it",
                    self.path.display()
                );
                if let Err(e) = fs::remove_file(&self.path) {
                    tracing::warn!("could not remove {}: {e}", self.path.display());
                }
                Some(actual)
            }
        });
        match verdict {
            None => Ok(()),
            Some(actual) => Err(CorruptBlob {
                path: self.path.display().to_string(),
                expected: self.expected.clone(),
                actual: actual.clone(),
            }),
        }
    }
}

/// The reading half of [`open_verified`].
pub struct VerifiedBlob {
    file: File,
    shared: Shared,
}

impl Read for VerifiedBlob {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read(buf)?;
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.verdict.is_some() {
            return Ok(n);
        }
        st.hasher.update(&buf[..n]);
        st.len += n as u64;
        if n == 0 && !buf.is_empty() {
            self.shared
                .conclude(&mut st)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        }
        Ok(n)
    }
}

/// The verdict half of [`open_verified`].
pub struct BlobCheck {
    shared: Shared,
}

impl BlobCheck {
    /// `Ok` when the blob's bytes are its digest's. Whatever the reader did not
    /// reach is read here (usually nothing).
    pub fn finish(self) -> Result<()> {
        let sh = &self.shared;
        let mut st = sh.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.verdict.is_none() {
            let mut f = File::open(&sh.path)
                .with_context(|| format!("opening cached {}", sh.path.display()))?;
            f.seek(SeekFrom::Start(st.len))
                .with_context(|| format!("reading cached {}", sh.path.display()))?;
            let mut buf = vec![0u8; super::BUF_SIZE];
            loop {
                let n = f
                    .read(&mut buf)
                    .with_context(|| format!("reading cached {}", sh.path.display()))?;
                if n == 0 {
                    break;
                }
                st.hasher.update(&buf[..n]);
                st.len += n as u64;
            }
        }
        sh.conclude(&mut st)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::DigestAlgo;

    fn blob(dir: &Path, bytes: &[u8]) -> (PathBuf, Digest) {
        let digest = super::super::hash::hash_reader(DigestAlgo::Sha256, bytes)
            .unwrap()
            .0;
        let p = dir.join(digest.hex());
        fs::write(&p, bytes).unwrap();
        (p, digest)
    }

    #[test]
    fn verified_read_passes_good_bytes() {
        let d = tempfile::tempdir().unwrap();
        let (p, digest) = blob(d.path(), b"good bytes");
        let (mut r, check) = open_verified(&p, &digest).unwrap();
        let mut out = Vec::new();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"good bytes");
        check.finish().unwrap();
        assert!(p.exists());
    }

    #[test]
    fn tampered_blob_fails_at_eof_and_is_removed() {
        let d = tempfile::tempdir().unwrap();
        let (p, digest) = blob(d.path(), b"good bytes");
        fs::write(&p, b"evil bytes").unwrap();
        let (mut r, check) = open_verified(&p, &digest).unwrap();
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("is corrupt"), "{err}");
        let err = check.finish().unwrap_err();
        assert!(err.downcast_ref::<CorruptBlob>().is_some(), "{err:#}");
        assert!(!p.exists(), "the corrupt blob is removed");
    }

    #[test]
    fn a_tail_the_reader_left_is_hashed_by_finish() {
        let d = tempfile::tempdir().unwrap();
        let (p, digest) = blob(d.path(), b"header+payload");
        let (r, check) = open_verified(&p, &digest).unwrap();
        let mut head = [0u8; 6];
        r.take(6).read_exact(&mut head).unwrap();
        check.finish().unwrap();
        fs::write(&p, b"header+PAYLOAD").unwrap();
        let (r, check) = open_verified(&p, &digest).unwrap();
        r.take(6).read_exact(&mut head).unwrap();
        assert!(check.finish().is_err());
    }
}
