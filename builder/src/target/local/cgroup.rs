//! A control group of its own for each container. nspawn runs with
//! `--keep-unit` (it must work without systemd as PID 1) and then puts the
//! container's init in `payload` under the group it was started in: two
//! containers started from the same group would share it, and their
//! systemd instances each other's `system.slice/*` groups.
//!
//! - Nothing manages this host's cgroups (systemd is not PID 1, we sit in
//!   the root cgroup): imgbuild creates `/imgbuild/<machine>` in each
//!   hierarchy and nspawn joins it before it starts; nspawn makes its own
//!   `supervisor`/`payload` there and hands `payload` to the container's
//!   root (an unprivileged container's systemd, host uid 100000, could not
//!   otherwise create its `init.scope` beside what another container left).
//! - systemd is PID 1: nspawn starts in a transient scope of its own,
//!   `imgbuild-<machine>.scope` (`systemd-run --scope`, delegated), the
//!   standard way; the scope lives as long as the container's processes,
//!   whatever happens to the `imgbuild` that started it.
//! - Neither (a group someone else manages, no systemd): nspawn keeps the
//!   unit it runs in, as before.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
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

/// Whether systemd is this host's init (sd_booted(3)'s test).
fn systemd_booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// Where a container's nspawn starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Nothing manages cgroups: the `cgroup.procs` files of the groups
    /// imgbuild creates, which nspawn joins before it starts.
    Own(Vec<PathBuf>),
    /// systemd is PID 1: this transient scope unit of its own.
    Scope(String),
    /// Someone else manages our group and systemd is not PID 1: nspawn
    /// keeps the unit it runs in.
    Inherit,
}

/// The placement of `machine`'s nspawn, from our hierarchies (as
/// [`parse_hierarchies`] reads them) and whether systemd is PID 1.
fn decide(hs: &[(PathBuf, String)], systemd: bool, machine: &str) -> Placement {
    if unmanaged(hs) {
        Placement::Own(
            hs.iter()
                .map(|(m, _)| m.join("imgbuild").join(machine).join("cgroup.procs"))
                .collect(),
        )
    } else if systemd && !hs.is_empty() {
        Placement::Scope(scope_unit(machine))
    } else {
        Placement::Inherit
    }
}

/// The transient scope of `machine` under systemd.
fn scope_unit(machine: &str) -> String {
    format!("imgbuild-{machine}.scope")
}

/// What runs before `nsenter … systemd-nspawn …` so that nspawn starts in
/// its place: a shell joining the groups, then exec; `systemd-run --scope`,
/// which creates the scope with itself in it, then execs (same pid: the
/// one imgbuild records); nothing.
pub fn launcher(p: &Placement) -> Vec<OsString> {
    match p {
        Placement::Own(procs) => {
            let mut v: Vec<OsString> = vec![
                "sh".into(),
                "-c".into(),
                r#"while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@""#
                    .into(),
                "sh".into(),
            ];
            v.extend(procs.iter().map(|p| p.clone().into_os_string()));
            v.push("--".into());
            v
        }
        Placement::Scope(unit) => [
            "systemd-run",
            "--scope",
            "--quiet",
            // Unloaded once its processes are gone, even when they failed.
            "--collect",
            &format!("--unit={unit}"),
            // nspawn creates `supervisor`/`payload` in it and the
            // container's systemd manages the groups below `payload`.
            "--property=Delegate=yes",
            "--",
        ]
        .iter()
        .map(OsString::from)
        .collect(),
        Placement::Inherit => Vec::new(),
    }
}

/// Makes `machine`'s place ready: creates its groups where nothing manages
/// cgroups; under systemd checks for systemd-run and clears a scope of the
/// same name an earlier run left (its processes killed, the unit stopped,
/// a failed state reset), which `systemd-run --unit=` would refuse.
pub fn prepare(machine: &str) -> Result<Placement> {
    let hs = hierarchies();
    let p = decide(&hs, systemd_booted(), machine);
    match &p {
        Placement::Own(procs) => {
            remove(machine);
            for f in procs {
                let d = f.parent().unwrap_or(f);
                fs::create_dir_all(d)
                    .with_context(|| format!("creating the cgroup {}", d.display()))?;
            }
        }
        Placement::Scope(unit) => {
            if !super::sys::have("systemd-run") {
                anyhow::bail!(
                    "systemd is this host's init but systemd-run is missing: each container \
                     starts in a transient scope of its own (install the package systemd, \
                     which ships systemd-run)"
                );
            }
            release_scope(unit);
        }
        Placement::Inherit => {}
    }
    Ok(p)
}

/// Ends the scope `unit` and unloads it: kills what is left in it (a hard
/// stop, as imgbuild stops containers), waits for its stop, resets a
/// failed state. Best effort; nothing to do when it is not loaded.
fn release_scope(unit: &str) {
    for args in [
        &["kill", "--signal=SIGKILL", unit][..],
        &["stop", unit],
        &["reset-failed", unit],
    ] {
        let _ = Command::new("systemctl")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Removes `machine`'s groups (deepest first), waiting up to 10 s for the
/// container's last processes to leave them; under systemd ends and
/// unloads its scope. Best effort.
pub fn remove(machine: &str) {
    if let Placement::Scope(unit) = decide(&hierarchies(), systemd_booted(), machine) {
        release_scope(&unit);
    }
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

    #[test]
    fn a_scope_of_its_own_under_systemd_as_before_elsewhere() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        for h in ["systemd", "unified"] {
            fs::create_dir_all(root.join(h)).unwrap();
            fs::write(root.join(h).join("cgroup.procs"), "").unwrap();
        }
        // This machine: root cgroup, no /run/systemd/system. Even with
        // systemd around, the root cgroup keeps imgbuild's own groups.
        let here = parse_hierarchies("9:name=systemd:/\n0::/\n", root);
        let own = Placement::Own(vec![
            root.join("systemd/imgbuild/ib200-0a1b2c3d/cgroup.procs"),
            root.join("unified/imgbuild/ib200-0a1b2c3d/cgroup.procs"),
        ]);
        assert_eq!(decide(&here, false, "ib200-0a1b2c3d"), own);
        assert_eq!(decide(&here, true, "ib200-0a1b2c3d"), own);
        // A hybrid Debian/Ubuntu host with systemd: a user's session (sudo).
        let session = parse_hierarchies(
            "1:name=systemd:/user.slice/user-1000.slice/session-3.scope\n\
             0::/user.slice/user-1000.slice/session-3.scope\n",
            root,
        );
        assert_eq!(
            decide(&session, true, "ib200-0a1b2c3d"),
            Placement::Scope("imgbuild-ib200-0a1b2c3d.scope".into())
        );
        // Pure v2 (Debian 12, Proxmox 7+): a service running imgbuild.
        let v2 = tempfile::tempdir().unwrap();
        fs::write(v2.path().join("cgroup.procs"), "").unwrap();
        let service = parse_hierarchies("0::/system.slice/lab.service\n", v2.path());
        assert_eq!(
            decide(&service, true, "pve101-89abcdef"),
            Placement::Scope("imgbuild-pve101-89abcdef.scope".into())
        );
        // A group someone else manages, systemd not PID 1 (a container
        // engine without a cgroup namespace): nspawn keeps it, as before.
        let other = parse_hierarchies("0::/docker/4f2e\n", v2.path());
        assert_eq!(decide(&other, false, "ib1-0a1b2c3d"), Placement::Inherit);
        assert_eq!(decide(&[], true, "ib1-0a1b2c3d"), Placement::Inherit);
    }

    #[test]
    fn launchers_join_the_groups_or_start_the_scope() {
        let s = |v: Vec<OsString>| -> Vec<String> {
            v.into_iter().map(|a| a.into_string().unwrap()).collect()
        };
        assert_eq!(
            s(launcher(&Placement::Scope(
                "imgbuild-ib200-0a1b2c3d.scope".into()
            ))),
            [
                "systemd-run",
                "--scope",
                "--quiet",
                "--collect",
                "--unit=imgbuild-ib200-0a1b2c3d.scope",
                "--property=Delegate=yes",
                "--"
            ]
        );
        let own = s(launcher(&Placement::Own(vec![
            "/sys/fs/cgroup/systemd/imgbuild/m/cgroup.procs".into(),
            "/sys/fs/cgroup/unified/imgbuild/m/cgroup.procs".into(),
        ])));
        assert_eq!(own[..2], ["sh", "-c"]);
        assert_eq!(
            own[3..],
            [
                "sh",
                "/sys/fs/cgroup/systemd/imgbuild/m/cgroup.procs",
                "/sys/fs/cgroup/unified/imgbuild/m/cgroup.procs",
                "--"
            ]
        );
        assert!(launcher(&Placement::Inherit).is_empty());
    }

    #[test]
    fn the_shell_launcher_joins_each_group_then_execs() {
        // Regular files stand in for cgroup.procs: the shell writes its
        // pid in each, then becomes the command (same pid).
        let d = tempfile::tempdir().unwrap();
        let procs: Vec<PathBuf> = ["a", "b"].iter().map(|n| d.path().join(n)).collect();
        for p in &procs {
            fs::write(p, "").unwrap();
        }
        let argv = launcher(&Placement::Own(procs.clone()));
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .args(["sh", "-c", "echo $$"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let pid = String::from_utf8(out.stdout).unwrap();
        for p in &procs {
            assert_eq!(fs::read_to_string(p).unwrap(), pid, "{}", p.display());
        }
    }
}
