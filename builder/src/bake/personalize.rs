//! Per-guest personalization of a baked LXC template: a copy with the guest's
//! seed at `./etc/imgbuild/seed.yaml` (0600 root:root, in a 0700 directory when
//! the template lacks one). Deploy runs it once per container.
//!
//! Fast path: a template from [`lxc::bake`](super::lxc::bake) ends with an
//! index saying where its entries frame ends; that frame is copied verbatim
//! (`copy_file_range`, so no decompression and, on CoW filesystems, often no
//! data copy) and only a small new frame with the seed and the end-of-archive
//! marker is compressed. Personalizing an already personalized template
//! replaces its seed the same way. Any other template goes through the full
//! streaming bake with a two-node payload, which also drops an existing seed.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use super::lxc::{self, encoder, Counting, Index, TarOut, SEED_DIR, SEED_PATH};
use crate::fsutil::AtomicFile;
use crate::payload::{Node, Tree};

/// Writes `out`, a copy of `template` with `seed_yaml` as the guest's seed.
/// The output is mode 0600 (it carries the guest's credentials), written
/// atomically, and the same for the same inputs.
pub fn personalize(template: &Path, seed_yaml: &[u8], out: &Path) -> Result<()> {
    let seed = Node::bytes(Arc::<[u8]>::from(seed_yaml), 0o600);
    let file =
        std::fs::File::open(template).with_context(|| format!("opening {}", template.display()))?;
    let index = Index::read(&file).with_context(|| format!("reading {}", template.display()))?;
    match index {
        Some(index) if index.seed_ready => fast(&file, index, &seed, out).with_context(|| {
            format!(
                "personalizing {} into {}",
                template.display(),
                out.display()
            )
        }),
        _ => {
            tracing::info!(
                template = %template.display(),
                "template has no imgbuild index; personalizing by a full re-bake"
            );
            let mut tree = Tree::new();
            tree.insert(SEED_DIR, Node::dir(0o700))?;
            tree.insert(SEED_PATH, seed)?;
            lxc::bake_with_mode(template, &tree, out, 0o600)?;
            Ok(())
        }
    }
}

fn fast(template: &std::fs::File, index: Index, seed: &Node, out: &Path) -> Result<()> {
    let mut atomic = AtomicFile::create(out, 0o600)?;
    let copied = io::copy(&mut Read::take(template, index.main_end), atomic.file())
        .context("copying the template's entries")?;
    if copied != index.main_end {
        bail!(
            "template is shorter than its index says ({copied} of {} bytes)",
            index.main_end
        );
    }
    {
        let w = io::BufWriter::new(atomic.file());
        let mut tar = TarOut {
            w: encoder(Counting { inner: w, count: 0 })?,
            pos: index.main_tar_len,
        };
        if !index.has_seed_dir {
            tar.write_node(index.dot, SEED_DIR, &Node::dir(0o700))?;
        }
        tar.write_node(index.dot, SEED_PATH, seed)?;
        tar.finish_archive()?;
        let mut counting = tar.w.finish().context("finishing the zstd frame")?;
        counting.write_all(&index.encode())?;
        counting
            .inner
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", out.display()))?;
    }
    atomic.commit()?;
    Ok(())
}
