//! The engine: plan → accounts → files → host keys → daemon-reload (only if a
//! unit file changed) → enable → start/restart → checks → marker, each as a
//! recorded step. Every step is idempotent, so a power cut anywhere followed
//! by a reboot re-runs from scratch and converges; a second run with the same
//! files changes nothing and restarts nothing.
//!
//! Restarts (and the daemon-reload) a run owes because it changed files are
//! persisted in [`OWED_PATH`] until issued: a run that fails, or is stopped,
//! between writing a file and restarting its unit leaves them to the next run
//! in the same boot, which sees the file unchanged and would otherwise leave
//! the unit running on its old configuration. The file lives on /run (a
//! tmpfs): a reboot starts every unit afresh, so owed work lapses with it.

use crate::accounts::{self, Accounts};
use crate::fsutil::{ensure_dir, ensure_symlink, under, write_file};
use crate::plan::{self, Plan};
use crate::status::{self, Recorder};
use crate::systemd::Systemd;
use crate::{checks, Seed, StepFailed};
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long a run may take: the unit's `TimeoutStartSec` less two minutes,
/// one for a D-Bus call that overruns it (each has a timeout) and one to
/// record the outcome before systemd's SIGTERM.
pub const RUN_BUDGET: Duration =
    Duration::from_secs(imgbuild_seed::UNIT_TIMEOUT_START.as_secs() - 120);

/// Where a run applies the seed.
pub enum Host<'a> {
    /// The running guest (root `/`): systemd over D-Bus, every step up to the
    /// run-once marker, all of it finished by `deadline`.
    Live {
        /// The service manager.
        systemd: &'a mut dyn Systemd,
        /// When the run gives up (see [`RUN_BUDGET`]).
        deadline: Instant,
    },
    /// `firstboot --root DIR`: accounts and files under DIR, nothing else;
    /// the host is never touched and the guest does the rest when it boots.
    Offline,
}

/// Restarts and reloads owed by an interrupted run in this boot, one a line.
pub const OWED_PATH: &str = "/run/imgbuild/owed-restarts";
/// The entry in [`OWED_PATH`] that stands for a daemon-reload.
const OWED_RELOAD: &str = "daemon-reload";

/// What an earlier run in this boot still owes (empty after a reboot).
fn load_owed(root: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(under(root, OWED_PATH)).unwrap_or_default();
    text.lines()
        .map(|l| l.to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn save_owed(root: &Path, owed: &BTreeSet<String>) -> Result<()> {
    let path = under(root, OWED_PATH);
    if owed.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("removing {}", path.display()))
            }
            _ => Ok(()),
        };
    }
    let mut text = String::new();
    for o in owed {
        text.push_str(o);
        text.push('\n');
    }
    if let Some(dir) = path.parent() {
        ensure_dir(dir, 0o755, 0, 0)?;
    }
    write_file(&path, text.as_bytes(), 0o644, 0, 0).map(|_| ())
}

/// What a run did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Paths created or modified (content, mode or owner).
    pub changed: Vec<String>,
    /// Units restarted because their configuration changed.
    pub restarted: Vec<String>,
    /// Whether systemd was reloaded.
    pub reloaded: bool,
    /// Units of roles the seed no longer has: stopped, disabled, unit file removed.
    pub removed: Vec<String>,
}

/// The units of every role the agent knows, so a role a new seed drops is
/// found by its unit file (written by the agent, so starting with its header).
pub const ROLE_UNITS: &[&str] = &[
    "minio.service",
    "spark-master.service",
    "spark-worker.service",
];

/// Role units an earlier seed installed that this plan no longer has.
pub fn removed_units(root: &Path, plan: &Plan) -> Vec<String> {
    ROLE_UNITS
        .iter()
        .filter(|u| !plan.units.iter().any(|p| p.name == **u))
        .filter(|u| {
            std::fs::read_to_string(under(root, &format!("/etc/systemd/system/{u}")))
                .is_ok_and(|t| t.starts_with(crate::roles::HEADER))
        })
        .map(|u| u.to_string())
        .collect()
}

/// Step names for a plan, in order (status.json lists them all up front).
pub fn step_names(plan: &Plan, removed: &[String]) -> Vec<String> {
    let mut v: Vec<String> = ["accounts", "files", "ssh-host-keys", "hostname"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(removed.iter().map(|u| format!("remove:{u}")));
    v.extend(["daemon-reload".to_string(), "enable".to_string()]);
    v.extend(plan.units.iter().map(|u| format!("start:{}", u.name)));
    v.extend(plan.checks.iter().map(|c| c.name()));
    v.push("marker".into());
    v
}

/// Applies `seed` to the running guest under `root` within [`RUN_BUDGET`].
/// `source` is shown in status.json.
pub fn apply(
    root: &Path,
    seed: &Seed,
    source: &str,
    systemd: &mut dyn Systemd,
    accts: &mut dyn Accounts,
) -> Result<Outcome, StepFailed> {
    let deadline = Instant::now() + RUN_BUDGET;
    apply_on(root, seed, source, Host::Live { systemd, deadline }, accts)
}

/// Applies `seed` on `host`. `source` is shown in status.json.
pub fn apply_on(
    root: &Path,
    seed: &Seed,
    source: &str,
    host: Host<'_>,
    accts: &mut dyn Accounts,
) -> Result<Outcome, StepFailed> {
    let id = seed.instance_id();
    let hosts = std::fs::read_to_string(under(root, "/etc/hosts")).unwrap_or_default();
    let plan = plan::build(seed, &hosts);
    let removed = removed_units(root, &plan);
    let mut rec = Recorder::new(
        root,
        Some(id.clone()),
        Some(source.to_string()),
        &step_names(&plan, &removed),
    )
    .map_err(|e| StepFailed {
        step: "status".into(),
        source: e,
    })?;
    rec.textfile_dir = seed
        .roles
        .metrics
        .as_ref()
        .map(|m| m.node_exporter.textfile_dir.as_str().to_string());
    tracing::info!(instance_id = %id, %source, "applying seed");
    let mut out = Outcome::default();

    rec.step("accounts", || {
        for a in &plan.accounts {
            if accts.ensure_user(root, &a.name, &a.home)? {
                out.changed.push(format!("account:{}", a.name));
            }
        }
        Ok(())
    })?;
    let (systemd, deadline) = match host {
        Host::Live { systemd, deadline } => (systemd, deadline),
        Host::Offline => {
            rec.step("files", || write_all(root, &plan, &mut out))?;
            let why = format!(
                "--root {}: files only, the host is left alone; the guest does this when it boots",
                root.display()
            );
            let skipped: Vec<String> = step_names(&plan, &removed)
                .into_iter()
                .filter(|n| n != "accounts" && n != "files")
                .collect();
            for name in skipped {
                rec.skip(&name, &why).map_err(|e| StepFailed {
                    step: name.clone(),
                    source: e,
                })?;
            }
            rec.prepared().map_err(|e| StepFailed {
                step: "status".into(),
                source: e,
            })?;
            tracing::info!(instance_id = %id, changed = out.changed.len(), "prepared under {}", root.display());
            return Ok(out);
        }
    };
    // What is left of the run's time, or an error once it is used up.
    let left = || -> Result<Duration> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "the run's deadline passed ({}s, inside the unit's TimeoutStartSec)",
                RUN_BUDGET.as_secs()
            );
        }
        Ok(left)
    };
    let mut owed = load_owed(root);
    rec.step("files", || {
        write_all(root, &plan, &mut out)?;
        // Owed from now on: persist before acting on it.
        if out.changed.iter().any(|p| Plan::is_unit_file(p)) {
            owed.insert(OWED_RELOAD.into());
        }
        owed.extend(restarts_for(&plan, &out.changed));
        save_owed(root, &owed)
    })?;
    rec.step("ssh-host-keys", || {
        if plan.ssh_host_keys {
            host_keys(root)
        } else {
            Ok(())
        }
    })?;
    rec.step("hostname", || {
        if let Some(h) = &plan.hostname {
            left()?;
            // /etc/hostname is already written; hostnamed only makes it live
            // now. Where it is missing (minimal containers) that is no failure.
            if let Err(e) = systemd.set_hostname(h) {
                tracing::warn!("hostnamed did not set the host name: {e:#}");
            }
        }
        Ok(())
    })?;
    // A role the seed no longer has: stop and disable its units and remove
    // their unit files; its data and accounts stay.
    for u in &removed {
        rec.step(&format!("remove:{u}"), || {
            owed.insert(OWED_RELOAD.into());
            save_owed(root, &owed)?;
            systemd.stop(u, Duration::from_secs(90).min(left()?))?;
            systemd.disable(&[u.as_str()])?;
            let file = under(root, &format!("/etc/systemd/system/{u}"));
            std::fs::remove_file(&file).with_context(|| format!("removing {}", file.display()))?;
            tracing::info!(unit = %u, "removed: the seed no longer has its role (data kept)");
            out.removed.push(u.clone());
            Ok(())
        })?;
    }
    rec.step("daemon-reload", || {
        if owed.contains(OWED_RELOAD) {
            left()?;
            systemd.daemon_reload()?;
            out.reloaded = true;
            owed.remove(OWED_RELOAD);
            save_owed(root, &owed)?;
        }
        Ok(())
    })?;
    let units: Vec<&str> = plan.units.iter().map(|u| u.name.as_str()).collect();
    rec.step("enable", || {
        if units.is_empty() {
            Ok(())
        } else {
            left()?;
            systemd.enable(&units)
        }
    })?;
    for u in &plan.units {
        let again = owed.contains(&u.name);
        let r = rec.step(&format!("start:{}", u.name), || {
            let timeout = u.timeout.min(left()?);
            systemd.start(&u.name, again, timeout)
        });
        if again {
            // Issued: even a failed restart leaves the unit to a plain start.
            owed.remove(&u.name);
            if let Err(e) = save_owed(root, &owed) {
                tracing::warn!("cannot record the owed restarts: {e:#}");
            }
        }
        r?;
        if again {
            out.restarted.push(u.name.clone());
        }
    }
    for c in &plan.checks {
        rec.step(&c.name(), || {
            left()?;
            checks::run(root, c, deadline)
        })?;
    }
    rec.step("marker", || {
        save_owed(root, &BTreeSet::new())?;
        status::mark_applied(root, &id)
    })?;
    rec.ready().map_err(|e| StepFailed {
        step: "status".into(),
        source: e,
    })?;
    tracing::info!(instance_id = %id, changed = out.changed.len(), "ready");
    Ok(out)
}

/// The units to restart because of `changed` paths.
fn restarts_for(plan: &Plan, changed: &[String]) -> BTreeSet<String> {
    plan.files
        .iter()
        .filter(|f| changed.contains(&f.path))
        .flat_map(|f| f.restarts.iter().cloned())
        .chain(
            plan.links
                .iter()
                .filter(|l| changed.contains(&l.path))
                .flat_map(|l| l.restarts.iter().cloned()),
        )
        .collect()
}

fn owner(root: &Path, user: &str, group: &str) -> Result<(u32, u32)> {
    let uid = accounts::uid(root, user)?.with_context(|| format!("user {user} does not exist"))?;
    let gid =
        accounts::gid(root, group)?.with_context(|| format!("group {group} does not exist"))?;
    Ok((uid, gid))
}

fn write_all(root: &Path, plan: &Plan, out: &mut Outcome) -> Result<()> {
    if let Some(tz) = &plan.timezone {
        // Only checked where zoneinfo exists at all (not in a scratch root).
        let zi = under(root, "/usr/share/zoneinfo");
        if zi.is_dir() && !zi.join(tz).exists() {
            bail!("time zone {tz} does not exist in {}", zi.display());
        }
    }
    for d in &plan.dirs {
        let (u, g) = owner(root, &d.user, &d.group)?;
        if ensure_dir(&under(root, &d.path), d.mode, u, g)? {
            out.changed.push(d.path.clone());
        }
    }
    for f in &plan.files {
        let (u, g) = owner(root, &f.user, &f.group)?;
        let target = under(root, &f.path);
        if let Some(parent) = target.parent() {
            if !parent.is_dir() {
                ensure_dir(parent, 0o755, 0, 0)?;
            }
        }
        if write_file(&target, f.content.as_bytes(), f.mode, u, g)? {
            tracing::info!(path = %f.path, mode = format_args!("{:o}", f.mode), "wrote");
            out.changed.push(f.path.clone());
        }
    }
    for l in &plan.links {
        if ensure_symlink(&under(root, &l.path), &l.target)? {
            out.changed.push(l.path.clone());
        }
    }
    Ok(())
}

/// `ssh-keygen -A` when any of the usual host keys is missing (sshd refuses
/// to start without them, and images are baked without any).
fn host_keys(root: &Path) -> Result<()> {
    let missing = ["rsa", "ecdsa", "ed25519"]
        .iter()
        .any(|k| !under(root, &format!("/etc/ssh/ssh_host_{k}_key")).exists());
    if !missing {
        return Ok(());
    }
    ensure_dir(&under(root, "/etc/ssh"), 0o755, 0, 0)?;
    let mut cmd = Command::new("ssh-keygen");
    cmd.arg("-A");
    if root != Path::new("/") {
        cmd.arg("-f").arg(root);
    }
    let o = cmd.output().context("running ssh-keygen -A")?;
    if !o.status.success() {
        bail!(
            "ssh-keygen -A failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
