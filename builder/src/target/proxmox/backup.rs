//! The lab's scheduled backup as a Proxmox backup job (`/cluster/backup`):
//! id `imgbuild-<lab>`, a comment naming the lab, covering exactly the lab's
//! vmids, with the lab's schedule, storage, mode and retention
//! (`prune-backups`). Deploy creates or updates it after the guests are in
//! place; a lab without `backup:` has its old job removed; destroy removes it.
//! A job with that id whose comment is not this lab's is never touched.

use std::collections::BTreeSet;
use std::fmt;

use anyhow::{bail, Result};
use serde::Serialize;
use serde_json::{Map, Value};

use super::api::{Api, Idempotence};
use super::cluster::Cluster;
use super::params::Params;
use crate::resolve::Topology;

/// `imgbuild-homelab`
pub fn job_id(lab: &str) -> String {
    format!("imgbuild-{lab}")
}

/// The job's comment; its start is what makes the job this lab's.
pub fn comment(lab: &str) -> String {
    format!("imgbuild lab {lab}: scheduled backup of its guests; edits here are overwritten by imgbuild deploy")
}

/// The job's comment names `lab`.
pub fn is_ours(job: &Map<String, Value>, lab: &str) -> bool {
    job.get("comment")
        .and_then(Value::as_str)
        .is_some_and(|c| c.starts_with(&format!("imgbuild lab {lab}:")))
}

/// What the job's fields should be (PVE's names), or None without `backup:`.
pub fn wanted(topo: &Topology) -> Option<Vec<(&'static str, String)>> {
    let b = topo.backup.as_ref()?;
    let vmids: BTreeSet<u32> = topo.guests.iter().map(|g| g.vmid).collect();
    Some(vec![
        ("schedule", b.schedule.clone()),
        ("storage", b.storage.clone()),
        ("mode", b.mode.as_str().to_string()),
        (
            "vmid",
            vmids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
        ("prune-backups", b.retention.prune_backups()),
        ("compress", "zstd".into()),
        ("enabled", "1".into()),
        ("comment", comment(&topo.name)),
    ])
}

/// What deploy does to the job.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum JobAction {
    Create,
    Update { changes: Vec<String> },
    Delete,
    Unchanged,
}

/// The job's line in the plan.
#[derive(Debug, Clone, Serialize)]
pub struct JobPlan {
    pub id: String,
    #[serde(flatten)]
    pub action: JobAction,
    /// `02:00 to local (snapshot), keep-daily=7, vmids 100,200`
    pub summary: String,
}

impl JobPlan {
    pub fn mutates(&self) -> bool {
        !matches!(self.action, JobAction::Unchanged)
    }
}

impl fmt::Display for JobPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (sym, what) = match &self.action {
            JobAction::Create => ("+", "create".to_string()),
            JobAction::Update { changes } => ("~", format!("update: {}", changes.join(", "))),
            JobAction::Delete => ("-", "delete (the lab has no backup: section)".into()),
            JobAction::Unchanged => (" ", "unchanged".into()),
        };
        write!(f, "{sym:>3} backup job {}: {what}", self.id)?;
        if !self.summary.is_empty() {
            write!(f, "\n      {}", self.summary)?;
        }
        Ok(())
    }
}

/// Values compared as PVE may rewrite them: lists as sets, numbers as text.
fn norm(key: &str, v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    match key {
        "vmid" | "prune-backups" => {
            let set: BTreeSet<&str> = s.split([',', ';', ' ']).filter(|x| !x.is_empty()).collect();
            set.into_iter().collect::<Vec<_>>().join(",")
        }
        _ => s,
    }
}

/// Compares the wanted job with `actual` (the job with our id, if any).
pub fn diff(topo: &Topology, actual: Option<&Map<String, Value>>) -> Result<Option<JobPlan>> {
    let id = job_id(&topo.name);
    if let Some(job) = actual {
        if !is_ours(job, &topo.name) {
            bail!(
                "a backup job with id {id} exists but its comment does not name lab {}: not touching it (rename that job, or remove it under Datacenter > Backup)",
                topo.name
            );
        }
    }
    let want = wanted(topo);
    let summary = match (&want, &topo.backup) {
        (Some(w), Some(b)) => format!(
            "{} to {} ({}), {}, vmids {}",
            b.schedule,
            b.storage,
            b.mode.as_str(),
            b.retention.prune_backups(),
            w.iter()
                .find(|(k, _)| *k == "vmid")
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        ),
        _ => String::new(),
    };
    let action = match (want, actual) {
        (None, None) => return Ok(None),
        (None, Some(_)) => JobAction::Delete,
        (Some(_), None) => JobAction::Create,
        (Some(w), Some(job)) => {
            let changes: Vec<String> = w
                .iter()
                .filter(|(k, v)| {
                    norm(k, job.get(*k).unwrap_or(&Value::Null))
                        != norm(k, &Value::String(v.clone()))
                })
                .map(|(k, v)| {
                    if *k == "comment" {
                        "comment".to_string()
                    } else {
                        format!(
                            "{k} {} -> {v}",
                            norm(k, job.get(*k).unwrap_or(&Value::Null))
                        )
                    }
                })
                .collect();
            if changes.is_empty() {
                JobAction::Unchanged
            } else {
                JobAction::Update { changes }
            }
        }
    };
    Ok(Some(JobPlan {
        id,
        action,
        summary,
    }))
}

/// The job with this lab's id, if any. A token without `Sys.Audit` on `/`
/// cannot list jobs: Err (preflight names the privilege when the lab wants a job).
pub async fn read(api: &Api, lab: &str) -> Result<Option<Map<String, Value>>> {
    let jobs: Vec<Map<String, Value>> = api.get("/cluster/backup", &Params::new()).await?;
    let id = job_id(lab);
    Ok(jobs
        .into_iter()
        .find(|j| j.get("id").and_then(Value::as_str) == Some(id.as_str())))
}

/// Reads the job again and makes it match the lab. Returns what was done.
pub async fn sync(api: &Api, topo: &Topology) -> Result<Option<String>> {
    let actual = read(api, &topo.name).await?;
    let Some(plan) = diff(topo, actual.as_ref())? else {
        return Ok(None);
    };
    let id = &plan.id;
    let fields = || {
        let mut p = Params::new();
        for (k, v) in wanted(topo).unwrap_or_default() {
            p.push(k, v);
        }
        p
    };
    match &plan.action {
        JobAction::Unchanged => return Ok(None),
        JobAction::Create => {
            api.post("/cluster/backup", &fields().set("id", id)).await?;
        }
        JobAction::Update { .. } => {
            api.put(
                &format!("/cluster/backup/{id}"),
                &fields(),
                Idempotence::Safe,
            )
            .await?;
        }
        JobAction::Delete => {
            api.delete(&format!("/cluster/backup/{id}"), &Params::new())
                .await?;
        }
    }
    Ok(Some(plan.to_string()))
}

/// Removes this lab's job (destroy). Returns whether there was one.
pub async fn remove(api: &Api, lab: &str) -> Result<bool> {
    let Some(job) = read(api, lab).await? else {
        return Ok(false);
    };
    if !is_ours(&job, lab) {
        return Ok(false);
    }
    api.delete(&format!("/cluster/backup/{}", job_id(lab)), &Params::new())
        .await?;
    Ok(true)
}

/// Preflight for the lab's backup: the storage exists on every node the lab
/// uses, is enabled and carries `backup` content; the token may read and
/// write backup jobs.
pub fn preflight(c: &Cluster, topo: &Topology) -> Vec<String> {
    let Some(b) = &topo.backup else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    let sid = &b.storage;
    for (node, v) in &c.views {
        match v.storages.get(sid) {
            None => problems.push(format!(
                "storage {sid} (backup.storage) does not exist on node {node} (or the token cannot see it: it needs Datastore.Audit on /storage/{sid}); it has: {}",
                v.storages.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
            Some(s) if !s.enabled => problems.push(format!(
                "storage {sid} (backup.storage) on node {node} is disabled: enable it with `pvesm set {sid} --disable 0`"
            )),
            Some(s) if !s.contents().contains("backup") => {
                let mut want = s.contents();
                want.insert("backup".into());
                problems.push(format!(
                    "storage {sid} (backup.storage) on node {node} does not carry `backup` content (it has: {}): add it with `pvesm set {sid} --content {}` (or Datacenter > Storage > {sid} > Content), or name a backup storage",
                    if s.content.is_empty() { "none" } else { &s.content },
                    want.into_iter().collect::<Vec<_>>().join(",")
                ));
            }
            Some(_) => {}
        }
    }
    let lack: Vec<&str> = ["Sys.Audit", "Sys.Modify"]
        .into_iter()
        .filter(|p| !c.has("/", p))
        .collect();
    if !lack.is_empty() {
        problems.push(format!(
            "the API token lacks {} on / that Proxmox requires to manage backup jobs (backup:); grant them, or remove the backup: section",
            lack.join(", ")
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norm_compares_lists_as_sets() {
        assert_eq!(norm("vmid", &Value::String("200,100".into())), "100,200");
        assert_eq!(
            norm(
                "prune-backups",
                &Value::String("keep-weekly=4,keep-daily=7".into())
            ),
            "keep-daily=7,keep-weekly=4"
        );
        assert_eq!(norm("enabled", &serde_json::json!(1)), "1");
    }
}
