//! `imgbuild rollback GUEST [--to NAME]`: stop the guest, roll it back to
//! one of this lab's snapshots (the newest by default), start it and wait
//! until it is ready again (`--no-wait` skips the wait). Snapshots that are
//! not this lab's are refused.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Result};

use super::deploy::{confirm, runtime, ConnArgs, WaitArgs};
use super::snapshot::{check_names, deployed};
use crate::model::lab::{self, Lab};
use crate::resolve;
use crate::target::proxmox::snapshot::{self, GuestRef};
use crate::target::proxmox::{self, api::Api, params::Params, state::Resource};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The guest to roll back.
    #[arg(value_name = "GUEST")]
    pub guest: String,

    /// The snapshot (default: this lab's newest snapshot of the guest).
    #[arg(long, value_name = "NAME")]
    pub to: Option<String>,

    /// The lab file.
    #[arg(long, value_name = "FILE", default_value = "lab/homelab.yaml")]
    pub lab: PathBuf,

    /// Roll back without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,

    #[command(flatten)]
    pub wait: WaitArgs,

    #[command(flatten)]
    pub conn: ConnArgs,
}

pub fn run(args: Args) -> Result<()> {
    let lab = lab::load(&args.lab)?;
    let topo = resolve::resolve(&lab);
    check_names(&lab, std::slice::from_ref(&args.guest))?;
    let ep = proxmox::endpoint(&lab, args.conn.insecure_skip_tls_verify)?;
    runtime()?.block_on(async {
        let api = Api::new(&ep)?;
        let g = deployed(&api, &topo, std::slice::from_ref(&args.guest))
            .await?
            .pop()
            .ok_or_else(|| anyhow!("{} is not deployed", args.guest))?;
        let mut ours: Vec<_> = snapshot::list(&api, &g)
            .await?
            .into_iter()
            .filter(|s| s.is_ours(&topo.name))
            .collect();
        ours.sort_by(|a, b| a.name.cmp(&b.name));
        let target = match &args.to {
            Some(n) => match ours.iter().find(|s| &s.name == n) {
                Some(s) => s.clone(),
                None => bail!(
                    "{} has no snapshot {n} of lab {} (imgbuild snapshots {} lists them); snapshots that are not imgbuild's are never rolled back to",
                    g.name, topo.name, g.name
                ),
            },
            None => match ours.last() {
                Some(s) => s.clone(),
                None => bail!("{} has no snapshot of lab {} to roll back to", g.name, topo.name),
            },
        };
        eprintln!(
            "roll back {} ({} {} on {}) to {} ({})",
            g.name,
            g.kind.as_str(),
            g.vmid,
            g.node,
            target.name,
            target.description.lines().next().unwrap_or("")
        );
        if !args.yes {
            confirm("Everything changed on it since then is lost. Roll back?")?;
        }
        let all: Vec<Resource> = api
            .get("/cluster/resources", &Params::new().set("type", "vm"))
            .await?;
        if all.iter().any(|r| r.vmid == g.vmid && r.running()) {
            eprintln!("{}: stopping", g.name);
            snapshot::stop(&api, &g).await?;
        }
        eprintln!("{}: rolling back to {}", g.name, target.name);
        snapshot::rollback(&api, &g, &target.name).await?;
        start_and_wait(&api, &g, &lab, &args.wait, &format!("rolled back to {}", target.name)).await
    })
}

/// Starts `g` after `done` (what was done to it, e.g. `rolled back to NAME`)
/// and, unless `--no-wait`, waits until it is ready; says how it ended.
pub(super) async fn start_and_wait(
    api: &Api,
    g: &GuestRef,
    lab: &Lab,
    wait: &WaitArgs,
    done: &str,
) -> Result<()> {
    eprintln!("{}: starting", g.name);
    snapshot::start(api, g).await?;
    if wait.ready(lab, &g.name).await? {
        eprintln!("{}: {done} and ready", g.name);
    } else {
        eprintln!("{}: {done} and started (not waited for: --no-wait)", g.name);
    }
    Ok(())
}
