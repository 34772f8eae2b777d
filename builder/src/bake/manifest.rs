//! The manifest written next to every baked image: what went in (every input's
//! URL and digest, the agent's digest) and what came out (file, size, sha256).
//! It holds no timings, so the same inputs give the same manifest.

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
    let mut json = serde_json::to_vec_pretty(manifest)?;
    json.push(b'\n');
    crate::fsutil::write_atomic(path, &json, 0o644)
}
