//! The local target (`imgbuild up`): the same lab file, unchanged, on this
//! machine. A private network namespace per lab holds a bridge named like
//! the lab's carrying its gateway address; VMs run in QEMU (KVM when it
//! boots, TCG otherwise) on qcow2 overlays with their cidata ISO; containers
//! in systemd-nspawn from the personalized template extracted as `pct` does;
//! the web UIs are forwarded to 127.0.0.1. Readiness is [`crate::ready`]'s,
//! the same rule `deploy` uses. Works with or without systemd as PID 1.
//!
//! - [`host`]: preflight (root, tools, kernel features) and memory.
//! - [`images`]: whether `dist/` holds a fresh bake of a recipe.
//! - [`state`]: the per-lab directory and `state.json`.
//! - [`net`], [`container`], [`vm`], [`forward`]: the machinery.
//! - [`guest`]: create, start, stop one guest.
//! - [`pve`]: a Proxmox guest config run here (`imgbuild pve-guest`).
//! - [`data`]: data volumes outside the guests, kept by upgrades and `down`.
//! - [`userns`], [`cgroup`]: containers run unprivileged, as `deploy` creates
//!   them on Proxmox (ids shifted by 100000).

pub mod cgroup;
pub mod container;
pub mod data;
pub mod forward;
pub mod guest;
pub mod host;
pub mod images;
pub mod net;
pub mod pve;
pub mod state;
pub mod sys;
pub mod userns;
pub mod vm;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::model::lab::{GuestKind, Lab};
use crate::ready::{self, GuestReadiness, Progress, Unresolved};
use forward::Forward;
use images::Baked;
use state::{LabDir, State};
use sys::Proc;
use vm::Accel;

/// How `up` runs.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub state_root: PathBuf,
    pub scale_memory: bool,
    pub accel: Accel,
    /// How long to wait for every guest to be ready.
    pub timeout: Duration,
}

/// What `up` did to a guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Running with the same inputs: left alone.
    Unchanged,
    /// Its process had died: started again on its existing disk or root.
    Restarted,
    /// New, or its seed, image or resources changed: created from scratch.
    Created,
}

/// What `up` does to one guest: nothing when it runs with the same inputs
/// (`same`: its fingerprint is unchanged), a restart on its own disk when
/// only its process is gone, else a fresh creation (new, or any input
/// changed: seed, image, resources, network).
pub fn decide(same: bool, alive: bool, has_disk: bool) -> Action {
    match (same, alive, has_disk) {
        (true, true, _) => Action::Unchanged,
        (true, false, true) => Action::Restarted,
        _ => Action::Created,
    }
}

/// One guest after `up` or for `status`.
#[derive(Debug, Clone, Serialize)]
pub struct GuestRow {
    pub guest: String,
    pub kind: String,
    pub vmid: u32,
    pub address: String,
    pub services: Vec<String>,
    /// `ready`, `starting` (running, not all endpoints answer yet),
    /// `stopped` (its process is gone), `absent` (never started).
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// VMs: `kvm` or `tcg`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accel_note: Option<String>,
    /// Seconds from this `up`'s start of the guest to ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready_secs: Option<f64>,
    /// Containers: the agent's status.json state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub firstboot: Option<String>,
    /// What is not answering yet.
    pub missing: Vec<String>,
    /// The guest's web UIs on 127.0.0.1.
    pub urls: Vec<UiUrl>,
    /// Its data volume on this machine (kept by upgrades and `down`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_volume: Option<PathBuf>,
}

/// A forwarded web UI.
#[derive(Debug, Clone, Serialize)]
pub struct UiUrl {
    pub purpose: String,
    pub url: String,
}

/// The lab's web UIs inside its namespace: object-store console, Spark
/// master UI, Spark worker UI, Prometheus.
pub fn ui_targets(lab: &Lab) -> Vec<Forward> {
    let mut v = Vec::new();
    for g in &lab.guests {
        for p in g.open_ports() {
            if matches!(
                p.purpose,
                "object store console" | "spark master UI" | "spark worker UI" | "prometheus UI"
            ) {
                v.push(Forward {
                    guest: g.name.as_str().into(),
                    purpose: p.purpose.into(),
                    target: SocketAddr::new(g.address.into(), p.port.get()),
                    host_port: 0,
                });
            }
        }
    }
    v
}

/// Brings the lab up (see the module docs); `images` maps recipe names to
/// fresh bakes. Returns one row per guest; the caller prints them and fails
/// when one is not ready.
pub fn up(
    lab: &Lab,
    images: &BTreeMap<String, Baked>,
    opts: &UpOptions,
    say: &mut dyn FnMut(String),
) -> Result<Vec<GuestRow>> {
    host::preflight(lab)?;
    let memory = host::plan_memory(lab, host::available_mib()?, opts.scale_memory)?;
    let labdir = LabDir::new(&opts.state_root, &lab.path)?;
    sys::private_dir(&labdir.dir)?;
    let mut state = labdir.load()?.unwrap_or_default();
    state.lab = std::fs::canonicalize(&lab.path)?;
    // KVM hanging is a property of the host: remembered beside the labs, so
    // a later `up` (after `down`, or of another lab) boots TCG at once.
    let kvm_verdict = opts.state_root.join("kvm-unusable");
    if state.kvm_bad.is_none() && opts.accel == Accel::Auto {
        state.kvm_bad = std::fs::read_to_string(&kvm_verdict)
            .ok()
            .map(|s| s.trim().to_string());
    }
    let netns = labdir.netns();
    netns.ensure()?;
    netns.ensure_bridge(
        &lab.network.bridge,
        lab.network.gateway,
        lab.network.cidr.prefix(),
    )?;

    // Guests that left the lab file go first.
    let gone: Vec<String> = state
        .guests
        .keys()
        .filter(|n| lab.guest(n).is_none())
        .cloned()
        .collect();
    for n in gone {
        say(format!("{n}: no longer in the lab, removing it"));
        if let Some(st) = state.guests.remove(&n) {
            guest::stop(&st);
        }
        guest::remove_dir(&labdir.guest_dir(&n))?;
        labdir.save(&state)?;
        if let Some((_, v)) = data::kept(&labdir).into_iter().find(|(g, _)| *g == n) {
            say(format!(
                "{n}: its data volume stays in {} (`imgbuild down --purge-data` removes it)",
                v.display()
            ));
        }
    }

    let mut actions = BTreeMap::new();
    let mut started_at = BTreeMap::new();
    for g in &lab.guests {
        let name = g.name.as_str();
        let seed = crate::seed::for_guest(lab, name)?;
        let image = images
            .get(&g.image)
            .with_context(|| format!("no baked image {} for guest {name}", g.image))?;
        let memory_mib = memory
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| *m)
            .unwrap_or(g.resources.memory.mib());
        let desired = guest::Desired {
            lab,
            guest: g,
            image,
            seed: &seed,
            seed_yaml: seed.to_yaml(),
            instance_id: seed.instance_id(),
            memory_mib,
            mac: crate::resolve::mac_for(&labdir.id, name),
            data: data::for_guest(&labdir, g),
        };
        let fp = desired.fingerprint();
        let prev = state.guests.get(name).cloned();
        let alive = prev
            .as_ref()
            .and_then(|p| p.proc)
            .is_some_and(|p| p.alive());
        let same = prev.as_ref().is_some_and(|p| p.fingerprint == fp);
        let dir = labdir.guest_dir(name);
        let action = decide(same, alive, guest::has_disk(&dir, g.kind));
        if action != Action::Unchanged {
            if let Some(p) = prev.as_ref().filter(|p| p.proc.is_some_and(|p| p.alive())) {
                let t = Instant::now();
                guest::stop(p);
                say(format!(
                    "{name}: stopped in {:.1} s",
                    t.elapsed().as_secs_f64()
                ));
            }
        }
        let kvm_bad = state.kvm_bad.clone();
        let t = Instant::now();
        let st = match action {
            Action::Unchanged => {
                say(format!(
                    "{name}: running with the same seed and image, left alone"
                ));
                prev.clone().expect("unchanged implies a previous state")
            }
            Action::Restarted => {
                say(format!(
                    "{name}: was stopped (its process is gone); starting it again on its existing {}",
                    if g.kind == GuestKind::Vm { "disk" } else { "root" }
                ));
                guest::start(&labdir, &netns, &desired, opts.accel, kvm_bad.as_deref())?
            }
            Action::Created => {
                say(match &prev {
                    Some(_) => format!(
                        "{name}: its seed, image or resources changed; recreating it from {}{}",
                        image.path.display(),
                        match &desired.data {
                            Some(v) if v.host.exists() => format!(
                                " (upgrade, data kept: its data volume {} stays mounted at {})",
                                v.host.display(),
                                v.mount
                            ),
                            _ => String::new(),
                        }
                    ),
                    None => format!("{name}: creating it from {}", image.path.display()),
                });
                guest::create_and_start(&labdir, &netns, &desired, opts.accel, kvm_bad.as_deref())?
            }
        };
        if action != Action::Unchanged {
            say(format!(
                "{name}: started in {:.1} s",
                t.elapsed().as_secs_f64()
            ));
            if let Some(a) = &st.accel {
                say(format!(
                    "{name}: QEMU under {}{} (started in {:.1} s)",
                    a.to_uppercase(),
                    st.accel_note
                        .as_ref()
                        .map(|n| format!(": {n}"))
                        .unwrap_or_default(),
                    t.elapsed().as_secs_f64()
                ));
                if a == "tcg"
                    && opts.accel == Accel::Auto
                    && vm::kvm_device_usable()
                    && state.kvm_bad.is_none()
                {
                    state.kvm_bad = st.accel_note.clone();
                    if let Some(n) = &st.accel_note {
                        crate::fsutil::write_atomic(&kvm_verdict, n.as_bytes(), 0o644)?;
                    }
                }
            }
            started_at.insert(name.to_string(), Instant::now());
        }
        actions.insert(name.to_string(), action);
        state.guests.insert(name.to_string(), st);
        labdir.save(&state)?;
    }

    // The UI forwards: keep a running forwarder with the same targets.
    let want = ui_targets(lab);
    let same_targets = state.forwards.len() == want.len()
        && state
            .forwards
            .iter()
            .zip(&want)
            .all(|(a, b)| a.target == b.target && a.guest == b.guest);
    if !(same_targets && state.forwarder.is_some_and(|p| p.alive())) {
        if let Some(p) = state.forwarder.take() {
            p.kill();
        }
        if !want.is_empty() {
            let (child, got) = forward::start(
                &netns,
                &want,
                &labdir.dir.join("forwards.json"),
                &labdir.dir.join("forward.log"),
            )?;
            state.forwarder = Proc::of(child.id());
            state.forwards = got;
        } else {
            state.forwards.clear();
        }
        labdir.save(&state)?;
    }

    let w0 = Instant::now();
    let outcome = wait(lab, &labdir, &state, opts.timeout, say)?;
    let mut rows = rows(lab, &labdir, &state, &outcome);
    for r in &mut rows {
        r.action = actions.get(&r.guest).copied();
        let after = outcome
            .iter()
            .find(|o| o.guest == r.guest)
            .and_then(|o| o.ready_after);
        if let (Some(after), Some(at)) = (after, started_at.get(&r.guest)) {
            // From this guest's start, not from the wait's.
            r.ready_secs = Some((w0 + after).saturating_duration_since(*at).as_secs_f64());
        }
    }
    Ok(rows)
}

/// Waits for every guest with [`ready::wait_ready`] from a thread inside the
/// lab's namespace; a guest whose process died is reported at once.
fn wait(
    lab: &Lab,
    labdir: &LabDir,
    state: &State,
    timeout: Duration,
    say: &mut dyn FnMut(String),
) -> Result<Vec<GuestReadiness>> {
    let probes = ready::probes(lab);
    let addrs: BTreeMap<String, (std::net::Ipv4Addr, Option<Proc>)> = lab
        .guests
        .iter()
        .map(|g| {
            let proc = state.guests.get(g.name.as_str()).and_then(|s| s.proc);
            (g.name.as_str().to_string(), (g.address, proc))
        })
        .collect();
    let netns = labdir.netns();
    let deadline = Instant::now() + timeout;
    let (tx, rx) = std::sync::mpsc::channel::<Progress>();
    let worker = std::thread::spawn(move || -> Result<Vec<GuestReadiness>> {
        netns.enter_this_thread()?;
        let mut resolve = |guest: &str, port: u16| -> Result<SocketAddr, Unresolved> {
            let Some((addr, proc)) = addrs.get(guest) else {
                return Err(Unresolved::Gone(format!("{guest} is not in the lab")));
            };
            match proc {
                Some(p) if p.alive() => Ok(SocketAddr::new((*addr).into(), port)),
                _ => Err(Unresolved::Gone(
                    "its process exited (see `imgbuild logs`)".into(),
                )),
            }
        };
        Ok(ready::wait_ready(
            &mut resolve,
            &probes,
            deadline,
            &mut |p| {
                let _ = tx.send(p.clone());
            },
        ))
    });
    for p in rx {
        say(match p {
            Progress::Ready { guest, after } => {
                format!(
                    "{guest}: ready ({:.1} s into the wait)",
                    after.as_secs_f64()
                )
            }
            Progress::Gone { guest, why } => format!("{guest}: gone: {why}"),
            Progress::Waiting { guest, missing } => {
                format!("{guest}: waiting for {}", missing.join("; "))
            }
        });
    }
    worker
        .join()
        .map_err(|_| anyhow::anyhow!("the readiness thread panicked"))?
}

fn rows(lab: &Lab, labdir: &LabDir, state: &State, outcome: &[GuestReadiness]) -> Vec<GuestRow> {
    lab.guests
        .iter()
        .map(|g| {
            let name = g.name.as_str();
            let st = state.guests.get(name);
            let alive = st.and_then(|s| s.proc).is_some_and(|p| p.alive());
            let o = outcome.iter().find(|o| o.guest == name);
            let ready = o.is_some_and(GuestReadiness::is_ready);
            let state_word = match (st, alive, ready) {
                (None, _, _) => "absent",
                (Some(_), false, _) => "stopped",
                (Some(_), true, true) => "ready",
                (Some(_), true, false) => "starting",
            };
            let firstboot = (g.kind == GuestKind::Lxc)
                .then(|| container::status(&labdir.guest_dir(name).join("rootfs")))
                .flatten()
                .and_then(|v| v["state"].as_str().map(str::to_string));
            GuestRow {
                guest: name.into(),
                kind: g.kind.as_str().into(),
                vmid: g.vmid.get(),
                address: g.address.to_string(),
                services: g
                    .open_ports()
                    .iter()
                    .map(|p| format!("{} :{}", p.purpose, p.port))
                    .collect(),
                state: state_word.into(),
                action: None,
                accel: st.and_then(|s| s.accel.clone()),
                accel_note: st.and_then(|s| s.accel_note.clone()),
                ready_secs: None,
                firstboot,
                missing: o.map(|o| o.missing.clone()).unwrap_or_default(),
                urls: state
                    .forwards
                    .iter()
                    .filter(|f| f.guest == name)
                    .map(|f| UiUrl {
                        purpose: f.purpose.clone(),
                        url: f.url(),
                    })
                    .collect(),
                data_volume: data::for_guest(labdir, g).map(|v| v.host),
            }
        })
        .collect()
}

/// The lab's guests as they are now: processes, one quick readiness round,
/// the agent's status (containers). Never changes anything.
pub fn status(lab: &Lab, state_root: &Path) -> Result<(Vec<GuestRow>, bool)> {
    let labdir = LabDir::new(state_root, &lab.path)?;
    let state = labdir.load()?;
    let up = state.is_some() && labdir.netns().exists();
    let state = state.unwrap_or_default();
    let outcome = if up {
        wait(lab, &labdir, &state, Duration::from_secs(2), &mut |_| {})?
    } else {
        Vec::new()
    };
    Ok((rows(lab, &labdir, &state, &outcome), up))
}

/// What `down` removed.
#[derive(Debug, Default, Serialize)]
pub struct DownReport {
    pub guests: Vec<String>,
    pub processes: usize,
    pub netns: Option<String>,
    pub dir: Option<PathBuf>,
    /// Data volumes left in place (guest, directory): `down` without
    /// `purge_data`.
    pub data_kept: Vec<(String, PathBuf)>,
}

/// Stops and removes everything `up` created for this lab: guests and the
/// forwarder (and any other process left in the namespace), the namespace
/// with its bridge, TAPs and veths, nspawn's runtime directories, and the
/// lab's state directory with its disks, roots and logs. Nothing else.
/// The guests' data volumes stay (the next `up` mounts them again) unless
/// `purge_data`. Idempotent.
pub fn down(lab_path: &Path, state_root: &Path, purge_data: bool) -> Result<DownReport> {
    let labdir = LabDir::new(state_root, lab_path)?;
    let mut report = DownReport::default();
    let state = labdir.load().ok().flatten().unwrap_or_default();
    for (name, st) in &state.guests {
        if st.proc.is_some_and(|p| p.alive()) {
            report.processes += 1;
        }
        guest::stop(st);
        report.guests.push(name.clone());
    }
    if let Some(p) = state.forwarder {
        if p.alive() {
            report.processes += 1;
        }
        p.kill();
    }
    let netns = labdir.netns();
    for pid in netns.pids() {
        if let Some(p) = Proc::of(pid) {
            report.processes += 1;
            p.kill();
            let _ = p.wait_gone(Duration::from_secs(10));
        }
    }
    if netns.exists() {
        netns.delete()?;
        report.netns = Some(netns.name.clone());
    }
    report.data_kept = if purge_data {
        Vec::new()
    } else {
        data::kept(&labdir)
    };
    if report.data_kept.is_empty() {
        if labdir.dir.exists() {
            guest::remove_dir(&labdir.dir)?;
            report.dir = Some(labdir.dir.clone());
        }
    } else {
        // Everything but the data volumes.
        let keep = data::root(&labdir);
        let entries = std::fs::read_dir(&labdir.dir)
            .with_context(|| format!("reading {}", labdir.dir.display()))?;
        let mut removed = false;
        for e in entries.flatten() {
            let p = e.path();
            if p == keep {
                continue;
            }
            removed = true;
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                guest::remove_dir(&p)?;
            } else {
                std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
        if removed {
            report.dir = Some(labdir.dir.clone());
        }
    }
    Ok(report)
}

/// The lab's namespace and a guest's address, for `ssh` and `verify`.
pub fn locate(lab: &Lab, state_root: &Path) -> Result<(LabDir, net::Netns)> {
    let labdir = LabDir::new(state_root, &lab.path)?;
    let netns = labdir.netns();
    if !netns.exists() {
        anyhow::bail!(
            "the lab {} is not up on this machine (no network namespace {}); run `imgbuild up` first",
            lab.path.display(),
            netns.name
        );
    }
    Ok((labdir, netns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_inputs_running_is_left_alone_dead_is_restarted_changed_is_recreated() {
        assert_eq!(decide(true, true, true), Action::Unchanged);
        assert_eq!(decide(true, false, true), Action::Restarted);
        // Dead and its disk is gone too: nothing to restart from.
        assert_eq!(decide(true, false, false), Action::Created);
        // A changed seed or image recreates it, running or not.
        assert_eq!(decide(false, true, true), Action::Created);
        assert_eq!(decide(false, false, true), Action::Created);
    }

    #[test]
    fn a_changed_seed_or_image_changes_only_that_guests_fingerprint() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/seed/lab.yaml");
        let lab = crate::model::lab::load(&p).unwrap();
        let image = Baked {
            path: "x".into(),
            sha256: "aa".into(),
        };
        let fp = |lab: &Lab, name: &str, image: &Baked| {
            let g = lab.guest(name).unwrap();
            let seed = crate::seed::for_guest(lab, name).unwrap();
            guest::Desired {
                lab,
                guest: g,
                image,
                seed: &seed,
                seed_yaml: seed.to_yaml(),
                instance_id: seed.instance_id(),
                memory_mib: 1024,
                mac: crate::resolve::mac_for("lab", name),
                data: None,
            }
            .fingerprint()
        };
        let (minio, devlab) = (fp(&lab, "minio", &image), fp(&lab, "devlab", &image));
        let mut changed = lab.clone();
        let os = changed.guests[0].roles.object_store.as_mut().unwrap();
        os.buckets.push("more".into());
        assert_ne!(fp(&changed, "minio", &image), minio, "minio's seed changed");
        assert_eq!(fp(&changed, "devlab", &image), devlab, "devlab's did not");
        let rebaked = Baked {
            sha256: "bb".into(),
            ..image.clone()
        };
        assert_ne!(fp(&lab, "devlab", &rebaked), devlab);
    }
}
