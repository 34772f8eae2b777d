//! System users and groups: created with shadow-utils when missing, looked up
//! by parsing the guest's /etc/passwd and /etc/group (no NSS: see `http`).

use crate::fsutil::under;
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

/// Creates system accounts (behind a trait so unit tests never touch the host).
pub trait Accounts {
    /// Ensures a system group `name` and a system user `name` in it, with
    /// `home` as home (not created) and no login shell.
    fn ensure_user(&mut self, root: &Path, name: &str, home: &str) -> Result<bool>;
}

/// Looks up a user's uid in `<root>/etc/passwd`.
pub fn uid(root: &Path, name: &str) -> Result<Option<u32>> {
    id_in(root, "/etc/passwd", name)
}

/// Looks up a group's gid in `<root>/etc/group`.
pub fn gid(root: &Path, name: &str) -> Result<Option<u32>> {
    id_in(root, "/etc/group", name)
}

fn id_in(root: &Path, file: &str, name: &str) -> Result<Option<u32>> {
    if name == "root" {
        return Ok(Some(0));
    }
    let p = under(root, file);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
    };
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() >= 3 && f[0] == name {
            return f[2]
                .parse()
                .map(Some)
                .with_context(|| format!("bad id for {name} in {}", p.display()));
        }
    }
    Ok(None)
}

/// groupadd/useradd from the guest's shadow-utils.
pub struct Shadow;

impl Accounts for Shadow {
    fn ensure_user(&mut self, root: &Path, name: &str, home: &str) -> Result<bool> {
        let prefix: Vec<String> = if root == Path::new("/") {
            vec![]
        } else {
            vec!["--root".into(), root.display().to_string()]
        };
        let mut changed = false;
        if gid(root, name)?.is_none() {
            run(Command::new("groupadd")
                .args(&prefix)
                .args(["--system", name]))?;
            changed = true;
        }
        if uid(root, name)?.is_none() {
            run(Command::new("useradd").args(&prefix).args([
                "--system",
                "--gid",
                name,
                "--home-dir",
                home,
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                name,
            ]))?;
            changed = true;
        }
        Ok(changed)
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("running {shown}"))?;
    if !out.status.success() {
        bail!(
            "{shown} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// In-memory accounts for unit tests: appends to the tempdir's passwd/group.
#[cfg(test)]
pub struct MemAccounts;

#[cfg(test)]
impl Accounts for MemAccounts {
    fn ensure_user(&mut self, root: &Path, name: &str, home: &str) -> Result<bool> {
        use std::io::Write;
        if uid(root, name)?.is_some() {
            return Ok(false);
        }
        std::fs::create_dir_all(under(root, "/etc"))?;
        let n = 900
            + std::fs::read_to_string(under(root, "/etc/passwd"))
                .unwrap_or_default()
                .lines()
                .count() as u32;
        let open = |f: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(under(root, f))
        };
        writeln!(open("/etc/group")?, "{name}:x:{n}:")?;
        writeln!(
            open("/etc/passwd")?,
            "{name}:x:{n}:{n}::{home}:/usr/sbin/nologin"
        )?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nspark:x:998:997::/opt/spark:/usr/sbin/nologin\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nspark:x:997:\n").unwrap();
        assert_eq!(uid(d.path(), "spark").unwrap(), Some(998));
        assert_eq!(gid(d.path(), "spark").unwrap(), Some(997));
        assert_eq!(uid(d.path(), "minio-user").unwrap(), None);
    }

    #[test]
    fn shadow_utils_in_a_root() {
        // Real useradd/groupadd against a scratch root (as root only: CI is root).
        let d = tempfile::tempdir().unwrap();
        let etc = d.path().join("etc");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        std::fs::write(etc.join("group"), "root:x:0:\n").unwrap();
        std::fs::write(etc.join("shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
        std::fs::write(etc.join("gshadow"), "root:*::\n").unwrap();
        assert!(Shadow
            .ensure_user(d.path(), "minio-user", "/var/lib/minio")
            .unwrap());
        assert!(!Shadow
            .ensure_user(d.path(), "minio-user", "/var/lib/minio")
            .unwrap());
        assert!(uid(d.path(), "minio-user").unwrap().is_some());
        assert!(gid(d.path(), "minio-user").unwrap().is_some());
    }
}
