//! The payload of a recipe: its artifacts placed where the recipe says, plus
//! what every image carries (the static `firstboot` agent, its unit and the
//! unit's enable link). Both bakes consume the tree this builds.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::fetch::Fetched;
use crate::model::recipe::{Install, Recipe};
use crate::payload::{archive, Node, Tree};

/// Builds the payload tree. `fetched` holds the recipe's payload artifacts (the
/// base may be among them; it is skipped). Archives are unpacked once into
/// `<cache>/unpacked/<algo>-<hex>` and reused by later bakes.
pub fn payload_tree(
    recipe: &Recipe,
    fetched: &[Fetched],
    agent: &Path,
    cache: &Path,
) -> Result<Tree> {
    let mut tree = Tree::new();
    for item in &recipe.payload {
        let f = fetched
            .iter()
            .find(|f| f.spec.url == item.artifact.url)
            .with_context(|| format!("artifact `{}` was not fetched", item.artifact.name))?;
        match &item.install {
            Install::File { path, mode } => {
                tree.insert(path, Node::cached_blob(&f.path, *mode, &f.digest)?)?;
            }
            Install::Unpack {
                to,
                strip_components,
            } => {
                let staging = cache.join("unpacked").join(format!(
                    "{}-{}",
                    f.digest.algo.name(),
                    f.digest.hex()
                ));
                let sub = archive::unpack_blob_into_tree(
                    &f.path,
                    &f.digest,
                    to,
                    *strip_components,
                    &staging,
                )
                .with_context(|| {
                    format!("unpacking artifact `{}` into {to}", item.artifact.name)
                })?;
                tree.extend(sub);
            }
        }
    }
    add_agent(&mut tree, agent)?;
    Ok(tree)
}

/// The agent, its unit, the unit's enable link and the seed directory.
pub fn add_agent(tree: &mut Tree, agent: &Path) -> Result<()> {
    ensure_static(agent)?;
    tree.insert(imgbuild_seed::AGENT_PATH, Node::host_file(agent, 0o755)?)?;
    let unit = format!("/etc/systemd/system/{}", imgbuild_seed::UNIT_NAME);
    tree.insert(
        &unit,
        Node::bytes(imgbuild_seed::UNIT_FILE.as_bytes(), 0o644),
    )?;
    tree.insert(
        &format!(
            "/etc/systemd/system/multi-user.target.wants/{}",
            imgbuild_seed::UNIT_NAME
        ),
        Node::symlink(&format!("../{}", imgbuild_seed::UNIT_NAME)),
    )?;
    tree.insert("/etc/imgbuild", Node::dir(0o700))?;
    Ok(())
}

/// Where the static agent is when `--agent` is not given: `$IMGBUILD_AGENT`,
/// then the static build next to this executable's target directory
/// (`target/x86_64-unknown-linux-gnu/release/firstboot`, what
/// `firstboot/build-static.sh` writes), then `firstboot` beside the executable.
pub fn find_agent() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("IMGBUILD_AGENT") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe().context("locating the imgbuild executable")?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let candidates = [
        dir.join("../x86_64-unknown-linux-gnu/release/firstboot"),
        dir.join("../../x86_64-unknown-linux-gnu/release/firstboot"),
        dir.join("firstboot"),
    ];
    for c in &candidates {
        if c.is_file() && ensure_static(c).is_ok() {
            return Ok(c.clone());
        }
    }
    bail!(
        "no statically linked firstboot agent found (looked at $IMGBUILD_AGENT and {}); \
         build it with firstboot/build-static.sh or pass --agent PATH",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// The agent runs in whatever userland the base has: it must not need a
/// dynamic loader. Checks the ELF header for an x86-64 executable without
/// a PT_INTERP program header.
pub fn ensure_static(path: &Path) -> Result<()> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("opening agent {}", path.display()))?;
    let mut head = Vec::new();
    f.by_ref().take(64 * 1024).read_to_end(&mut head)?;
    match elf_interp(&head) {
        Some(false) => Ok(()),
        Some(true) => bail!(
            "agent {} is dynamically linked; build the static one with firstboot/build-static.sh",
            path.display()
        ),
        None => bail!("agent {} is not an x86-64 ELF executable", path.display()),
    }
}

/// `Some(has_interp)` for a 64-bit little-endian x86-64 ELF, else `None`.
fn elf_interp(b: &[u8]) -> Option<bool> {
    if b.len() < 64 || &b[..4] != b"\x7fELF" || b[4] != 2 || b[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]) as usize;
    if u16_at(18) != 62 {
        return None; // EM_X86_64
    }
    let phoff = u64::from_le_bytes(b[32..40].try_into().ok()?) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    let mut interp = false;
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        let t = b.get(o..o + 4)?;
        if u32::from_le_bytes(t.try_into().ok()?) == 3 {
            interp = true; // PT_INTERP
        }
    }
    Some(interp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_host_binaries_are_refused() {
        // /bin/sh on any Debian/Ubuntu is dynamically linked.
        let e = ensure_static(Path::new("/bin/sh")).unwrap_err().to_string();
        assert!(e.contains("dynamically linked"), "{e}");
        let e = ensure_static(Path::new("/etc/hostname"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an x86-64 ELF"), "{e}");
    }
}
