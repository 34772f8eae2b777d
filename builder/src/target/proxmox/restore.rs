//! vzdump backups of the lab's guests and restoring one of them.
//!
//! A backup is a volume with `backup` content named
//! `backup/vzdump-{qemu|lxc}-<vmid>-<YYYY_MM_DD-HH_MM_SS>.{vma|tar}[.zst]`,
//! whether the lab's backup job or anyone else made it; the ones listed are
//! those of the guest's vmid and kind on the storages of its node that carry
//! `backup` content (`GET /nodes/{node}/storage/{storage}/content
//! ?content=backup&vmid=`).
//!
//! A restore is PVE's own: a create from the archive over the existing guest
//! (`force=1`, the guest stopped first): `POST /nodes/{node}/qemu` with
//! `archive=<volid>` (qmrestore: disks back to their storages) or
//! `POST /nodes/{node}/lxc` with `ostemplate=<volid>`, `restore=1` and
//! `storage=` the guest's root storage (pct's simple restore mode puts every
//! mount point there). The archive holds the whole guest: its system and the
//! data volume it backed up (`mp0` has `backup=1`, `scsi1` is backed up), so
//! the data goes back to the backup's time too.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::api::Api;
use super::params::Params;
use super::state;
use super::task;
use crate::model::lab::GuestKind;

const TASK_TIMEOUT: Duration = Duration::from_secs(3600);

/// One backup volume as the storage content lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Backup {
    pub volid: String,
    #[serde(default)]
    pub ctime: Option<u64>,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub vmid: Option<u32>,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub protected: Option<serde_json::Value>,
}

/// The guest kind and vmid a vzdump volume name says it holds.
pub fn archive_of(volid: &str) -> Option<(GuestKind, u32)> {
    let (_, volname) = volid.split_once(':')?;
    let file = volname.strip_prefix("backup/")?;
    let rest = file.strip_prefix("vzdump-")?;
    let (kind, rest) = rest.split_once('-')?;
    let kind = match kind {
        "qemu" => GuestKind::Vm,
        "lxc" => GuestKind::Lxc,
        _ => return None,
    };
    let (vmid, _) = rest.split_once('-')?;
    Some((kind, vmid.parse().ok()?))
}

/// The backups of `vmid` (of `kind`) on the node's storages with `backup`
/// content, newest first.
pub async fn list(api: &Api, node: &str, kind: GuestKind, vmid: u32) -> Result<Vec<Backup>> {
    #[derive(Deserialize)]
    struct Storage {
        storage: String,
    }
    let storages: Vec<Storage> = api
        .get(
            &format!("/nodes/{node}/storage"),
            &Params::new().set("content", "backup").set("enabled", 1),
        )
        .await
        .with_context(|| format!("listing the backup storages of node {node}"))?;
    let mut out = Vec::new();
    for s in storages {
        let items: Vec<Backup> = api
            .get(
                &format!("/nodes/{node}/storage/{}/content", s.storage),
                &Params::new().set("content", "backup").set("vmid", vmid),
            )
            .await
            .with_context(|| format!("listing the backups on storage {}", s.storage))?;
        for b in items {
            // A shared storage lists the same volume on every node's path once.
            if archive_of(&b.volid) == Some((kind, vmid))
                && !out.iter().any(|o: &Backup| o.volid == b.volid)
            {
                out.push(b);
            }
        }
    }
    out.sort_by(|a, b| b.ctime.cmp(&a.ctime).then(b.volid.cmp(&a.volid)));
    Ok(out)
}

/// Picks `from` among `backups`: `latest`, or a volid as listed.
pub fn pick<'a>(backups: &'a [Backup], from: &str, guest: &str) -> Result<&'a Backup> {
    if from == "latest" {
        return backups
            .first()
            .with_context(|| format!("{guest} has no backup to restore"));
    }
    match backups.iter().find(|b| b.volid == from) {
        Some(b) => Ok(b),
        None => bail!(
            "{from} is not a backup of {guest} (imgbuild restore {guest} lists them){}",
            match archive_of(from) {
                Some((k, id)) => format!(": it holds {} {id}", state::api_kind(k)),
                None => String::new(),
            }
        ),
    }
}

/// The create request that restores `volid` over guest `vmid`.
pub fn params(kind: GuestKind, vmid: u32, volid: &str, root_storage: &str) -> Params {
    let p = Params::new().set("vmid", vmid);
    match kind {
        GuestKind::Vm => p.set("archive", volid).flag("force", true),
        GuestKind::Lxc => p
            .set("ostemplate", volid)
            .flag("restore", true)
            .flag("force", true)
            .set("storage", root_storage),
    }
}

/// Restores the archive (the guest must be stopped); leaves it stopped.
pub async fn restore(
    api: &Api,
    node: &str,
    kind: GuestKind,
    vmid: u32,
    volid: &str,
    root_storage: &str,
) -> Result<()> {
    let data = api
        .post(
            &format!("/nodes/{node}/{}", state::api_kind(kind)),
            &params(kind, vmid, volid, root_storage),
        )
        .await
        .with_context(|| format!("restoring {} {vmid} from {volid}", state::api_kind(kind)))?;
    task::run(api, data, TASK_TIMEOUT)
        .await
        .with_context(|| format!("restoring {} {vmid} from {volid}", state::api_kind(kind)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(volid: &str, ctime: u64) -> Backup {
        Backup {
            volid: volid.into(),
            ctime: Some(ctime),
            size: None,
            vmid: None,
            format: None,
            notes: None,
            protected: None,
        }
    }

    #[test]
    fn archive_names_say_kind_and_vmid() {
        assert_eq!(
            archive_of("local:backup/vzdump-lxc-200-2026_11_30-02_00_00.tar.zst"),
            Some((GuestKind::Lxc, 200))
        );
        assert_eq!(
            archive_of("pbs:backup/vzdump-qemu-100-2026_11_30-02_00_00.vma.zst"),
            Some((GuestKind::Vm, 100))
        );
        for bad in [
            "local:iso/x.iso",
            "local:backup/vzdump-openvz-1-2026_11_30-02_00_00.tar",
            "local:backup/other.tar",
            "backup/vzdump-lxc-200-x.tar",
        ] {
            assert_eq!(archive_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn restores_are_creates_over_the_guest_as_pve_takes_them() {
        let vm = params(GuestKind::Vm, 100, "local:backup/v.vma.zst", "local-lvm");
        assert_eq!(vm.get("archive"), Some("local:backup/v.vma.zst"));
        assert_eq!(vm.get("force"), Some("1"));
        assert_eq!(
            vm.get("storage"),
            None,
            "VM disks go back to their storages"
        );
        let ct = params(GuestKind::Lxc, 200, "local:backup/c.tar.zst", "local-lvm");
        assert_eq!(
            (
                ct.get("ostemplate"),
                ct.get("restore"),
                ct.get("force"),
                ct.get("storage")
            ),
            (
                Some("local:backup/c.tar.zst"),
                Some("1"),
                Some("1"),
                Some("local-lvm")
            )
        );
    }

    #[test]
    fn pick_latest_or_exactly_a_listed_one() {
        let list = vec![
            b(
                "local:backup/vzdump-lxc-200-2026_11_30-02_00_00.tar.zst",
                20,
            ),
            b(
                "local:backup/vzdump-lxc-200-2026_11_29-02_00_00.tar.zst",
                10,
            ),
        ];
        assert_eq!(pick(&list, "latest", "minio").unwrap().ctime, Some(20));
        assert_eq!(
            pick(&list, &list[1].volid, "minio").unwrap().ctime,
            Some(10)
        );
        let e = pick(
            &list,
            "local:backup/vzdump-qemu-100-2026_11_30-02_00_00.vma.zst",
            "minio",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("not a backup of minio") && e.contains("qemu 100"),
            "{e}"
        );
        assert!(pick(&[], "latest", "minio").is_err());
    }
}
