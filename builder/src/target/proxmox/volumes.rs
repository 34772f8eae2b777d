//! Data volumes that outlive their guest's system.
//!
//! A guest with a data volume (the object store's data dir) gets it as `mp0`
//! (container: PVE formats and mounts it at the data dir) or `scsi1` (VM:
//! serial `imgbuild-data`; firstboot formats it when blank and mounts it by
//! label). Proxmox owns a volume by its guest's vmid and destroys it with
//! the guest, so before deploy destroys a guest whose system it replaces (or
//! `destroy` removes a guest without `--purge-data`) the volume is *parked*:
//! reassigned (`lxc/{vmid}/move_volume` / `qemu/{vmid}/move_disk` with
//! `target-vmid`, which renames it to the new owner, data untouched) to a
//! *holder*: a stopped, diskless (VM) or minimal (container) guest with the
//! vmid `900000000 + vmid % 100000000`, tagged `imgbuild-data`, the lab and
//! `holds-<vmid>`, never started. The new guest is created without a data
//! volume and the parked one is moved back before its first start.
//!
//! Every step reads where the volume is now (on the guest or on the holder),
//! so a run cut anywhere is completed by the next. PVE refuses to reassign a
//! volume a snapshot refers to: this lab's snapshots of a guest that is
//! about to be destroyed are deleted first (they would go with it); other
//! snapshots make the step fail with a message naming them.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use super::api::Api;
use super::apply::{current, say, upload_once, Ctx, TASK_TIMEOUT};
use super::params::{Params, PropString};
use super::plan::{Action, Change, Plan};
use super::snapshot::{self, GuestRef};
use super::state::{self, Resource};
use super::task;
use crate::model::lab::GuestKind;
use crate::resolve::{DataSpec, GuestSpec, Topology};

/// The VM data disk's serial: firstboot finds the disk by it
/// (`/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_imgbuild-data`).
pub const DATA_SERIAL: &str = "imgbuild-data";
/// The tag of a holder guest.
pub const HOLDER_TAG: &str = "imgbuild-data";

/// The config key of the data volume.
pub fn key(kind: GuestKind) -> &'static str {
    match kind {
        GuestKind::Lxc => "mp0",
        GuestKind::Vm => "scsi1",
    }
}

/// The holder's vmid for a guest's vmid.
pub fn holder_vmid(vmid: u32) -> u32 {
    900_000_000 + vmid % 100_000_000
}

/// A holder's tags (sorted).
pub fn holder_tags(lab: &str, vmid: u32) -> Vec<String> {
    let mut v = vec![
        HOLDER_TAG.to_string(),
        state::lab_tag(lab),
        format!("holds-{vmid}"),
    ];
    v.sort();
    v
}

/// Whether `r` is this lab's holder of `vmid`'s data.
pub fn is_holder_of(r: &Resource, lab: &str, vmid: u32) -> bool {
    let t = r.tag_set();
    r.vmid == holder_vmid(vmid)
        && t.contains(HOLDER_TAG)
        && t.contains(&state::lab_tag(lab))
        && t.contains(&format!("holds-{vmid}"))
}

/// Whether `r` is any holder of this lab.
pub fn is_lab_holder(r: &Resource, lab: &str) -> bool {
    let t = r.tag_set();
    t.contains(HOLDER_TAG) && t.contains(&state::lab_tag(lab))
}

/// The data volume as created with the guest: `local-lvm:16,mp=/var/lib/minio,backup=1`
/// (container) or `local-lvm:16,serial=imgbuild-data,discard=on,backup=1` (VM).
pub fn create_value(kind: GuestKind, d: &DataSpec) -> String {
    let base = PropString::with_default(format!("{}:{}", d.storage, d.size_gib));
    match kind {
        GuestKind::Lxc => base.kv("mp", &d.mount).flag("backup", true),
        GuestKind::Vm => base
            .kv("serial", DATA_SERIAL)
            .kv("discard", "on")
            .flag("backup", true),
    }
    .to_string()
}

/// What happens to a guest's data volume in this run (shown in the plan).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "data", rename_all = "snake_case")]
pub enum DataStep {
    /// A new, empty volume is created with the guest.
    New { storage: String, size_gib: u64 },
    /// Moved to the holder before the old system goes, back onto the new one.
    Kept { holder: u32 },
    /// Parked on the holder (by a destroy or a cut run): moved back.
    Reattach { holder: u32 },
}

impl std::fmt::Display for DataStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataStep::New { storage, size_gib } => {
                write!(f, "new data volume, {size_gib} GiB on {storage}")
            }
            DataStep::Kept { holder } => write!(
                f,
                "data volume kept: parked on holder {holder} while the system is replaced, then attached to the new one"
            ),
            DataStep::Reattach { holder } => {
                write!(f, "data volume reattached from holder {holder}")
            }
        }
    }
}

/// Where each data volume is now: vmid -> (on the guest, on its holder).
#[derive(Debug, Clone, Default)]
pub struct DataState {
    pub on_guest: BTreeMap<u32, bool>,
    pub on_holder: BTreeMap<u32, bool>,
}

async fn config(api: &Api, node: &str, kind: GuestKind, vmid: u32) -> Result<Value> {
    Ok(api
        .get(
            &format!("{}/config", state::guest_path(node, kind, vmid)),
            &Params::new(),
        )
        .await?)
}

fn has_key(cfg: &Value, kind: GuestKind) -> bool {
    cfg.get(key(kind))
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty())
}

/// Reads the configs of the lab's guests that have a data volume, and of
/// their holders (GETs only; none when no guest has one).
pub async fn read_state(api: &Api, topo: &Topology, all: &[Resource]) -> Result<DataState> {
    let mut st = DataState::default();
    for g in topo.guests.iter().filter(|g| g.data.is_some()) {
        if let Some(r) = all
            .iter()
            .find(|r| r.vmid == g.vmid && r.is_ours(&topo.name))
        {
            let kind = r.kind().unwrap_or(g.kind);
            let cfg = config(api, &r.node, kind, r.vmid).await?;
            st.on_guest.insert(g.vmid, has_key(&cfg, kind));
        }
        if let Some(h) = all.iter().find(|r| is_holder_of(r, &topo.name, g.vmid)) {
            let kind = h.kind().unwrap_or(g.kind);
            let cfg = config(api, &h.node, kind, h.vmid).await?;
            st.on_holder.insert(g.vmid, has_key(&cfg, kind));
        }
    }
    Ok(st)
}

/// Adds to the plan what happens to each data volume: kept across a replace
/// (then it is an upgrade), new with a created guest, or reattached from its
/// holder (an existing guest whose volume is parked gets an update step).
pub fn annotate(plan: &mut Plan, topo: &Topology, st: &DataState) {
    for gp in plan.guests.iter_mut() {
        let Some(spec) = topo.guest(&gp.guest).filter(|s| s.vmid == gp.vmid) else {
            continue;
        };
        let Some(d) = &spec.data else { continue };
        let holder = holder_vmid(spec.vmid);
        let parked = st.on_holder.get(&spec.vmid).copied().unwrap_or(false);
        let empty_holder = st.on_holder.get(&spec.vmid) == Some(&false);
        let attached = st.on_guest.get(&spec.vmid).copied().unwrap_or(false);
        gp.data = match &mut gp.action {
            Action::Create if parked => Some(DataStep::Reattach { holder }),
            Action::Create => Some(DataStep::New {
                storage: d.storage.clone(),
                size_gib: d.size_gib,
            }),
            Action::Replace { .. } if attached || parked => {
                // The old guest's snapshots go with it; the data does not.
                gp.snapshot = None;
                Some(DataStep::Kept { holder })
            }
            Action::Replace { .. } => Some(DataStep::New {
                storage: d.storage.clone(),
                size_gib: d.size_gib,
            }),
            Action::Update { changes } if parked && !attached => {
                changes.push(Change::AttachData { holder });
                Some(DataStep::Reattach { holder })
            }
            Action::Unchanged | Action::Finish if parked && !attached => {
                gp.action = Action::Update {
                    changes: vec![Change::AttachData { holder }],
                };
                Some(DataStep::Reattach { holder })
            }
            Action::Update { changes } if empty_holder && attached => {
                changes.push(Change::RemoveHolder { holder });
                None
            }
            Action::Unchanged | Action::Finish if empty_holder && attached => {
                gp.action = Action::Update {
                    changes: vec![Change::RemoveHolder { holder }],
                };
                None
            }
            _ if !attached => {
                gp.notes.push(format!(
                    "it has no data volume ({} on the system disk): it was deployed before data volumes; a replace gives it one (empty)",
                    d.mount
                ));
                None
            }
            _ => None,
        };
    }
}

/// Stops a guest if it runs.
async fn ensure_stopped(ctx: &Ctx<'_>, g: &GuestRef) -> Result<()> {
    if current(ctx, g.vmid).await?.is_some_and(|r| r.running()) {
        say(&g.name, "stopping");
        snapshot::stop(&ctx.api, g).await?;
    }
    Ok(())
}

/// Deletes this lab's snapshots of a guest that is about to be destroyed
/// (they would go with it, and PVE does not reassign a volume a snapshot
/// refers to); fails naming any other snapshot.
async fn drop_lab_snapshots(ctx: &Ctx<'_>, g: &GuestRef) -> Result<()> {
    let snaps = snapshot::list(&ctx.api, g).await?;
    let foreign: Vec<&str> = snaps
        .iter()
        .filter(|s| !s.is_ours(&ctx.topo.name))
        .map(|s| s.name.as_str())
        .collect();
    if !foreign.is_empty() {
        bail!(
            "{} has snapshots that are not imgbuild's ({}): its data volume cannot leave it while they refer to it, and replacing or destroying the guest would delete them; delete them (or copy what you need), then run this again",
            g.name,
            foreign.join(", ")
        );
    }
    for s in snaps {
        say(
            &g.name,
            format!(
                "deleting snapshot {} (it would go with the old guest)",
                s.name
            ),
        );
        snapshot::delete(&ctx.api, g, &s.name).await?;
    }
    Ok(())
}

/// The holder of `spec`'s data as Proxmox lists it now.
async fn holder(ctx: &Ctx<'_>, spec: &GuestSpec) -> Result<Option<Resource>> {
    let h = holder_vmid(spec.vmid);
    match current(ctx, h).await? {
        Some(r) if is_holder_of(&r, &ctx.topo.name, spec.vmid) => Ok(Some(r)),
        Some(r) => bail!(
            "vmid {h} (the data holder of {}) is taken by {} {}, which is not this lab's holder: free that vmid",
            spec.name,
            r.kind,
            r.name.as_deref().unwrap_or("a guest")
        ),
        None => Ok(None),
    }
}

/// Whether `spec`'s data volume is parked on its holder.
pub async fn parked(ctx: &Ctx<'_>, spec: &GuestSpec) -> Result<bool> {
    if spec.data.is_none() {
        return Ok(false);
    }
    match holder(ctx, spec).await? {
        Some(h) => {
            let kind = h.kind().unwrap_or(spec.kind);
            Ok(has_key(
                &config(&ctx.api, &h.node, kind, h.vmid).await?,
                kind,
            ))
        }
        None => Ok(false),
    }
}

/// Creates the holder (stopped, never started) unless it exists.
async fn ensure_holder(ctx: &Ctx<'_>, spec: &GuestSpec, node: &str, kind: GuestKind) -> Result<()> {
    if holder(ctx, spec).await?.is_some() {
        return Ok(());
    }
    let h = holder_vmid(spec.vmid);
    let tags = holder_tags(&ctx.topo.name, spec.vmid).join(";");
    let desc = format!(
        "Managed by imgbuild: holds the data volume of guest {} (vmid {}) of lab {} while its system is replaced, or after `imgbuild destroy` kept it. Never started. `imgbuild deploy` moves the volume back; `imgbuild destroy --purge-data` removes it.",
        spec.name, spec.vmid, ctx.topo.name
    );
    say(
        &spec.name,
        format!("creating data holder {} {h}", kind.as_str()),
    );
    let (path, params, template) = match kind {
        GuestKind::Vm => (
            format!("/nodes/{node}/qemu"),
            Params::new()
                .set("vmid", h)
                .set("name", format!("{}-data", spec.name))
                .set("tags", &tags)
                .set("description", &desc),
            None,
        ),
        GuestKind::Lxc => {
            let tpl = holder_template(ctx, spec, node).await?;
            (
                format!("/nodes/{node}/lxc"),
                Params::new()
                    .set("vmid", h)
                    .set("hostname", format!("{}-data", spec.name))
                    .set("ostemplate", &tpl)
                    .set("ostype", "unmanaged")
                    .set("rootfs", format!("{}:1", spec.storage.images))
                    .flag("unprivileged", true)
                    .set("tags", &tags)
                    .set("description", &desc),
                Some(tpl),
            )
        }
    };
    let data = ctx.api.post(&path, &params).await?;
    task::run(&ctx.api, data, TASK_TIMEOUT).await?;
    if let Some(tpl) = template {
        // Only needed to create the holder.
        super::apply::delete_volume(ctx, node, &spec.storage.vztmpl, &tpl).await?;
    }
    Ok(())
}

/// The minimal template a container holder is made from (a few hundred
/// bytes; `ostype: unmanaged` so PVE sets nothing up in it), uploaded to the
/// node's template storage.
async fn holder_template(ctx: &Ctx<'_>, spec: &GuestSpec, node: &str) -> Result<String> {
    let name = format!("{}holder.tar.zst", state::volume_prefix(&ctx.topo.name));
    let file = ctx.opts.work.join(&name);
    if !file.exists() {
        let f =
            std::fs::File::create(&file).with_context(|| format!("creating {}", file.display()))?;
        let z = zstd::Encoder::new(f, 3)?.auto_finish();
        let mut t = tar::Builder::new(z);
        let text = b"imgbuild data holder: this container only holds a data volume; it is never started.\n";
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(0);
        t.append_data(&mut h, "./", std::io::empty())?;
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(text.len() as u64);
        h.set_mtime(0);
        t.append_data(&mut h, "./README.imgbuild-holder", &text[..])?;
        t.into_inner()?;
    }
    upload_once(
        ctx,
        node,
        &spec.storage.vztmpl,
        "vztmpl",
        &name,
        &file,
        &spec.name,
    )
    .await
}

/// Moves the data volume from the guest `r` to its holder (creating the
/// holder first). Done already (the volume is not on the guest): nothing.
pub async fn park(ctx: &Ctx<'_>, spec: &GuestSpec, r: &Resource) -> Result<()> {
    let kind = r.kind().unwrap_or(spec.kind);
    let k = key(kind);
    let cfg = config(&ctx.api, &r.node, kind, r.vmid).await?;
    if !has_key(&cfg, kind) {
        return Ok(());
    }
    let g = GuestRef::new(spec, &r.node, kind, r.vmid);
    ensure_stopped(ctx, &g).await?;
    drop_lab_snapshots(ctx, &g).await?;
    ensure_holder(ctx, spec, &r.node, kind).await?;
    let h = holder_vmid(spec.vmid);
    say(
        &spec.name,
        format!("parking its data volume ({k}) on holder {h}"),
    );
    move_data(ctx, &r.node, kind, r.vmid, h).await
}

/// Moves the parked data volume back onto the guest (which must exist and
/// be stopped), then destroys the holder. Returns whether it moved.
pub async fn unpark(ctx: &Ctx<'_>, spec: &GuestSpec) -> Result<bool> {
    let Some(h) = holder(ctx, spec).await? else {
        return Ok(false);
    };
    let kind = h.kind().unwrap_or(spec.kind);
    let r = current(ctx, spec.vmid)
        .await?
        .context("the guest vanished before its data volume was attached")?;
    let moved = if has_key(&config(&ctx.api, &h.node, kind, h.vmid).await?, kind) {
        let g = GuestRef::new(spec, &r.node, kind, r.vmid);
        ensure_stopped(ctx, &g).await?;
        if has_key(&config(&ctx.api, &r.node, kind, r.vmid).await?, kind) {
            bail!(
                "{} has a data volume ({}) and its holder {} holds another: not mixing them; move or remove one of them by hand",
                spec.name,
                key(kind),
                h.vmid
            );
        }
        say(
            &spec.name,
            format!("attaching its data volume from holder {}", h.vmid),
        );
        move_data(ctx, &h.node, kind, h.vmid, spec.vmid).await?;
        true
    } else {
        false
    };
    destroy_holder(ctx, &h).await?;
    Ok(moved)
}

async fn move_data(ctx: &Ctx<'_>, node: &str, kind: GuestKind, from: u32, to: u32) -> Result<()> {
    let k = key(kind);
    let (what, params) = match kind {
        GuestKind::Lxc => (
            "move_volume",
            Params::new()
                .set("volume", k)
                .set("target-vmid", to)
                .set("target-volume", k),
        ),
        GuestKind::Vm => (
            "move_disk",
            Params::new()
                .set("disk", k)
                .set("target-vmid", to)
                .set("target-disk", k),
        ),
    };
    let path = format!("{}/{what}", state::guest_path(node, kind, from));
    let data = ctx.api.post(&path, &params).await?;
    task::run(&ctx.api, data, TASK_TIMEOUT).await?;
    Ok(())
}

/// Destroys a holder (with whatever it holds).
pub async fn destroy_holder(ctx: &Ctx<'_>, h: &Resource) -> Result<()> {
    if !is_lab_holder(h, &ctx.topo.name) {
        bail!(
            "vmid {} is not this lab's data holder; not deleting it",
            h.vmid
        );
    }
    let kind = h.kind().unwrap_or(GuestKind::Vm);
    let data = ctx
        .api
        .delete(
            &state::guest_path(&h.node, kind, h.vmid),
            &Params::new()
                .flag("purge", true)
                .flag("destroy-unreferenced-disks", true),
        )
        .await?;
    task::run(&ctx.api, data, TASK_TIMEOUT).await?;
    Ok(())
}

/// Preflight: each data holder's vmid is free or this lab's holder (the
/// privileges on it are checked with the guests' in [`super::preflight`]).
pub fn preflight(c: &super::cluster::Cluster, topo: &Topology) -> Vec<String> {
    let mut problems = Vec::new();
    for g in topo.guests.iter().filter(|g| g.data.is_some()) {
        let h = holder_vmid(g.vmid);
        if let Some(r) = c.guests.iter().find(|r| r.vmid == h) {
            if !is_holder_of(r, &topo.name, g.vmid) {
                problems.push(format!(
                    "vmid {h} is where deploy parks the data volume of {} during an upgrade, but it is taken by {} {} on {}: free that vmid",
                    g.name,
                    r.kind,
                    r.name.as_deref().unwrap_or("(unnamed)"),
                    r.node
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_ids_tags_and_values() {
        assert_eq!(holder_vmid(200), 900_000_200);
        assert_eq!(holder_vmid(123_456_789), 923_456_789);
        let tags = holder_tags("homelab", 200);
        assert_eq!(tags, vec!["holds-200", "imgbuild-data", "lab-homelab"]);
        let d = DataSpec {
            storage: "local-lvm".into(),
            size_gib: 16,
            mount: "/var/lib/minio".into(),
        };
        assert_eq!(
            create_value(GuestKind::Lxc, &d),
            "local-lvm:16,mp=/var/lib/minio,backup=1"
        );
        assert_eq!(
            create_value(GuestKind::Vm, &d),
            "local-lvm:16,serial=imgbuild-data,discard=on,backup=1"
        );
    }
}
