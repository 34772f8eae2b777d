//! `imgbuild destroy`: removes this lab's guests (tagged with its name) and
//! the volumes it uploaded (images, seed media) from Proxmox, after
//! confirmation. Nothing else is touched.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::deploy::{confirm, read_cluster, runtime, spawn_interrupt_handler, ConnArgs};
use crate::model::lab;
use crate::resolve;
use crate::target::proxmox::{self, api::Api, apply, backup, volumes};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The lab file.
    #[arg(long, value_name = "FILE", default_value = "lab/homelab.yaml")]
    pub lab: PathBuf,

    /// Destroy without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Also delete the guests' data volumes (object-store data). Without it
    /// they are kept on a stopped holder guest each, and the next deploy
    /// attaches them again.
    #[arg(long)]
    pub purge_data: bool,

    /// Print what was removed as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub conn: ConnArgs,
}

pub fn run(args: Args) -> Result<()> {
    let lab = lab::load(&args.lab)?;
    let topo = resolve::resolve(&lab);
    let ep = proxmox::endpoint(&lab, args.conn.insecure_skip_tls_verify)?;
    runtime()?.block_on(async {
        let api = Api::new(&ep)?;
        let cluster = read_cluster(&api, &topo).await?;
        let guests: Vec<_> = cluster
            .guests
            .iter()
            .filter(|r| r.is_ours(&topo.name))
            .cloned()
            .collect();
        let job = backup::read(&api, &topo.name)
            .await
            .ok()
            .flatten()
            .filter(|j| backup::is_ours(j, &topo.name));
        let holders: Vec<_> = cluster
            .guests
            .iter()
            .filter(|r| volumes::is_lab_holder(r, &topo.name))
            .cloned()
            .collect();
        let parking = !args.purge_data;
        if guests.is_empty()
            && cluster.volumes.is_empty()
            && job.is_none()
            && (parking || holders.is_empty())
        {
            eprintln!("nothing of lab {} is on {}", topo.name, ep.base);
            if args.json {
                println!("{}", serde_json::json!({"guests": [], "volumes": []}));
            }
            return Ok(());
        }
        eprintln!("destroy lab {} on {}:", topo.name, ep.base);
        for g in &guests {
            eprintln!(
                "  - {} {} {} on {}",
                g.kind,
                g.vmid,
                g.name.as_deref().unwrap_or(""),
                g.node
            );
        }
        for v in &cluster.volumes {
            eprintln!("  - volume {} on {}", v.volid, v.node);
        }
        if job.is_some() {
            eprintln!("  - backup job {}", backup::job_id(&topo.name));
        }
        if args.purge_data {
            for h in &holders {
                eprintln!("  - data holder {} {} (a parked data volume)", h.kind, h.vmid);
            }
            eprintln!("  - the guests' data volumes (--purge-data)");
        } else if topo.guests.iter().any(|g| g.data.is_some()) {
            eprintln!("  (data volumes are kept on holder guests; --purge-data deletes them too)");
        }
        if !args.yes {
            confirm("Destroy these guests (and their disks) and volumes?")?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        spawn_interrupt_handler(stop.clone());
        let work = tempfile::tempdir().context("creating a work directory")?;
        let ctx = apply::Ctx::new(
            api.clone(),
            &lab,
            &topo,
            apply::Options {
                parallel: 4,
                wait: false,
                ready_timeout: Duration::from_secs(1),
                work: work.path().to_path_buf(),
                snapshot: false,
            },
            stop,
            cluster.volumes.clone(),
        );
        let mut errors = Vec::new();
        let jobs = guests.iter().map(|g| {
            let ctx = &ctx;
            async move {
                let kind = g.kind().unwrap_or(crate::model::lab::GuestKind::Vm);
                let name = g.name.clone().unwrap_or_else(|| g.vmid.to_string());
                if parking {
                    if let Some(spec) = ctx.topo.guests.iter().find(|s| s.vmid == g.vmid && s.data.is_some()) {
                        volumes::park(ctx, spec, g)
                            .await
                            .map_err(|e| format!("{name}: keeping its data volume: {e:#}"))?;
                    }
                }
                apply::delete_guest(ctx, &g.node, kind, g.vmid, &name)
                    .await
                    .map_err(|e| format!("{name}: {e:#}"))
            }
        });
        for r in futures_util::future::join_all(jobs).await {
            if let Err(e) = r {
                errors.push(e);
            }
        }
        errors.extend(apply::cleanup(&ctx, &cluster.volumes).await);
        let mut data_kept = Vec::new();
        if args.purge_data {
            for h in &holders {
                if let Err(e) = volumes::destroy_holder(&ctx, h).await {
                    errors.push(format!("data holder {}: {e:#}", h.vmid));
                }
            }
        } else {
            let now: Vec<crate::target::proxmox::state::Resource> = api
                .get(
                    "/cluster/resources",
                    &crate::target::proxmox::params::Params::new().set("type", "vm"),
                )
                .await?;
            for h in now.iter().filter(|r| volumes::is_lab_holder(r, &topo.name)) {
                eprintln!(
                    "kept: data volume on holder {} {} (imgbuild deploy attaches it again; destroy --purge-data deletes it)",
                    h.kind, h.vmid
                );
                data_kept.push(h.vmid);
            }
        }
        let mut job_removed = false;
        if job.is_some() {
            match backup::remove(&api, &topo.name).await {
                Ok(r) => job_removed = r,
                Err(e) => errors.push(format!("backup job: {e:#}")),
            }
        }
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "guests": guests.iter().map(|g| g.vmid).collect::<Vec<_>>(),
                    "volumes": cluster.volumes.iter().map(|v| &v.volid).collect::<Vec<_>>(),
                    "backup_job_removed": job_removed,
                    "data_kept_on_holders": data_kept,
                    "errors": errors,
                }))?
            );
        }
        if !errors.is_empty() {
            bail!(
                "destroy did not finish:\n  - {}\nrun `imgbuild destroy` again",
                errors.join("\n  - ")
            );
        }
        eprintln!("lab {} destroyed", topo.name);
        Ok(())
    })
}
