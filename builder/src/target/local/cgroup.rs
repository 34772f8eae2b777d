//! A control group of its own for each container when nothing manages
//! this host's cgroups (systemd is not PID 1, we sit in the root cgroup).
//! There, `systemd-nspawn --keep-unit` would put every container's init in
//! the same `/payload` group, and an unprivileged container's systemd
//! (root = host uid 100000) could not create its `init.scope` beside what
//! another container left. In `/imgbuild/<machine>` nspawn makes its own
//! `supervisor`/`payload` and hands `payload` to the container's root.
//! Under a manager (systemd as PID 1) nspawn keeps the unit it runs in, as
//! before.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// The hierarchies nspawn and the container's systemd write to: the named
/// v1 `systemd` one and the v2 one (hybrid `unified`, or the whole mount).
fn hierarchies() -> Vec<(PathBuf, String)> {
    let text = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    parse_hierarchies(&text, Path::new("/sys/fs/cgroup"))
}

/// (mount, our path in it) from `/proc/self/cgroup`'s text, for the
/// hierarchies mounted under `root`.
fn parse_hierarchies(text: &str, root: &Path) -> Vec<(PathBuf, String)> {
    let mut v = Vec::new();
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(id), Some(ctl), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        let mount = match (id, ctl) {
            (_, "name=systemd") => root.join("systemd"),
            ("0", "") if root.join("unified/cgroup.procs").exists() => root.join("unified"),
            ("0", "") if root.join("cgroup.procs").exists() => root.to_path_buf(),
            _ => continue,
        };
        if mount.join("cgroup.procs").exists() {
            v.push((mount, path.to_string()));
        }
    }
    v
}

/// Whether nothing manages our cgroups: we sit at the root of each.
fn unmanaged(hs: &[(PathBuf, String)]) -> bool {
    !hs.is_empty() && hs.iter().all(|(_, path)| path == "/")
}

/// The group directories of `machine`, one per hierarchy.
fn dirs(machine: &str) -> Vec<PathBuf> {
    hierarchies()
        .into_iter()
        .map(|(m, _)| m.join("imgbuild").join(machine))
        .collect()
}

/// Creates `machine`'s groups when we sit in the root cgroup; returns the
/// `cgroup.procs` files the container's nspawn must write itself into
/// before it starts (none under a manager).
pub fn prepare(machine: &str) -> Result<Vec<PathBuf>> {
    let hs = hierarchies();
    if !unmanaged(&hs) {
        return Ok(Vec::new());
    }
    remove(machine);
    let mut procs = Vec::new();
    for (mount, _) in hs {
        let d = mount.join("imgbuild").join(machine);
        fs::create_dir_all(&d).with_context(|| format!("creating the cgroup {}", d.display()))?;
        procs.push(d.join("cgroup.procs"));
    }
    Ok(procs)
}

/// Removes `machine`'s groups (deepest first), waiting up to 10 s for the
/// container's last processes to leave them. Best effort.
pub fn remove(machine: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    for d in dirs(machine) {
        while d.exists() && remove_tree(&d).is_err() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Whether any group of `machine` is left.
pub fn left(machine: &str) -> Vec<PathBuf> {
    dirs(machine).into_iter().filter(|d| d.exists()).collect()
}

fn remove_tree(d: &Path) -> std::io::Result<()> {
    for e in fs::read_dir(d)?.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path())?;
        }
    }
    fs::remove_dir(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_groups_only_where_nothing_manages_cgroups() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        // This machine: hybrid, systemd not PID 1, a memory group of a sandbox.
        for h in ["systemd", "unified", "memory"] {
            fs::create_dir_all(root.join(h)).unwrap();
            fs::write(root.join(h).join("cgroup.procs"), "").unwrap();
        }
        let here = "9:name=systemd:/\n4:memory:/process_api/5\n1:cpu:/\n0::/\n";
        let hs = parse_hierarchies(here, root);
        assert_eq!(
            hs,
            vec![
                (root.join("systemd"), "/".to_string()),
                (root.join("unified"), "/".to_string())
            ]
        );
        assert!(unmanaged(&hs));
        // Under systemd: a session's scope; nspawn keeps that unit.
        let managed =
            "1:name=systemd:/user.slice/session-1.scope\n0::/user.slice/session-1.scope\n";
        assert!(!unmanaged(&parse_hierarchies(managed, root)));
        // Pure cgroup v2 at the root.
        let v2 = tempfile::tempdir().unwrap();
        fs::write(v2.path().join("cgroup.procs"), "").unwrap();
        let hs = parse_hierarchies("0::/\n", v2.path());
        assert_eq!(hs, vec![(v2.path().to_path_buf(), "/".to_string())]);
        assert!(unmanaged(&hs));
        assert!(!unmanaged(&[]), "no cgroups at all: leave nspawn alone");
    }
}
