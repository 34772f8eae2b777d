//! What deploy keeps before it changes a guest in place: a snapshot where
//! the guest's storages can take one, else a vzdump backup (`POST
//! /nodes/{node}/vzdump`) to the lab's backup storage (or the first storage
//! of the node with `backup` content), noted `imgbuild lab <lab>: before
//! deploy: ...` so `imgbuild restore` lists it. The plan says which.
//!
//! Snapshot capability follows PVE's storage plugins: LVM-thin, ZFS, Ceph RBD
//! and btrfs snapshot volumes of both guest kinds; directory-like storages
//! (dir, NFS, CIFS, GlusterFS, CephFS) only qcow2 VM disks, and deploy creates
//! raw ones there (PVE's default format for API-created and imported disks);
//! thick LVM and iSCSI never.

use std::fmt;

use anyhow::{Context, Result};
use serde::Serialize;

use super::api::Api;
use super::cluster::Cluster;
use super::params::Params;
use super::plan::Plan;
use super::snapshot::GuestRef;
use super::task;
use crate::model::lab::GuestKind;
use crate::resolve::Topology;

/// Whether volumes deploy puts on a storage of PVE type `storage_type` can
/// be snapshotted (see the module docs).
pub fn can_snapshot(storage_type: &str, _kind: GuestKind) -> bool {
    matches!(
        storage_type,
        "lvmthin" | "zfspool" | "zfs" | "rbd" | "btrfs"
    )
}

/// The backup deploy takes instead of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupFirst {
    /// Where the vzdump archive goes; None: no storage on the node takes backups.
    pub storage: Option<String>,
    /// Why there is no snapshot.
    pub because: String,
}

impl fmt::Display for BackupFirst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.storage {
            Some(s) => write!(
                f,
                "backup first: vzdump to {s} ({}; restore: imgbuild restore GUEST --from latest)",
                self.because
            ),
            None => write!(
                f,
                "no pre-change snapshot or backup: {} and no storage of the node takes backups (`deploy --no-snapshot` changes it without)",
                self.because
            ),
        }
    }
}

/// Turns the plan's pre-change snapshots into backups for guests whose
/// storages cannot snapshot.
pub fn annotate(plan: &mut Plan, topo: &Topology, cluster: &Cluster) {
    for gp in plan.guests.iter_mut().filter(|g| g.snapshot.is_some()) {
        let Some(spec) = topo.guests.iter().find(|s| s.vmid == gp.vmid) else {
            continue;
        };
        let Some(view) = cluster.views.get(&gp.node) else {
            continue;
        };
        let mut used = vec![spec.storage.images.clone()];
        used.extend(spec.data.as_ref().map(|d| d.storage.clone()));
        used.dedup();
        let blocked: Vec<String> = used
            .iter()
            .filter_map(|s| {
                let t = view.storages.get(s).map(|i| i.kind.as_str()).unwrap_or("");
                (!can_snapshot(t, spec.kind)).then(|| format!("storage {s} ({t}) cannot snapshot"))
            })
            .collect();
        if blocked.is_empty() {
            continue;
        }
        let takes_backups = |s: &str| {
            view.storages
                .get(s)
                .is_some_and(|i| i.contents().contains("backup"))
        };
        let storage = topo
            .backup
            .as_ref()
            .map(|b| b.storage.clone())
            .filter(|s| takes_backups(s))
            .or_else(|| view.storages.keys().find(|s| takes_backups(s)).cloned());
        gp.snapshot = None;
        gp.backup_first = Some(BackupFirst {
            storage,
            because: blocked.join(", "),
        });
    }
}

/// `vzdump` of one guest to `storage` (mode snapshot: PVE falls back to
/// suspend where the volumes cannot snapshot), zstd, noted as this lab's.
pub async fn backup(api: &Api, lab: &str, g: &GuestRef, storage: &str, why: &str) -> Result<()> {
    let data = api
        .post(
            &format!("/nodes/{}/vzdump", g.node),
            &Params::new()
                .set("vmid", g.vmid)
                .set("storage", storage)
                .set("mode", "snapshot")
                .set("compress", "zstd")
                .set("notes-template", super::snapshot::description(lab, why)),
        )
        .await
        .with_context(|| format!("backing up {} to {storage}", g.name))?;
    task::run(api, data, std::time::Duration::from_secs(6 * 3600))
        .await
        .with_context(|| format!("backing up {} to {storage}", g.name))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_snapshotting_storages_take_snapshots() {
        for t in ["lvmthin", "zfspool", "rbd", "btrfs"] {
            assert!(
                can_snapshot(t, GuestKind::Lxc) && can_snapshot(t, GuestKind::Vm),
                "{t}"
            );
        }
        for t in ["dir", "lvm", "nfs", "cifs", "iscsi", "cephfs", ""] {
            assert!(
                !can_snapshot(t, GuestKind::Lxc) && !can_snapshot(t, GuestKind::Vm),
                "{t}"
            );
        }
        let b = BackupFirst {
            storage: Some("local".into()),
            because: "storage local-lvm (lvm) cannot snapshot".into(),
        };
        assert!(b
            .to_string()
            .starts_with("backup first: vzdump to local (storage local-lvm (lvm)"));
        let none = BackupFirst { storage: None, ..b };
        assert!(none.to_string().contains("--no-snapshot"));
    }
}
