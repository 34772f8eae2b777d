//! Unpacking artifact archives (Spark .tgz, Java .tar.gz) into payload trees.
//!
//! An archive is read once as a stream: regular files' bytes go into a staging
//! directory (`files/<n>`, numbered in archive order, so odd names and
//! file-vs-directory clashes cannot collide on the build host), and everything
//! else (modes, mtimes, symlinks, directories) into `manifest.json` beside them.
//! The staging directory is built under a temporary name and renamed into place
//! only when complete, so its existence with a readable manifest is the
//! completed-marker: a second bake rebuilds the [`Tree`] from the manifest
//! without decompressing anything.
//!
//! Owners are forced to root (0/0): artifact archives carry their builder's
//! uid, which means nothing in the guest. Hardlinks are resolved to files that
//! share one staged copy: [`NodeKind`] has no hardlink variant, and adding one
//! would make every bake (tar and ext4) handle link groups for a case the JRE
//! and Spark archives barely use; the cost is duplicated bytes in the image.
//!
//! [`open_decompressed`] is also how the LXC bake reads its base template.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::{default_mtime, normalize, FileSource, Node, NodeKind, Tree};

/// Compression of an archive, detected from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Xz,
    Zstd,
    /// A plain (uncompressed) tar.
    None,
}

/// Detects the compression from an archive's first bytes (at least 262 of them
/// to recognise a plain ustar/GNU tar). `None` when the format is unknown.
pub fn detect(head: &[u8]) -> Option<Compression> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(Compression::Xz)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else if head.len() >= 262 && &head[257..262] == b"ustar" {
        Some(Compression::None)
    } else {
        None
    }
}

/// Opens `path` and returns its decompressed tar stream, whatever the
/// compression (gzip including multi-member, xz including concatenated
/// streams, zstd including several and skippable frames, or none).
pub fn open_decompressed(path: &Path) -> Result<Box<dyn Read + Send>> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    decompress(file, path)
}

/// Like [`open_decompressed`], over any reader (a cached blob checked while it
/// is read); `path` names it in messages.
pub fn decompress(reader: impl Read + Send + 'static, path: &Path) -> Result<Box<dyn Read + Send>> {
    let mut buf = BufReader::with_capacity(1 << 20, reader);
    let head = buf
        .fill_buf()
        .with_context(|| format!("reading {}", path.display()))?;
    let kind = detect(head).with_context(|| {
        format!(
            "{}: not a tar archive (expected gzip, xz, zstd or plain tar by its first bytes)",
            path.display()
        )
    })?;
    Ok(match kind {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buf)),
        Compression::Xz => Box::new(xz2::bufread::XzDecoder::new_multi_decoder(buf)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(buf)
                .with_context(|| format!("starting zstd decoder for {}", path.display()))?,
        ),
        Compression::None => Box::new(buf),
    })
}

const MANIFEST: &str = "manifest.json";
const MANIFEST_VERSION: u32 = 1;

/// What the staging directory records about the archive, after stripping.
#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    version: u32,
    strip_components: u32,
    /// Mode and mtime for the destination directory itself.
    root_mode: u32,
    root_mtime: u64,
    /// Relative path (no leading `/`) to entry, sorted.
    entries: BTreeMap<String, Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Entry {
    Dir {
        mode: u32,
        mtime: u64,
    },
    File {
        mode: u32,
        mtime: u64,
        staged: String,
        len: u64,
    },
    Symlink {
        mtime: u64,
        target: String,
    },
}

/// Unpacks `archive` under guest directory `dest` (e.g. `/opt/spark`), dropping
/// the first `strip_components` path components like GNU tar's
/// `--strip-components`. File bytes are staged under `staging` (a directory per
/// archive digest in the cache); when `staging` already holds a completed unpack
/// with the same `strip_components`, it is reused.
///
/// The tree contains `dest` itself (mode and mtime of the stripped top
/// directory when there is one, else 0755) and every directory below it; the
/// parents of `dest` are expected to exist in the base.
///
/// Rejects absolute or `..` entry paths, symlinks whose target leaves `dest`,
/// entries below a symlink, hardlinks to files not seen before, and device
/// nodes or fifos (an artifact archive has no business carrying them).
pub fn unpack_into_tree(
    archive: &Path,
    dest: &str,
    strip_components: u32,
    staging: &Path,
) -> Result<Tree> {
    unpack_checked(archive, None, dest, strip_components, staging)
}

/// [`unpack_into_tree`] of a cached artifact whose bytes are checked against
/// `digest` while they are unpacked (nothing is staged if they differ).
pub fn unpack_blob_into_tree(
    archive: &Path,
    digest: &crate::artifact::Digest,
    dest: &str,
    strip_components: u32,
    staging: &Path,
) -> Result<Tree> {
    unpack_checked(archive, Some(digest), dest, strip_components, staging)
}

fn unpack_checked(
    archive: &Path,
    digest: Option<&crate::artifact::Digest>,
    dest: &str,
    strip_components: u32,
    staging: &Path,
) -> Result<Tree> {
    let dest = normalize(dest)?;
    if let Some(m) = read_manifest(staging)? {
        if m.strip_components == strip_components {
            tracing::debug!(staging = %staging.display(), "reusing unpacked archive");
            return tree_from_manifest(&dest, staging, &m);
        }
        tracing::info!(
            staging = %staging.display(),
            "staged unpack used another --strip-components; unpacking again"
        );
    }

    let parent = staging
        .parent()
        .with_context(|| format!("staging directory {} has no parent", staging.display()))?;
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let name = staging
        .file_name()
        .with_context(|| format!("staging directory {} has no name", staging.display()))?
        .to_string_lossy()
        .into_owned();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.tmp-"))
        .tempdir_in(parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;

    let manifest = match digest {
        None => unpack_stream(
            open_decompressed(archive)?,
            &dest,
            strip_components,
            tmp.path(),
        ),
        Some(digest) => {
            let (blob, check) = crate::fetch::cache::open_verified(archive, digest)?;
            let mut reader = decompress(blob, archive)?;
            let unpacked = unpack_stream(&mut reader, &dest, strip_components, tmp.path())
                .and_then(|m| {
                    // Whatever follows the tar's end marker is hashed too.
                    io::copy(&mut reader, &mut io::sink())?;
                    Ok(m)
                });
            // A tampered blob may fail to parse before its end: its digest is
            // then the reason to report.
            drop(reader);
            match (unpacked, check.finish()) {
                (_, Err(corrupt)) => Err(corrupt),
                (result, Ok(())) => result,
            }
        }
    }
    .with_context(|| format!("unpacking {}", archive.display()))?;
    let json = serde_json::to_vec(&manifest)?;
    let mpath = tmp.path().join(MANIFEST);
    fs::write(&mpath, json).with_context(|| format!("writing {}", mpath.display()))?;

    // One syncfs instead of an fsync per staged file: the rename below is the
    // completed-marker, so everything before it must be on disk.
    let dir =
        fs::File::open(tmp.path()).with_context(|| format!("opening {}", tmp.path().display()))?;
    rustix::fs::syncfs(&dir).with_context(|| format!("syncing {}", tmp.path().display()))?;

    // Replace a stale staging directory (another strip count, or a reader that
    // found no manifest), then publish ours with one rename.
    if staging.exists() {
        fs::remove_dir_all(staging)
            .with_context(|| format!("removing stale {}", staging.display()))?;
    }
    let tmp_path = tmp.keep();
    if let Err(e) = fs::rename(&tmp_path, staging) {
        let _ = fs::remove_dir_all(&tmp_path);
        // A concurrent bake may have published the same unpack first.
        match read_manifest(staging)? {
            Some(m) if m.strip_components == strip_components => {
                return tree_from_manifest(&dest, staging, &m)
            }
            _ => {
                return Err(e).with_context(|| {
                    format!("renaming {} to {}", tmp_path.display(), staging.display())
                })
            }
        }
    }
    if let Ok(d) = fs::File::open(parent) {
        d.sync_all()
            .with_context(|| format!("syncing directory {}", parent.display()))?;
    }
    tree_from_manifest(&dest, staging, &manifest)
}

fn read_manifest(staging: &Path) -> Result<Option<Manifest>> {
    let path = staging.join(MANIFEST);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    match serde_json::from_slice::<Manifest>(&bytes) {
        Ok(m) if m.version == MANIFEST_VERSION => Ok(Some(m)),
        // An older or damaged manifest: unpack again rather than fail.
        _ => Ok(None),
    }
}

fn tree_from_manifest(dest: &str, staging: &Path, m: &Manifest) -> Result<Tree> {
    // Again on reuse: the staged unpack may predate these checks, or have been
    // made for another destination (absolute link targets name it).
    for (rel, e) in &m.entries {
        if let Entry::Symlink { target, .. } = e {
            check_symlink(dest, rel, target, &m.entries)
                .with_context(|| format!("staged unpack {}", staging.display()))?;
        }
    }
    let mut tree = Tree::new();
    tree.insert(
        dest,
        Node {
            mode: m.root_mode,
            mtime: m.root_mtime,
            ..Node::dir(0)
        },
    )?;
    for (rel, e) in &m.entries {
        let path = format!("{dest}/{rel}");
        let node = match e {
            Entry::Dir { mode, mtime } => Node {
                mode: *mode,
                mtime: *mtime,
                ..Node::dir(0)
            },
            Entry::Symlink { mtime, target } => Node {
                mtime: *mtime,
                ..Node::symlink(target)
            },
            Entry::File {
                mode,
                mtime,
                staged,
                len,
            } => {
                let host = staging.join(staged);
                let actual = fs::metadata(&host)
                    .with_context(|| format!("staged file {} is missing", host.display()))?
                    .len();
                if actual != *len {
                    bail!(
                        "staged file {} has {actual} bytes, expected {len}; remove {} to unpack again",
                        host.display(),
                        staging.display()
                    );
                }
                Node {
                    kind: NodeKind::File(FileSource::Host {
                        path: host,
                        len: *len,
                    }),
                    mode: *mode,
                    uid: 0,
                    gid: 0,
                    mtime: *mtime,
                }
            }
        };
        tree.insert(&path, node)?;
    }
    Ok(tree)
}

/// Splits an archive path into components, rejecting absolute and `..` paths.
fn components(raw: &[u8]) -> Result<Vec<String>> {
    let s = std::str::from_utf8(raw).map_err(|_| {
        anyhow::anyhow!(
            "entry {:?}: path is not UTF-8",
            String::from_utf8_lossy(raw)
        )
    })?;
    if s.starts_with('/') {
        bail!("entry {s:?}: absolute paths are not allowed");
    }
    let mut out = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => bail!("entry {s:?}: `..` components are not allowed"),
            c => out.push(c.to_string()),
        }
    }
    Ok(out)
}

/// Symlinks followed while resolving one target at most, the kernel's limit.
const MAX_SYMLINK_HOPS: usize = 40;

/// Resolves symlink `target` of the entry at `rel` (relative to the
/// destination `dest`) the way the kernel will in the guest: component by
/// component, following the archive's own symlinks on the way. Each link alone
/// may stay inside `dest` while a chain leaves it (`x/b -> ..` and
/// `a -> x/b/../../etc/shadow`), so a lexical check is not enough. Errors when
/// the resolution leaves `dest` or loops.
fn check_symlink<'a>(
    dest: &str,
    rel: &'a str,
    target: &'a str,
    entries: &'a BTreeMap<String, Entry>,
) -> Result<()> {
    let escape = |via: Option<&str>| {
        let via = via.map_or(String::new(), |l| format!(" through the symlink {l:?}"));
        anyhow::anyhow!("entry {rel:?}: symlink target {target:?} leaves {dest}{via}")
    };
    // Where the walk is (components below `dest`) and the components still to
    // walk, last one first.
    let mut at: Vec<&str> = rel.split('/').collect();
    at.pop();
    let mut todo: Vec<&str> = Vec::new();
    enter_target(dest, &mut at, &mut todo, target).ok_or_else(|| escape(None))?;
    let mut hops = 0;
    let mut last_link = None;
    while let Some(c) = todo.pop() {
        match c {
            "" | "." => {}
            ".." => {
                if at.pop().is_none() {
                    return Err(escape(last_link));
                }
            }
            c => {
                at.push(c);
                let here = at.join("/");
                if let Some((link, Entry::Symlink { target: t, .. })) = entries.get_key_value(&here)
                {
                    hops += 1;
                    if hops > MAX_SYMLINK_HOPS {
                        bail!("entry {rel:?}: symlink target {target:?} loops (more than {MAX_SYMLINK_HOPS} links on the way)");
                    }
                    at.pop();
                    last_link = Some(link.as_str());
                    enter_target(dest, &mut at, &mut todo, t).ok_or_else(|| escape(last_link))?;
                }
            }
        }
    }
    Ok(())
}

/// Starts walking symlink target `t`: a relative one from `at` (the link's
/// directory), an absolute one from `dest`; `None` when an absolute target
/// is not under `dest`.
fn enter_target<'a>(
    dest: &str,
    at: &mut Vec<&'a str>,
    todo: &mut Vec<&'a str>,
    t: &'a str,
) -> Option<()> {
    let rest = match t.strip_prefix('/') {
        Some(abs) => {
            let under = abs.strip_prefix(dest.trim_start_matches('/'))?;
            if !(under.is_empty() || under.starts_with('/')) {
                return None;
            }
            at.clear();
            under
        }
        None => t,
    };
    todo.extend(rest.split('/').rev());
    Some(())
}

fn unpack_stream(reader: impl Read, dest: &str, strip: u32, tmp: &Path) -> Result<Manifest> {
    let files_dir = tmp.join("files");
    fs::create_dir(&files_dir).with_context(|| format!("creating {}", files_dir.display()))?;
    let mut ar = tar::Archive::new(reader);
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut root_mode = 0o755;
    let mut root_mtime = default_mtime();
    let mut staged = 0u64;
    // Symlinks so far: a later entry below one would be written through it.
    let mut symlinks: HashSet<String> = HashSet::new();

    for entry in ar.entries().context("reading tar entries")? {
        let mut entry = entry.context("reading a tar entry")?;
        let header = entry.header();
        let ty = header.entry_type();
        if ty.is_pax_global_extensions() {
            continue;
        }
        let raw_path = entry.path_bytes().into_owned();
        let comps = components(&raw_path)?;
        let shown = String::from_utf8_lossy(&raw_path).into_owned();
        let mode = header
            .mode()
            .with_context(|| format!("entry {shown:?}: bad mode"))?
            & 0o7777;
        let mtime = header
            .mtime()
            .with_context(|| format!("entry {shown:?}: bad mtime"))?;
        if comps.len() <= strip as usize {
            if comps.len() == strip as usize && ty.is_dir() {
                root_mode = mode;
                root_mtime = mtime;
            }
            continue;
        }
        let rel = comps[strip as usize..].join("/");
        let mut prefix = String::new();
        for c in &comps[strip as usize..comps.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(c);
            if symlinks.contains(&prefix) {
                bail!("entry {shown:?} lies below symlink {prefix:?}");
            }
        }
        let e = if ty.is_dir() {
            Entry::Dir { mode, mtime }
        } else if ty.is_file() || ty.is_contiguous() || ty.is_gnu_sparse() {
            staged += 1;
            let name = format!("files/{staged:06}");
            let path = tmp.join(&name);
            let mut out =
                fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
            let len = io::copy(&mut entry, &mut out)
                .with_context(|| format!("entry {shown:?}: copying to {}", path.display()))?;
            Entry::File {
                mode,
                mtime,
                staged: name,
                len,
            }
        } else if ty.is_symlink() {
            let target = entry
                .link_name_bytes()
                .with_context(|| format!("entry {shown:?}: symlink without a target"))?;
            let target = String::from_utf8(target.into_owned())
                .map_err(|_| anyhow::anyhow!("entry {shown:?}: symlink target is not UTF-8"))?;
            symlinks.insert(rel.clone());
            Entry::Symlink { mtime, target }
        } else if ty.is_hard_link() {
            let target = entry
                .link_name_bytes()
                .with_context(|| format!("entry {shown:?}: hardlink without a target"))?;
            let tcomps =
                components(&target).with_context(|| format!("entry {shown:?}: hardlink target"))?;
            if tcomps.len() <= strip as usize {
                bail!("entry {shown:?}: hardlink target is stripped away");
            }
            let trel = tcomps[strip as usize..].join("/");
            match entries.get(&trel) {
                Some(e @ (Entry::File { .. } | Entry::Symlink { .. })) => e.clone(),
                _ => bail!(
                    "entry {shown:?}: hardlink target {:?} is not a file earlier in the archive",
                    String::from_utf8_lossy(&target)
                ),
            }
        } else {
            bail!(
                "entry {shown:?}: unsupported entry type {:?} in an artifact archive",
                ty
            );
        };
        if !matches!(e, Entry::Symlink { .. }) {
            symlinks.remove(&rel);
        }
        entries.insert(rel, e);
    }

    // Archives may omit directory entries; invent the missing ones so every
    // node's parent is in the tree (the bakes do not invent directories).
    let mut missing = Vec::new();
    for rel in entries.keys() {
        let mut p = rel.as_str();
        while let Some((parent, _)) = p.rsplit_once('/') {
            if !entries.contains_key(parent) {
                missing.push(parent.to_string());
            }
            p = parent;
        }
    }
    for rel in missing {
        entries.insert(
            rel,
            Entry::Dir {
                mode: 0o755,
                mtime: default_mtime(),
            },
        );
    }
    for (rel, e) in &entries {
        if let Some((parent, _)) = rel.rsplit_once('/') {
            if !matches!(entries.get(parent), Some(Entry::Dir { .. })) {
                bail!("entry {rel:?}: its parent {parent:?} is not a directory");
            }
        }
        // Through the whole tree: a link may point through one that comes later
        // in the archive, and a hardlink copies a symlink to another place.
        if let Entry::Symlink { target, .. } = e {
            check_symlink(dest, rel, target, &entries)?;
        }
    }
    Ok(Manifest {
        version: MANIFEST_VERSION,
        strip_components: strip,
        root_mode,
        root_mtime,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::PathBuf;

    /// A raw tar entry; paths are written verbatim (the tar crate refuses `..`).
    fn entry(
        b: &mut tar::Builder<Vec<u8>>,
        path: &str,
        ty: tar::EntryType,
        mode: u32,
        link: &str,
        data: &[u8],
    ) {
        let mut h = tar::Header::new_gnu();
        h.as_mut_bytes()[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(ty);
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(1_600_000_000);
        h.set_size(data.len() as u64);
        if !link.is_empty() {
            h.set_link_name_literal(link).unwrap();
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    }

    fn spark_like() -> Vec<u8> {
        use tar::EntryType as T;
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "top/", T::Directory, 0o750, "", b"");
        entry(&mut b, "top/bin/", T::Directory, 0o755, "", b"");
        entry(&mut b, "top/bin/run", T::Regular, 0o755, "", b"#!/bin/sh\n");
        entry(&mut b, "top/lib/a.jar", T::Regular, 0o644, "", b"jar bytes");
        entry(
            &mut b,
            "top/lib/b.jar",
            T::Link,
            0o644,
            "top/lib/a.jar",
            b"",
        );
        entry(
            &mut b,
            "top/bin/jar",
            T::Symlink,
            0o777,
            "../lib/a.jar",
            b"",
        );
        b.into_inner().unwrap()
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.join(name);
        fs::write(&p, bytes).unwrap();
        p
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn unpacks_strips_and_reuses() {
        let d = tempfile::tempdir().unwrap();
        let ar = write(d.path(), "spark.tgz", &gz(&spark_like()));
        let staging = d.path().join("unpacked/abc");
        let tree = unpack_into_tree(&ar, "/opt/spark", 1, &staging).unwrap();
        let paths: Vec<_> = tree.iter().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            [
                "/opt/spark",
                "/opt/spark/bin",
                "/opt/spark/bin/jar",
                "/opt/spark/bin/run",
                "/opt/spark/lib",
                "/opt/spark/lib/a.jar",
                "/opt/spark/lib/b.jar"
            ]
        );
        let root = tree.get("/opt/spark").unwrap();
        assert_eq!((root.mode, root.mtime), (0o750, 1_600_000_000));
        let run = tree.get("/opt/spark/bin/run").unwrap();
        assert_eq!(
            (run.mode, run.uid, run.gid, run.mtime),
            (0o755, 0, 0, 1_600_000_000)
        );
        // The invented directory gets 0755; the hardlink shares the staged file.
        assert_eq!(tree.get("/opt/spark/lib").unwrap().mode, 0o755);
        let host = |p: &str| match &tree.get(p).unwrap().kind {
            NodeKind::File(FileSource::Host { path, len }) => (path.clone(), *len),
            k => panic!("{p}: {k:?}"),
        };
        assert_eq!(host("/opt/spark/lib/a.jar"), host("/opt/spark/lib/b.jar"));
        assert_eq!(
            fs::read(host("/opt/spark/lib/a.jar").0).unwrap(),
            b"jar bytes"
        );
        assert!(
            matches!(&tree.get("/opt/spark/bin/jar").unwrap().kind, NodeKind::Symlink(t) if t == "../lib/a.jar")
        );

        // Second time: the archive is not read at all.
        fs::remove_file(&ar).unwrap();
        let again = unpack_into_tree(&ar, "/opt/spark", 1, &staging).unwrap();
        assert_eq!(again.len(), tree.len());
        // A different strip count needs the archive again.
        assert!(unpack_into_tree(&ar, "/opt/spark", 0, &staging).is_err());
        // No temporary directories are left beside the staging directory.
        assert_eq!(fs::read_dir(staging.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn detects_compression_by_magic_not_name() {
        let d = tempfile::tempdir().unwrap();
        let tar = spark_like();
        let xz = {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(&tar).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::encode_all(&tar[..], 1).unwrap();
        for (i, bytes) in [tar.clone(), gz(&tar), xz, zst].iter().enumerate() {
            let ar = write(d.path(), &format!("misnamed{i}.zip"), bytes);
            let t = unpack_into_tree(&ar, "/opt/x", 1, &d.path().join(format!("s{i}"))).unwrap();
            assert_eq!(t.len(), 7, "format {i}");
        }
        let junk = write(d.path(), "junk.tgz", b"not an archive at all");
        let err = unpack_into_tree(&junk, "/opt/x", 1, &d.path().join("sj")).unwrap_err();
        assert!(format!("{err:#}").contains("not a tar archive"), "{err:#}");
    }

    #[test]
    fn rejects_escapes() {
        use tar::EntryType as T;
        let d = tempfile::tempdir().unwrap();
        let cases: &[(&str, T, &str, &str)] = &[
            ("top/../evil", T::Regular, "", "`..`"),
            ("/abs", T::Regular, "", "absolute"),
            ("top/esc", T::Symlink, "../../etc/passwd", "leaves /opt/x"),
            ("top/abs", T::Symlink, "/etc/passwd", "leaves /opt/x"),
            ("top/hl", T::Link, "top/missing", "not a file earlier"),
            ("top/dev", T::Char, "", "unsupported entry type"),
        ];
        for (i, (path, ty, link, want)) in cases.iter().enumerate() {
            let mut b = tar::Builder::new(Vec::new());
            entry(&mut b, "top/", T::Directory, 0o755, "", b"");
            entry(&mut b, path, *ty, 0o644, link, b"");
            let ar = write(d.path(), &format!("bad{i}.tar"), &b.into_inner().unwrap());
            let staging = d.path().join(format!("s{i}"));
            let err = unpack_into_tree(&ar, "/opt/x", 1, &staging).unwrap_err();
            assert!(format!("{err:#}").contains(want), "{path}: {err:#}");
            assert!(!staging.exists());
        }
        // Inside the destination is fine, relative or absolute.
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "top/a/", T::Directory, 0o755, "", b"");
        entry(&mut b, "top/a/up", T::Symlink, 0o777, "../a/./x", b"");
        entry(&mut b, "top/a/abs", T::Symlink, 0o777, "/opt/x/a", b"");
        let ar = write(d.path(), "ok.tar", &b.into_inner().unwrap());
        unpack_into_tree(&ar, "/opt/x", 1, &d.path().join("ok")).unwrap();
    }

    /// Unpacks entries (after a `top/` directory) into `/opt/x`.
    fn unpack_entries(
        d: &Path,
        name: &str,
        entries: &[(&str, tar::EntryType, &str)],
    ) -> Result<Tree> {
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "top/", tar::EntryType::Directory, 0o755, "", b"");
        for (path, ty, link) in entries {
            entry(&mut b, path, *ty, 0o777, link, b"");
        }
        let ar = write(d, &format!("{name}.tar"), &b.into_inner().unwrap());
        unpack_into_tree(&ar, "/opt/x", 1, &d.join(name))
    }

    #[test]
    fn rejects_symlink_chains_that_leave_the_destination() {
        use tar::EntryType as T;
        let d = tempfile::tempdir().unwrap();
        // Each link alone stays inside /opt/x; resolved through `x/b` (which
        // is /opt/x itself) the second climbs to / and reaches /etc/shadow.
        let chain = [
            ("top/x/", T::Directory, ""),
            ("top/x/b", T::Symlink, ".."),
            ("top/a", T::Symlink, "x/b/../../etc/shadow"),
        ];
        type Entries<'a> = Vec<(&'a str, T, &'a str)>;
        let cases: Vec<(&str, Entries, &str)> = vec![
            ("chain", chain.to_vec(), "leaves /opt/x through the symlink \"x/b\""),
            // The link it goes through may come later in the archive.
            ("chain-later", vec![chain[2], chain[0], chain[1]], "through the symlink"),
            (
                "chain-absolute",
                vec![
                    chain[0],
                    chain[1],
                    ("top/a", T::Symlink, "/opt/x/x/b/../../etc/shadow"),
                ],
                "through the symlink",
            ),
            // Through two links: y -> x/b -> /opt/x, then up.
            (
                "chain-of-links",
                vec![
                    chain[0],
                    chain[1],
                    ("top/y", T::Symlink, "x/b"),
                    ("top/z", T::Symlink, "y/../etc"),
                ],
                "entry \"z\": symlink target \"y/../etc\" leaves /opt/x through the symlink \"x/b\"",
            ),
            // A hardlink copies a symlink to a place where its target means
            // something else: `..` from x/ is /opt/x, from the top it is /opt.
            (
                "hardlinked-symlink",
                vec![chain[0], chain[1], ("top/h", T::Link, "top/x/b")],
                "entry \"h\": symlink target \"..\" leaves /opt/x",
            ),
            (
                "loop",
                vec![("top/l1", T::Symlink, "l2/f"), ("top/l2", T::Symlink, "l1")],
                "loops",
            ),
        ];
        for (name, entries, want) in cases {
            let err = unpack_entries(d.path(), name, &entries).unwrap_err();
            assert!(format!("{err:#}").contains(want), "{name}: {err:#}");
            assert!(!d.path().join(name).exists(), "{name}");
        }
        // Chains that stay inside are fine, in any order.
        unpack_entries(
            d.path(),
            "ok",
            &[
                ("top/bin/jar", T::Symlink, "../lib/a.jar"),
                ("top/lib", T::Symlink, "real/lib"),
                ("top/real/lib/", T::Directory, ""),
                ("top/real/up", T::Symlink, ".."),
                ("top/real/self", T::Symlink, "up/real/up/real"),
                ("top/abs", T::Symlink, "/opt/x/real/up/lib"),
            ],
        )
        .unwrap();
    }

    #[test]
    fn rechecks_symlinks_of_a_reused_unpack() {
        let d = tempfile::tempdir().unwrap();
        let staging = d.path().join("staged");
        fs::create_dir_all(&staging).unwrap();
        let link = |target: &str| Entry::Symlink {
            mtime: 0,
            target: target.into(),
        };
        let dir = Entry::Dir {
            mode: 0o755,
            mtime: 0,
        };
        let write_manifest = |entries: Vec<(&str, Entry)>| {
            let m = Manifest {
                version: MANIFEST_VERSION,
                strip_components: 1,
                root_mode: 0o755,
                root_mtime: 0,
                entries: entries.into_iter().map(|(k, v)| (k.into(), v)).collect(),
            };
            fs::write(staging.join(MANIFEST), serde_json::to_vec(&m).unwrap()).unwrap();
        };
        // Staged before chains were resolved: reusing it must not skip the check.
        write_manifest(vec![
            ("x", dir.clone()),
            ("x/b", link("..")),
            ("a", link("x/b/../../etc/shadow")),
        ]);
        let gone = d.path().join("not-needed.tgz");
        let err = unpack_into_tree(&gone, "/opt/x", 1, &staging).unwrap_err();
        assert!(format!("{err:#}").contains("leaves /opt/x"), "{err:#}");
        // Staged for /opt/x, reused for /opt/y: the absolute link now leaves.
        write_manifest(vec![("x", dir), ("l", link("/opt/x/x"))]);
        unpack_into_tree(&gone, "/opt/x", 1, &staging).unwrap();
        let err = unpack_into_tree(&gone, "/opt/y", 1, &staging).unwrap_err();
        assert!(format!("{err:#}").contains("leaves /opt/y"), "{err:#}");
    }

    #[test]
    fn rejects_entries_below_symlinks() {
        use tar::EntryType as T;
        let d = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        entry(&mut b, "top/link", T::Symlink, 0o777, ".", b"");
        entry(&mut b, "top/link/f", T::Regular, 0o644, "", b"x");
        let ar = write(d.path(), "s.tar", &b.into_inner().unwrap());
        let err = unpack_into_tree(&ar, "/opt/x", 1, &d.path().join("s")).unwrap_err();
        assert!(format!("{err:#}").contains("below symlink"), "{err:#}");
    }
}
