//! The manifest written next to every baked image: what went in (every input's
//! URL and digest, the agent's digest) and what came out (file, size, sha256).
//! It holds no timings, so the same inputs give the same manifest.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

#[derive(Debug, Serialize)]
pub struct Manifest {
    pub recipe: String,
    pub kind: &'static str,
    pub imgbuild_version: &'static str,
    pub output: Output,
    pub inputs: Vec<Input>,
    pub agent: Output,
    pub payload: PayloadSummary,
}

#[derive(Debug, Serialize)]
pub struct Output {
    pub file: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Serialize)]
pub struct Input {
    pub name: String,
    pub url: String,
    pub digest: String,
}

#[derive(Debug, Serialize)]
pub struct PayloadSummary {
    pub entries: usize,
    pub bytes: u64,
}

/// Size and sha256 of a file, streaming.
pub fn describe(path: &Path) -> Result<Output> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut h = Sha256::new();
    let size =
        std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(Output {
        file: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        size,
        sha256: hex::encode(h.finalize()),
    })
}

/// Writes `manifest` as pretty JSON to `path`, atomically.
pub fn write(manifest: &Manifest, path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    serde_json::to_writer_pretty(&mut tmp, manifest)?;
    tmp.write_all(b"\n")?;
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("writing manifest {}", path.display()))?;
    Ok(())
}
