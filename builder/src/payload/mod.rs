//! The payload: the files a bake adds to a base image, as an abstract tree of
//! guest paths. Both bakes consume the same tree (the LXC bake as tar entries,
//! the VM bake as ext4 writes), so the two images carry the same bytes.

pub mod archive;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Result};

/// Modification time given to generated payload entries, so bakes are
/// reproducible: `SOURCE_DATE_EPOCH` when set, else 2024-01-01T00:00:00Z.
pub fn default_mtime() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_704_067_200)
}

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
pub enum FileSource {
    /// Generated content (unit files, the seed).
    Bytes(Arc<[u8]>),
    /// A file on the build host (the agent, an unpacked artifact); read at write time.
    Host { path: PathBuf, len: u64 },
    /// A verified artifact in the cache, named by its digest; the bytes are
    /// checked against it again as they are read (a tampered cache is caught).
    Blob {
        path: PathBuf,
        len: u64,
        digest: crate::artifact::Digest,
    },
}

impl FileSource {
    pub fn len(&self) -> u64 {
        match self {
            FileSource::Bytes(b) => b.len() as u64,
            FileSource::Host { len, .. } | FileSource::Blob { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Opens the content for streaming.
    pub fn open(&self) -> Result<Box<dyn std::io::Read + '_>> {
        use anyhow::Context;
        Ok(match self {
            FileSource::Bytes(b) => Box::new(&b[..]),
            FileSource::Host { path, .. } => Box::new(
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
            ),
            // Fails with the cache's CorruptBlob at end of file when the bytes differ.
            FileSource::Blob { path, digest, .. } => {
                Box::new(crate::fetch::cache::open_verified(path, digest)?.0)
            }
        })
    }

    /// The host file this content is read from, if any.
    pub fn host_path(&self) -> Option<&Path> {
        match self {
            FileSource::Bytes(_) => None,
            FileSource::Host { path, .. } | FileSource::Blob { path, .. } => Some(path),
        }
    }
}

#[derive(Debug, Clone)]
pub enum NodeKind {
    Dir,
    File(FileSource),
    Symlink(String),
}

/// One entry of the payload tree.
#[derive(Debug, Clone)]
pub struct Node {
    pub kind: NodeKind,
    /// Permission bits including setuid/setgid/sticky (no file-type bits).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: u64,
}

impl Node {
    pub fn dir(mode: u32) -> Self {
        Node {
            kind: NodeKind::Dir,
            mode,
            uid: 0,
            gid: 0,
            mtime: default_mtime(),
        }
    }

    pub fn bytes(content: impl Into<Arc<[u8]>>, mode: u32) -> Self {
        Node {
            kind: NodeKind::File(FileSource::Bytes(content.into())),
            mode,
            uid: 0,
            gid: 0,
            mtime: default_mtime(),
        }
    }

    pub fn host_file(path: &Path, mode: u32) -> Result<Self> {
        use anyhow::Context;
        let len = std::fs::metadata(path)
            .with_context(|| format!("reading metadata of {}", path.display()))?
            .len();
        Ok(Node {
            kind: NodeKind::File(FileSource::Host {
                path: path.to_path_buf(),
                len,
            }),
            mode,
            uid: 0,
            gid: 0,
            mtime: default_mtime(),
        })
    }

    /// A cached artifact as a file; its digest is checked while the bake reads it.
    pub fn cached_blob(path: &Path, mode: u32, digest: &crate::artifact::Digest) -> Result<Self> {
        let mut node = Node::host_file(path, mode)?;
        let len = match &node.kind {
            NodeKind::File(src) => src.len(),
            _ => 0,
        };
        node.kind = NodeKind::File(FileSource::Blob {
            path: path.to_path_buf(),
            len,
            digest: digest.clone(),
        });
        Ok(node)
    }

    pub fn symlink(target: &str) -> Self {
        Node {
            kind: NodeKind::Symlink(target.to_string()),
            mode: 0o777,
            uid: 0,
            gid: 0,
            mtime: default_mtime(),
        }
    }
}

/// Guest paths (absolute, normalized, no `..`) to nodes, in sorted order, so
/// iterating yields parents before children and the output is deterministic.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    nodes: BTreeMap<String, Node>,
}

impl Tree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `node` at absolute guest path `path`. Missing parent directories are
    /// NOT invented: the caller adds each directory it creates, so modes and
    /// owners of every new directory are deliberate. Existing base directories
    /// (`/opt`, `/usr/local/bin`) need not be listed.
    pub fn insert(&mut self, path: &str, node: Node) -> Result<()> {
        let path = normalize(path)?;
        self.nodes.insert(path, node);
        Ok(())
    }

    pub fn get(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    /// Entries sorted by path (parents first).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.nodes.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Total bytes of file content.
    pub fn content_bytes(&self) -> u64 {
        self.nodes
            .values()
            .map(|n| match &n.kind {
                NodeKind::File(s) => s.len(),
                _ => 0,
            })
            .sum()
    }

    /// Merges another tree in; entries of `other` win.
    pub fn extend(&mut self, other: Tree) {
        self.nodes.extend(other.nodes);
    }
}

/// Checks and normalizes an absolute guest path: `/a//b/./c/` becomes `/a/b/c`.
pub fn normalize(path: &str) -> Result<String> {
    if !path.starts_with('/') {
        bail!("guest path {path:?} must be absolute");
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => bail!("guest path {path:?} must not contain `..`"),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        bail!("guest path {path:?} names the root directory");
    }
    Ok(format!("/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_paths() {
        assert_eq!(normalize("/a//b/./c/").unwrap(), "/a/b/c");
        assert!(normalize("a/b").is_err());
        assert!(normalize("/a/../b").is_err());
        assert!(normalize("/").is_err());
    }

    #[test]
    fn tree_is_sorted_parents_first() {
        let mut t = Tree::new();
        t.insert("/opt/spark/bin/x", Node::bytes(&b"x"[..], 0o755))
            .unwrap();
        t.insert("/opt/spark", Node::dir(0o755)).unwrap();
        t.insert("/opt/spark/bin", Node::dir(0o755)).unwrap();
        let order: Vec<_> = t.iter().map(|(p, _)| p).collect();
        assert_eq!(order, ["/opt/spark", "/opt/spark/bin", "/opt/spark/bin/x"]);
        assert_eq!(t.content_bytes(), 1);
    }
}
