//! Desired vs actual: what the lab wants (with its images' and seeds'
//! digests) against what Proxmox reports, turned into a per-guest plan:
//! create, update in place, replace (image or seed changed), finish (a
//! previous deploy stopped before the guest was ready), unchanged, or delete
//! (this lab's guest that the lab no longer has). Pure: it reads no API.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::state::{self, Resource};
use crate::model::lab::{GuestKind, Lab};
use crate::resolve::{GuestSpec, Topology};

/// The label of the snapshot deploy takes before it changes a guest in place.
pub const PRE_UPDATE: &str = "pre-update";

/// What the lab wants for one guest.
#[derive(Debug, Clone)]
pub struct Desired {
    pub spec: GuestSpec,
    /// sha256 of the seed document (the guest's instance id).
    pub seed_hash: String,
    /// sha256 of the baked image (qcow2 or tar.zst) from its manifest.
    pub image_sha: String,
    pub image_file: PathBuf,
    pub tags: Vec<String>,
}

impl Desired {
    /// Where the guest's seed media go: (storage, content type, volume
    /// name). A cidata ISO for a VM, a personalized template for a container.
    pub fn seed_media(&self, lab: &str) -> (&str, &'static str, String) {
        let s = &self.spec;
        match s.kind {
            GuestKind::Vm => (
                &s.storage.iso,
                "iso",
                state::iso_name(lab, &s.name, &self.seed_hash),
            ),
            GuestKind::Lxc => (
                &s.storage.vztmpl,
                "vztmpl",
                state::template_name(lab, &s.name, &self.seed_hash),
            ),
        }
    }
}

/// The baked image of `name` in `dist`: its file and sha256 (from the manifest
/// bake wrote next to it, checked against the file's size).
pub fn image_in(dist: &Path, name: &str, kind: GuestKind) -> Result<(PathBuf, String)> {
    let ext = match kind {
        GuestKind::Vm => "qcow2",
        GuestKind::Lxc => "tar.zst",
    };
    let file = dist.join(format!("{name}.{ext}"));
    let manifest = dist.join(format!("{name}.manifest.json"));
    let text = std::fs::read_to_string(&manifest).with_context(|| {
        format!(
            "reading {} (bake the image first: imgbuild bake --recipe images/{name}.yaml --out-dir {})",
            manifest.display(),
            dist.display()
        )
    })?;
    let m: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", manifest.display()))?;
    let sha = m["output"]["sha256"]
        .as_str()
        .filter(|s| s.len() == 64)
        .with_context(|| format!("{} has no output.sha256", manifest.display()))?
        .to_string();
    let size = m["output"]["size"].as_u64().unwrap_or(u64::MAX);
    let meta = std::fs::metadata(&file).with_context(|| format!("reading {}", file.display()))?;
    if meta.len() != size {
        anyhow::bail!(
            "{} is {} bytes but its manifest says {size}: re-bake it",
            file.display(),
            meta.len()
        );
    }
    Ok((file, sha))
}

/// Everything the lab wants, with seeds built (secrets resolved) to know their digests.
pub fn desired(lab: &Lab, topo: &Topology, dist: &Path) -> Result<Vec<Desired>> {
    let mut images: BTreeMap<String, (PathBuf, String)> = BTreeMap::new();
    let mut out = Vec::new();
    for g in &topo.guests {
        if !images.contains_key(&g.image) {
            images.insert(g.image.clone(), image_in(dist, &g.image, g.kind)?);
        }
        let (image_file, image_sha) = images[&g.image].clone();
        let seed = crate::seed::for_guest(lab, &g.name)?;
        let seed_hash = seed.instance_id();
        out.push(Desired {
            tags: state::guest_tags(&topo.name, &seed_hash, &image_sha),
            spec: g.clone(),
            seed_hash,
            image_sha,
            image_file,
        });
    }
    Ok(out)
}

/// One change of an in-place update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum Change {
    Cores {
        from: u32,
        to: u32,
    },
    Memory {
        from_mib: u64,
        to_mib: u64,
    },
    DiskGrow {
        from_gib: u64,
        to_gib: u64,
    },
    Start,
    /// The container exists but its personalized template (which holds its
    /// secrets) is still on the storage.
    RemoveTemplate,
    /// Its data volume is parked on its holder: move it back.
    AttachData {
        holder: u32,
    },
    /// An empty data holder is left from a cut run: remove it.
    RemoveHolder {
        holder: u32,
    },
}

impl Change {
    /// `changes` in words, comma-separated, as the plan and the log show them.
    pub fn list(changes: &[Change]) -> String {
        changes
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::Cores { from, to } => write!(f, "cores {from} -> {to}"),
            Change::Memory { from_mib, to_mib } => {
                write!(f, "memory {from_mib} MiB -> {to_mib} MiB")
            }
            Change::DiskGrow { from_gib, to_gib } => {
                write!(f, "disk {from_gib} GiB -> {to_gib} GiB")
            }
            Change::Start => write!(f, "start (it is stopped)"),
            Change::AttachData { holder } => {
                write!(f, "attach its data volume parked on holder {holder}")
            }
            Change::RemoveHolder { holder } => {
                write!(f, "remove the empty data holder {holder}")
            }
            Change::RemoveTemplate => write!(f, "remove its seeded template (it holds secrets)"),
        }
    }
}

/// What deploy does to one guest.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    Create,
    Update {
        changes: Vec<Change>,
    },
    /// Destroyed and created again: the image or the seed changed.
    Replace {
        reasons: Vec<String>,
    },
    /// Exists as wanted but a previous deploy did not see it ready (its seed
    /// media are still on the storage): wait for it, then remove them.
    Finish,
    Unchanged,
    /// This lab's guest, no longer in the lab file.
    Delete,
}

impl Action {
    pub fn mutates(&self) -> bool {
        !matches!(self, Action::Unchanged | Action::Finish)
    }
}

/// The plan for one guest.
#[derive(Debug, Clone, Serialize)]
pub struct GuestPlan {
    pub guest: String,
    pub kind: &'static str,
    pub vmid: u32,
    pub node: String,
    #[serde(flatten)]
    pub action: Action,
    /// Things worth knowing that change nothing (e.g. a disk never shrunk).
    pub notes: Vec<String>,
    /// The label of the snapshot taken before the change (`pre-update`):
    /// `imgbuild-<label>-<UTC time>`, see [`super::snapshot`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// What happens to its data volume (set by [`super::volumes::annotate`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<super::volumes::DataStep>,
    /// A vzdump backup instead of the snapshot, where the guest's storages
    /// cannot snapshot (set by [`super::prechange::annotate`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_first: Option<super::prechange::BackupFirst>,
}

/// Volumes of this lab on a storage, for seed-media leftovers and old images.
#[derive(Debug, Clone, Serialize)]
pub struct Volume {
    pub node: String,
    pub storage: String,
    pub volid: String,
    pub size: u64,
}

impl Volume {
    /// The file name part of `storage:iso/name.iso`.
    pub fn name(&self) -> &str {
        self.volid.rsplit('/').next().unwrap_or(&self.volid)
    }
}

/// The whole plan.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub lab: String,
    pub guests: Vec<GuestPlan>,
    /// This lab's uploads no wanted guest uses any more (old images, seed
    /// media of replaced guests): removed after the guests are done.
    pub cleanup: Vec<Volume>,
    /// The lab's backup job (set by deploy from [`super::backup::diff`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup: Option<super::backup::JobPlan>,
}

impl Plan {
    /// Mutating steps planned (guests to change plus volumes to remove).
    pub fn changes(&self) -> usize {
        self.guests.iter().filter(|g| g.action.mutates()).count()
            + self.cleanup.len()
            + usize::from(self.backup.as_ref().is_some_and(|b| b.mutates()))
    }

    /// Guests that need a step (including waiting) or volumes to remove.
    pub fn has_work(&self) -> bool {
        self.changes() > 0
            || self
                .guests
                .iter()
                .any(|g| matches!(g.action, Action::Finish))
    }
}

/// The names of every volume the wanted guests use.
pub fn wanted_volumes(lab: &str, want: &[Desired]) -> std::collections::BTreeSet<String> {
    let mut keep = std::collections::BTreeSet::new();
    for d in want {
        let s = &d.spec;
        if s.kind == GuestKind::Vm {
            keep.insert(state::import_name(lab, &s.image, &d.image_sha));
        }
        keep.insert(d.seed_media(lab).2);
    }
    keep
}

/// Compares. `actual` is every guest of the cluster; `leftovers` are this
/// lab's seed media still on storage (by name).
pub fn diff(lab: &str, want: &[Desired], actual: &[Resource], leftovers: &[Volume]) -> Plan {
    let mut guests = Vec::new();
    for d in want {
        let s = &d.spec;
        let cur = actual.iter().find(|r| r.vmid == s.vmid);
        let mut notes = Vec::new();
        let mut snapshot = None;
        let action = match cur {
            None => Action::Create,
            Some(r) if !r.is_ours(lab) => {
                // Preflight refuses this; the plan still says why.
                notes.push(format!(
                    "vmid {} is taken by {} on node {} (not this lab's)",
                    s.vmid,
                    r.name.as_deref().unwrap_or("a guest"),
                    r.node
                ));
                Action::Unchanged
            }
            Some(r) => {
                let mut reasons = Vec::new();
                if r.kind() != Some(s.kind) {
                    reasons.push(format!("kind {} -> {}", r.kind, state::api_kind(s.kind)));
                }
                if r.node != s.node {
                    reasons.push(format!("node {} -> {}", r.node, s.node));
                }
                let img = r.tag_value("image").unwrap_or_default();
                if img != state::short(&d.image_sha) {
                    reasons.push(format!(
                        "image {} -> {} (the guest's system is replaced)",
                        if img.is_empty() { "?" } else { &img },
                        state::short(&d.image_sha)
                    ));
                }
                let seed = r.tag_value("seed").unwrap_or_default();
                if seed != state::short(&d.seed_hash) {
                    reasons.push(format!(
                        "seed {} -> {} (firstboot runs again on a new guest)",
                        if seed.is_empty() { "?" } else { &seed },
                        state::short(&d.seed_hash)
                    ));
                }
                if r.lock.as_deref() == Some("create") {
                    reasons.push("a previous create did not finish".into());
                }
                if !reasons.is_empty() {
                    notes.push(
                        "the old guest is destroyed and its snapshots with it (no pre-change snapshot)"
                            .into(),
                    );
                    Action::Replace { reasons }
                } else {
                    let mut changes = Vec::new();
                    let cores = r.maxcpu.unwrap_or(0.0).round() as u32;
                    if cores != s.cores {
                        changes.push(Change::Cores {
                            from: cores,
                            to: s.cores,
                        });
                    }
                    let mem = r.maxmem.unwrap_or(0) / (1024 * 1024);
                    if mem != s.memory_mib {
                        changes.push(Change::Memory {
                            from_mib: mem,
                            to_mib: s.memory_mib,
                        });
                    }
                    let disk = r.maxdisk.unwrap_or(0).div_ceil(1024 * 1024 * 1024);
                    if disk < s.disk_gib {
                        changes.push(Change::DiskGrow {
                            from_gib: disk,
                            to_gib: s.disk_gib,
                        });
                    } else if disk > s.disk_gib {
                        notes.push(format!(
                            "disk is {disk} GiB, the lab says {} GiB: disks are never shrunk",
                            s.disk_gib
                        ));
                    }
                    if !r.running() {
                        changes.push(Change::Start);
                    }
                    let (_, _, media) = d.seed_media(lab);
                    let pending = leftovers.iter().any(|v| v.name() == media);
                    if pending && s.kind == GuestKind::Lxc {
                        changes.push(Change::RemoveTemplate);
                    }
                    if !changes.is_empty() {
                        if changes.iter().any(|c| {
                            matches!(
                                c,
                                Change::Cores { .. }
                                    | Change::Memory { .. }
                                    | Change::DiskGrow { .. }
                            )
                        }) {
                            snapshot = Some(PRE_UPDATE.to_string());
                        }
                        Action::Update { changes }
                    } else if pending {
                        Action::Finish
                    } else {
                        Action::Unchanged
                    }
                }
            }
        };
        guests.push(GuestPlan {
            guest: s.name.clone(),
            kind: s.kind.as_str(),
            vmid: s.vmid,
            node: s.node.clone(),
            action,
            notes,
            snapshot,
            data: None,
            backup_first: None,
        });
    }
    for r in actual {
        if r.is_ours(lab) && !want.iter().any(|d| d.spec.vmid == r.vmid) {
            guests.push(GuestPlan {
                guest: r.name.clone().unwrap_or_else(|| r.vmid.to_string()),
                kind: r.kind().map(GuestKind::as_str).unwrap_or("?"),
                vmid: r.vmid,
                node: r.node.clone(),
                action: Action::Delete,
                notes: vec!["no longer in the lab file".into()],
                snapshot: None,
                data: None,
                backup_first: None,
            });
        }
    }
    let keep = wanted_volumes(lab, want);
    let cleanup = leftovers
        .iter()
        .filter(|v| !keep.contains(v.name()))
        .cloned()
        .collect();
    Plan {
        lab: lab.to_string(),
        guests,
        cleanup,
        backup: None,
    }
}

impl Plan {
    /// The Terraform-like human form.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for g in &self.guests {
            let (sym, what) = match &g.action {
                Action::Create => ("+", "create".to_string()),
                Action::Update { changes } => {
                    ("~", format!("update in place: {}", Change::list(changes)))
                }
                Action::Replace { reasons }
                    if matches!(g.data, Some(super::volumes::DataStep::Kept { .. })) =>
                {
                    (
                        "-/+",
                        format!("upgrade (data kept): {}", reasons.join("; ")),
                    )
                }
                Action::Replace { reasons } => ("-/+", format!("replace: {}", reasons.join("; "))),
                Action::Finish => (
                    ">",
                    "finish: wait until ready, then remove its seed media".into(),
                ),
                Action::Unchanged => (" ", "unchanged".into()),
                Action::Delete => ("-", "delete".into()),
            };
            let _ = writeln!(
                out,
                "{sym:>3} {} ({} {} on {}): {what}",
                g.guest, g.kind, g.vmid, g.node
            );
            if let Some(label) = &g.snapshot {
                let _ = writeln!(
                    out,
                    "      snapshot first: imgbuild-{label}-<UTC time> (rollback: imgbuild rollback {})",
                    g.guest
                );
            }
            if let Some(b) = &g.backup_first {
                let _ = writeln!(out, "      {}", b.to_string().replace("GUEST", &g.guest));
            }
            if let Some(d) = &g.data {
                let _ = writeln!(out, "      {d}");
            }
            for n in &g.notes {
                let _ = writeln!(out, "      note: {n}");
            }
        }
        for v in &self.cleanup {
            let _ = writeln!(
                out,
                "  - volume {} on {}: remove (no longer used)",
                v.volid, v.node
            );
        }
        if let Some(b) = &self.backup {
            let _ = writeln!(out, "{b}");
        }
        let count = |f: fn(&Action) -> bool| self.guests.iter().filter(|g| f(&g.action)).count();
        let _ = writeln!(
            out,
            "\nPlan: {} to create, {} to update, {} to replace, {} to delete, {} unchanged, {} volume(s) to remove.",
            count(|a| matches!(a, Action::Create)),
            count(|a| matches!(a, Action::Update { .. })),
            count(|a| matches!(a, Action::Replace { .. })),
            count(|a| matches!(a, Action::Delete)),
            count(|a| matches!(a, Action::Unchanged | Action::Finish)),
            self.cleanup.len(),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::lab::Storage;

    fn spec(name: &str, vmid: u32, kind: GuestKind) -> GuestSpec {
        GuestSpec {
            name: name.into(),
            kind,
            vmid,
            node: "pve".into(),
            storage: Storage {
                images: "local-lvm".into(),
                iso: "local".into(),
                vztmpl: "local".into(),
                import: "local".into(),
            },
            image: "img".into(),
            cores: 2,
            memory_mib: 4096,
            disk_gib: 20,
            address: "192.168.1.9".parse().unwrap(),
            mac: "02:00:00:00:00:01".into(),
            ports: vec![],
            web: vec![],
            roles: vec![],
            peers: Default::default(),
            object_store_volumes: None,
            spark_master: None,
            spark_master_url: None,
            s3: None,
            spark_auth: None,
            s3_users: vec![],
            data: None,
        }
    }

    fn want(name: &str, vmid: u32, seed: &str, image: &str) -> Desired {
        Desired {
            spec: spec(name, vmid, GuestKind::Lxc),
            seed_hash: seed.repeat(64 / seed.len()),
            image_sha: image.repeat(64 / image.len()),
            image_file: "x".into(),
            tags: state::guest_tags(
                "lab",
                &seed.repeat(64 / seed.len()),
                &image.repeat(64 / image.len()),
            ),
        }
    }

    fn actual_of(d: &Desired) -> Resource {
        Resource {
            vmid: d.spec.vmid,
            node: "pve".into(),
            kind: "lxc".into(),
            name: Some(d.spec.name.clone()),
            status: Some("running".into()),
            tags: Some(d.tags.join(";")),
            maxcpu: Some(2.0),
            maxmem: Some(4096 * 1024 * 1024),
            maxdisk: Some(20 * 1024 * 1024 * 1024),
            lock: None,
            template: None,
        }
    }

    #[test]
    fn unchanged_update_replace_create_delete() {
        let a = want("a", 200, "aa", "11");
        let b = want("b", 201, "bb", "11");
        let c = want("c", 202, "cc", "11");
        let mut ra = actual_of(&a);
        let mut rb = actual_of(&b);
        rb.maxcpu = Some(1.0);
        ra.maxdisk = Some(30 * 1024 * 1024 * 1024);
        let old_c = want("c", 202, "cd", "11");
        let rc = actual_of(&old_c);
        let mut gone = actual_of(&want("gone", 209, "ee", "11"));
        gone.vmid = 209;
        let plan = diff(
            "lab",
            &[a, b, c, want("new", 203, "ff", "11")],
            &[ra, rb, rc, gone],
            &[],
        );
        let acts: Vec<_> = plan
            .guests
            .iter()
            .map(|g| (g.guest.as_str(), &g.action))
            .collect();
        assert!(matches!(acts[0].1, Action::Unchanged));
        assert!(plan.guests[0].notes[0].contains("never shrunk"));
        assert!(
            matches!(acts[1].1, Action::Update { changes } if changes == &vec![Change::Cores{from:1,to:2}])
        );
        assert!(matches!(acts[2].1, Action::Replace { reasons } if reasons[0].starts_with("seed")));
        assert!(matches!(acts[3].1, Action::Create));
        assert!(matches!(acts[4].1, Action::Delete));
        assert_eq!(plan.changes(), 4);
        let text = plan.render();
        assert!(text.contains("Plan: 1 to create, 1 to update, 1 to replace, 1 to delete, 1 unchanged, 0 volume(s) to remove."), "{text}");
    }

    #[test]
    fn seed_media_left_means_finish() {
        let mut a = want("a", 200, "aa", "11");
        a.spec.kind = GuestKind::Vm;
        let mut r = actual_of(&a);
        r.kind = "qemu".into();
        let vol = Volume {
            node: "pve".into(),
            storage: "local".into(),
            volid: format!("local:iso/{}", state::iso_name("lab", "a", &a.seed_hash)),
            size: 1,
        };
        let plan = diff("lab", &[a], &[r], &[vol]);
        assert!(matches!(plan.guests[0].action, Action::Finish));
        assert_eq!(plan.changes(), 0);
    }

    #[test]
    fn a_containers_leftover_template_is_a_change() {
        let a = want("a", 200, "aa", "11");
        let r = actual_of(&a);
        let vol = Volume {
            node: "pve".into(),
            storage: "local".into(),
            volid: format!(
                "local:vztmpl/{}",
                state::template_name("lab", "a", &a.seed_hash)
            ),
            size: 1,
        };
        let plan = diff("lab", &[a], &[r], &[vol]);
        assert!(
            matches!(&plan.guests[0].action, Action::Update { changes } if changes == &vec![Change::RemoveTemplate])
        );
        assert_eq!(plan.changes(), 1);
    }
}
