//! `imgbuild restore [GUEST] [--from BACKUP]`: without `--from`, list the
//! vzdump backups of the lab's guests (or of GUEST), newest first; with it,
//! restore GUEST from that backup (`latest` for the newest): stop it, let
//! Proxmox restore the archive over it (system and data volume, both as
//! they were when the backup was taken), start it and wait until it is
//! ready. A guest that is gone is restored onto its vmid; a vmid held by
//! something that is not this lab's guest is refused.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Result};

use super::deploy::{confirm, runtime, ConnArgs, WaitArgs};
use super::rollback::start_and_wait;
use super::snapshot::check_names;
use super::snapshots::age;
use crate::model::lab;
use crate::resolve;
use crate::target::proxmox::{
    self, api::Api, params::Params, restore, snapshot, snapshot::GuestRef, state::Resource, volumes,
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The guest to restore, or whose backups to list (default: list all of the lab's).
    #[arg(value_name = "GUEST")]
    pub guest: Option<String>,

    /// The backup to restore: its volume id as listed
    /// (`local:backup/vzdump-lxc-200-2026_11_30-02_00_00.tar.zst`) or `latest`.
    #[arg(long, value_name = "BACKUP", requires = "guest")]
    pub from: Option<String>,

    /// The lab file.
    #[arg(long, value_name = "FILE", default_value = "lab/homelab.yaml")]
    pub lab: PathBuf,

    /// Restore without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,

    #[command(flatten)]
    pub wait: WaitArgs,

    /// The list as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub conn: ConnArgs,
}

pub fn run(args: Args) -> Result<()> {
    let lab = lab::load(&args.lab)?;
    let topo = resolve::resolve(&lab);
    let names: Vec<String> = args.guest.iter().cloned().collect();
    check_names(&lab, &names)?;
    let ep = proxmox::endpoint(&lab, args.conn.insecure_skip_tls_verify)?;
    runtime()?.block_on(async {
        let api = Api::new(&ep)?;
        let all: Vec<Resource> = api
            .get("/cluster/resources", &Params::new().set("type", "vm"))
            .await?;
        // Where each guest is (or would be restored to), and whether it runs.
        let mut targets = Vec::new();
        for spec in topo.guests.iter().filter(|s| names.is_empty() || names.contains(&s.name)) {
            let (node, running) = match all.iter().find(|r| r.vmid == spec.vmid) {
                Some(r) if r.is_ours(&topo.name) && r.kind() == Some(spec.kind) => {
                    (r.node.clone(), Some(r.running()))
                }
                Some(r) if !names.is_empty() => bail!(
                    "vmid {} on {} is not lab {}'s guest {}; not restoring over it",
                    spec.vmid, r.node, topo.name, spec.name
                ),
                Some(_) => continue,
                None => (spec.node.clone(), None),
            };
            let g = GuestRef::new(spec, &node, spec.kind, spec.vmid);
            targets.push((spec, g, running));
        }
        let Some(from) = &args.from else {
            return list(&api, &targets, args.json).await;
        };
        let (spec, g, running) = targets
            .pop()
            .ok_or_else(|| anyhow!("no guest to restore"))?;
        let backups = restore::list(&api, &g.node, g.kind, g.vmid).await?;
        let b = restore::pick(&backups, from, &g.name)?.clone();
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        eprintln!(
            "restore {} ({} {} on {}) from {} (taken {} ago{})",
            g.name,
            g.kind.as_str(),
            g.vmid,
            g.node,
            b.volid,
            b.ctime.map(|t| age(now.saturating_sub(t))).unwrap_or_else(|| "?".into()),
            b.notes.as_deref().map(|n| format!("; notes: {n}")).unwrap_or_default()
        );
        match running {
            None => eprintln!("{} is not deployed: the backup is restored onto vmid {}", g.name, g.vmid),
            Some(_) => eprintln!(
                "{}'s system and its data volume go back to the backup's state: everything written since is lost",
                g.name
            ),
        }
        if all.iter().any(|r| volumes::is_holder_of(r, &topo.name, g.vmid)) {
            eprintln!(
                "note: vmid {} holds a parked data volume of {} (from a destroy or a cut upgrade); the restore does not touch it",
                volumes::holder_vmid(g.vmid),
                g.name
            );
        }
        if !args.yes {
            confirm("Restore?")?;
        }
        if running == Some(true) {
            eprintln!("{}: stopping", g.name);
            snapshot::stop(&api, &g).await?;
        }
        eprintln!("{}: restoring from {}", g.name, b.volid);
        restore::restore(&api, &g.node, g.kind, g.vmid, &b.volid, &spec.storage.images).await?;
        start_and_wait(&api, &g, &lab, &args.wait, &format!("restored from {}", b.volid)).await
    })
}

async fn list(
    api: &Api,
    targets: &[(&resolve::GuestSpec, GuestRef, Option<bool>)],
    json: bool,
) -> Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut rows = Vec::new();
    for (_, g, _) in targets {
        for b in restore::list(api, &g.node, g.kind, g.vmid).await? {
            rows.push(serde_json::json!({
                "guest": g.name, "vmid": g.vmid, "node": g.node, "volid": b.volid,
                "ctime": b.ctime, "age_secs": b.ctime.map(|t| now.saturating_sub(t)),
                "size": b.size, "format": b.format, "notes": b.notes,
            }));
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"backups": rows}))?
        );
        return Ok(());
    }
    if rows.is_empty() {
        eprintln!("restore: no backups of the lab's guests on their nodes' backup storages");
        return Ok(());
    }
    println!("{:<10} {:>6}  {:<9}  VOLUME", "GUEST", "VMID", "AGE");
    for r in &rows {
        println!(
            "{:<10} {:>6}  {:<9}  {}",
            r["guest"].as_str().unwrap_or(""),
            r["vmid"],
            r["age_secs"]
                .as_u64()
                .map(age)
                .unwrap_or_else(|| "?".into()),
            r["volid"].as_str().unwrap_or("")
        );
    }
    eprintln!("restore one with: imgbuild restore GUEST --from VOLUME (or --from latest)");
    Ok(())
}
