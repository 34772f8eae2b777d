//! Proxmox snapshots that are recognisably imgbuild's: named
//! `imgbuild-<label>-<UTC time>` (e.g. `imgbuild-pre-update-20261130T021500Z`,
//! `imgbuild-daily-20261130T030000Z`) and described `imgbuild lab <lab>: ...`
//! on a guest tagged with the lab. Only snapshots matching all three are
//! ever listed, pruned or rolled back to; anything else on the guest is left
//! alone. Taking, listing, pruning (cv4pve-autosnap's `--label --keep`
//! rule) and rolling back.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use super::api::Api;
use super::params::Params;
use super::state;
use super::task;
use crate::model::lab::GuestKind;
use crate::resolve::GuestSpec;

const TASK_TIMEOUT: Duration = Duration::from_secs(600);

/// PVE's snapshot names are `pve-configid`s of at most 40 characters; the
/// `imgbuild-` prefix and the `-YYYYMMDDTHHMMSSZ` suffix leave 14 for the label.
pub const MAX_LABEL: usize = 40 - "imgbuild-".len() - "-20261130T021500Z".len();

/// A label is `[a-z][a-z0-9-]*`, at most [`MAX_LABEL`] characters.
pub fn check_label(label: &str) -> Result<(), String> {
    let ok = label.len() <= MAX_LABEL
        && label.starts_with(|c: char| c.is_ascii_lowercase())
        && label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "label {label:?}: use [a-z][a-z0-9-]*, at most {MAX_LABEL} characters (e.g. daily, weekly, pre-update)"
        ))
    }
}

/// `20261130T021500Z` for a point in time (the form of SigV4's `x-amz-date`).
pub fn utc_stamp(at: SystemTime) -> String {
    let secs = at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    imgbuild_sigv4::amz_date(secs)
}

/// `imgbuild-<label>-<UTC time>`.
pub fn name(label: &str, at: SystemTime) -> String {
    format!("imgbuild-{label}-{}", utc_stamp(at))
}

/// The first line names the lab (that is what makes it this lab's); the
/// rest says why it was taken.
pub fn description(lab: &str, why: &str) -> String {
    format!("imgbuild lab {lab}: {why}")
}

/// One snapshot as `GET .../snapshot` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Snapshot {
    pub name: String,
    #[serde(default)]
    pub snaptime: Option<u64>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub parent: Option<String>,
}

impl Snapshot {
    /// Taken by imgbuild for `lab` (name and description both say so).
    pub fn is_ours(&self, lab: &str) -> bool {
        self.label().is_some()
            && self
                .description
                .lines()
                .next()
                .is_some_and(|l| l.starts_with(&format!("imgbuild lab {lab}:")))
    }

    /// The label of an `imgbuild-<label>-<stamp>` name.
    pub fn label(&self) -> Option<&str> {
        let rest = self.name.strip_prefix("imgbuild-")?;
        let (label, stamp) = rest.rsplit_once('-')?;
        let stamp_ok = stamp.len() == 16
            && stamp.as_bytes()[8] == b'T'
            && stamp.ends_with('Z')
            && stamp[..8].bytes().all(|b| b.is_ascii_digit())
            && stamp[9..15].bytes().all(|b| b.is_ascii_digit());
        (stamp_ok && check_label(label).is_ok()).then_some(label)
    }
}

/// The names to delete so that at most `keep` of this lab's snapshots with
/// `label` remain: the oldest first (names sort by time).
pub fn prune(snaps: &[Snapshot], lab: &str, label: &str, keep: usize) -> Vec<String> {
    let mut mine: Vec<&Snapshot> = snaps
        .iter()
        .filter(|s| s.is_ours(lab) && s.label() == Some(label))
        .collect();
    mine.sort_by(|a, b| a.name.cmp(&b.name));
    let extra = mine.len().saturating_sub(keep);
    mine[..extra].iter().map(|s| s.name.clone()).collect()
}

/// Where a guest is: node, kind, vmid.
#[derive(Debug, Clone)]
pub struct GuestRef {
    pub name: String,
    pub node: String,
    pub kind: GuestKind,
    pub vmid: u32,
}

impl GuestRef {
    /// `spec`'s guest where the cluster has it.
    pub fn new(spec: &GuestSpec, node: &str, kind: GuestKind, vmid: u32) -> Self {
        GuestRef {
            name: spec.name.clone(),
            node: node.to_string(),
            kind,
            vmid,
        }
    }

    /// `spec`'s guest where the lab puts it.
    pub fn planned(spec: &GuestSpec) -> Self {
        Self::new(spec, &spec.node, spec.kind, spec.vmid)
    }

    fn base(&self) -> String {
        state::guest_path(&self.node, self.kind, self.vmid)
    }
}

/// Every snapshot of the guest (the `current` pseudo-entry left out).
pub async fn list(api: &Api, g: &GuestRef) -> Result<Vec<Snapshot>> {
    let all: Vec<Snapshot> = api
        .get(&format!("{}/snapshot", g.base()), &Params::new())
        .await?;
    Ok(all.into_iter().filter(|s| s.name != "current").collect())
}

/// Takes a snapshot (disks and configuration; no RAM state).
pub async fn take(api: &Api, g: &GuestRef, name: &str, description: &str) -> Result<()> {
    let data = api
        .post(
            &format!("{}/snapshot", g.base()),
            &Params::new()
                .set("snapname", name)
                .set("description", description),
        )
        .await?;
    task::run(api, data, TASK_TIMEOUT).await?;
    Ok(())
}

/// Deletes one snapshot.
pub async fn delete(api: &Api, g: &GuestRef, name: &str) -> Result<()> {
    let data = api
        .delete(&format!("{}/snapshot/{name}", g.base()), &Params::new())
        .await?;
    task::run(api, data, TASK_TIMEOUT).await?;
    Ok(())
}

/// Rolls back to `name` (PVE stops the guest for it; it is left stopped).
pub async fn rollback(api: &Api, g: &GuestRef, name: &str) -> Result<()> {
    let data = api
        .post(
            &format!("{}/snapshot/{name}/rollback", g.base()),
            &Params::new(),
        )
        .await?;
    task::run(api, data, TASK_TIMEOUT).await?;
    Ok(())
}

/// Stops the guest if it runs (hard stop: a rollback discards its state anyway).
pub async fn stop(api: &Api, g: &GuestRef) -> Result<()> {
    let data = api
        .post(&format!("{}/status/stop", g.base()), &Params::new())
        .await?;
    task::run(api, data, TASK_TIMEOUT).await?;
    Ok(())
}

/// Starts the guest.
pub async fn start(api: &Api, g: &GuestRef) -> Result<()> {
    let data = api
        .post(&format!("{}/status/start", g.base()), &Params::new())
        .await?;
    task::run(api, data, TASK_TIMEOUT).await?;
    Ok(())
}

/// Takes `imgbuild-<label>-<now>` on the guest, then prunes this lab's
/// `label` snapshots beyond `keep` (when given). Returns (taken, pruned).
pub async fn take_and_prune(
    api: &Api,
    lab: &str,
    g: &GuestRef,
    label: &str,
    why: &str,
    keep: Option<usize>,
) -> Result<(String, Vec<String>)> {
    if let Err(m) = check_label(label) {
        bail!(m);
    }
    let name = name(label, SystemTime::now());
    let existing = list(api, g).await?;
    if existing.iter().any(|s| s.name == name) {
        // Two runs within the same second: the one taken is as good.
        return Ok((name, Vec::new()));
    }
    take(api, g, &name, &description(lab, why)).await?;
    let mut pruned = Vec::new();
    if let Some(keep) = keep {
        let now = list(api, g).await?;
        for old in prune(&now, lab, label, keep) {
            delete(api, g, &old).await?;
            pruned.push(old);
        }
    }
    Ok((name, pruned))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(name: &str, desc: &str) -> Snapshot {
        Snapshot {
            name: name.into(),
            snaptime: None,
            description: desc.into(),
            parent: None,
        }
    }

    #[test]
    fn names_are_valid_pve_configids_and_sort_by_time() {
        let t = UNIX_EPOCH + Duration::from_secs(1_796_004_900); // 2026-11-30 02:15:00 UTC
        assert_eq!(utc_stamp(t), "20261130T021500Z");
        assert_eq!(utc_stamp(UNIX_EPOCH), "19700101T000000Z");
        assert_eq!(
            utc_stamp(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "20000229T000000Z"
        );
        let n = name("pre-update", t);
        assert_eq!(n, "imgbuild-pre-update-20261130T021500Z");
        assert!(n.len() <= 40);
        let longest = name(&"a".repeat(MAX_LABEL), t);
        assert_eq!(longest.len(), 40);
        assert!(check_label(&"a".repeat(MAX_LABEL + 1)).is_err());
        assert!(check_label("Daily").is_err() && check_label("1x").is_err());
        assert!(name("x", t) < name("x", t + Duration::from_secs(1)));
    }

    #[test]
    fn only_this_labs_snapshots_of_the_label_are_pruned() {
        let d = description("homelab", "scheduled (daily)");
        let snaps = vec![
            snap("imgbuild-daily-20261101T030000Z", &d),
            snap("imgbuild-daily-20261103T030000Z", &d),
            snap("imgbuild-daily-20261102T030000Z", &d),
            snap("imgbuild-weekly-20261101T030000Z", &d),
            snap(
                "imgbuild-daily-20261001T030000Z",
                &description("other", "x"),
            ),
            snap("imgbuild-daily-20260901T030000Z", "made by hand"),
            snap("before-kernel-upgrade", "made by hand"),
            snap("imgbuild-daily-garbage", &d),
        ];
        assert_eq!(
            prune(&snaps, "homelab", "daily", 2),
            vec!["imgbuild-daily-20261101T030000Z".to_string()]
        );
        assert_eq!(prune(&snaps, "homelab", "daily", 0).len(), 3);
        assert!(prune(&snaps, "homelab", "daily", 7).is_empty());
        assert_eq!(prune(&snaps, "homelab", "weekly", 0).len(), 1);
        assert!(!snaps[4].is_ours("homelab"));
        assert!(!snaps[5].is_ours("homelab"));
        assert_eq!(snaps[3].label(), Some("weekly"));
        assert_eq!(
            snap("imgbuild-pre-update-20261130T021500Z", &d).label(),
            Some("pre-update")
        );
    }
}
