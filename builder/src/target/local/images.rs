//! Which baked images in `dist/` are usable as they are: an image is fresh
//! when its manifest exists, the image file has the manifest's size, every
//! artifact the recipe pins (inline digest or lock file) went in with that
//! digest, and the agent baked in is the static agent built now. Anything
//! else (missing, an input changed, an unpinned artifact, a rebuilt agent)
//! is stale and baked again.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::lock::{self, Lock};
use crate::model::recipe::{ImageKind, Recipe};

/// A baked image ready to use.
#[derive(Debug, Clone)]
pub struct Baked {
    pub path: PathBuf,
    /// From its manifest: the image file's sha256.
    pub sha256: String,
}

/// The image file and manifest paths `imgbuild bake` writes for `recipe`.
pub fn paths(recipe: &Recipe, dist: &Path) -> (PathBuf, PathBuf) {
    let ext = match recipe.kind {
        ImageKind::Lxc => "tar.zst",
        ImageKind::Vm => "qcow2",
    };
    (
        dist.join(format!("{}.{ext}", recipe.name)),
        dist.join(format!("{}.manifest.json", recipe.name)),
    )
}

/// `Ok(baked)` when `dist` holds a fresh bake of `recipe`, else `Err(why)`
/// saying what makes it stale.
pub fn fresh(
    recipe: &Recipe,
    dist: &Path,
    lock_path: &Path,
    agent: Option<&Path>,
) -> Result<std::result::Result<Baked, String>> {
    let (image, manifest) = paths(recipe, dist);
    let Ok(text) = std::fs::read_to_string(&manifest) else {
        return Ok(Err(format!("{} is missing", manifest.display())));
    };
    let m: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("reading {}", manifest.display()))?;
    let size = std::fs::metadata(&image).map(|m| m.len()).ok();
    if size.is_none() {
        return Ok(Err(format!("{} is missing", image.display())));
    }
    if size != m["output"]["size"].as_u64() {
        return Ok(Err(format!(
            "{} does not match its manifest's size",
            image.display()
        )));
    }
    let lock = Lock::load_or_empty(lock_path)?;
    let pinned = match lock::resolve(&recipe.artifacts(), &lock, false, |spec| {
        anyhow::bail!("`{}` is not pinned", spec.name)
    }) {
        Ok(p) => p,
        Err(e) => return Ok(Err(format!("{e:#}"))),
    };
    let inputs = m["inputs"].as_array().cloned().unwrap_or_default();
    for p in &pinned {
        let baked = inputs
            .iter()
            .find(|i| i["url"] == p.spec.url.as_str())
            .and_then(|i| i["digest"].as_str());
        if baked != Some(p.digest.to_string().as_str()) {
            return Ok(Err(format!(
                "artifact `{}` is pinned to {} but the image was baked with {}",
                p.spec.name,
                p.digest,
                baked.unwrap_or("none")
            )));
        }
    }
    if let Some(agent) = agent {
        let now = crate::bake::manifest::describe(agent)?.sha256;
        if m["agent"]["sha256"] != now.as_str() {
            return Ok(Err(format!(
                "the firstboot agent changed since the bake ({})",
                agent.display()
            )));
        }
    }
    let sha256 = m["output"]["sha256"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok(Ok(Baked {
        path: image,
        sha256,
    }))
}
