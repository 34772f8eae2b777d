//! `imgbuild deploy`: the lab onto Proxmox VE over its API. Reads the
//! cluster, runs preflight (every problem at once, nothing changed), prints a
//! plan, asks (unless `--yes`), applies it, waits until each guest is ready,
//! removes the seed media and prints where everything is. `--plan` stops
//! after the plan. A second run with nothing changed sends no mutating request.

use std::io::{IsTerminal, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::model;
use crate::resolve;
use crate::target::proxmox::{
    self, api::Api, apply, backup, cluster::Cluster, plan, preflight, volumes,
};

#[derive(Debug, clap::Args)]
// Deploy waits for every guest, and its --no-wait leaves their seed media
// attached: its help says so.
#[command(
    mut_arg("no_wait", |a| a.help(
        "Do not wait for the guests to be ready (their seed media then stay \
         until a later deploy sees them ready)",
    )),
    mut_arg("ready_timeout", |a| a.help("Seconds to wait for each guest to be ready")),
)]
pub struct Args {
    /// The lab file.
    #[arg(long, value_name = "FILE", default_value = "lab/homelab.yaml")]
    pub lab: PathBuf,

    /// The directory of image recipes.
    #[arg(long, value_name = "DIR", default_value = "images")]
    pub images: PathBuf,

    /// Where the baked images and their manifests are (`imgbuild bake --out-dir`).
    #[arg(long, value_name = "DIR", default_value = "dist")]
    pub dist: PathBuf,

    /// Print the plan and change nothing.
    #[arg(long)]
    pub plan: bool,

    /// Apply without asking.
    #[arg(long, short = 'y')]
    pub yes: bool,

    /// Machine-readable output on stdout (plan and outcome).
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub wait: WaitArgs,

    /// Change guests without taking a snapshot first (for storages that
    /// cannot snapshot; the plan shows which guests would get one).
    #[arg(long)]
    pub no_snapshot: bool,

    /// Guests handled at once.
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub parallel: u32,

    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Whether, and how long, to wait for a guest to be ready after its start
/// (deploy, rollback, restore).
#[derive(Debug, Clone, clap::Args)]
pub struct WaitArgs {
    /// Do not wait for the guest to be ready after its start.
    #[arg(long)]
    pub no_wait: bool,

    /// Seconds to wait for the guest to be ready.
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    pub ready_timeout: u64,
}

impl WaitArgs {
    /// Unless `--no-wait`, waits (off the async runtime) until `guest` is
    /// ready or `--ready-timeout` passes. False when told not to wait.
    pub async fn ready(&self, lab: &model::lab::Lab, guest: &str) -> Result<bool> {
        if self.no_wait {
            return Ok(false);
        }
        eprintln!("{guest}: waiting until ready");
        let (lab, guest) = (lab.clone(), guest.to_string());
        let timeout = Duration::from_secs(self.ready_timeout);
        let stop = AtomicBool::new(false);
        tokio::task::spawn_blocking(move || {
            crate::target::ready_blocking(&lab, &guest, timeout, &stop)
        })
        .await
        .map_err(|e| anyhow!("readiness check crashed: {e}"))??;
        Ok(true)
    }
}

/// How to reach the API (besides the lab file and IMGBUILD_PVE_* variables).
#[derive(Debug, Clone, clap::Args)]
pub struct ConnArgs {
    /// Do NOT verify the API's TLS certificate. Anyone on the network path can
    /// then read the API token. Pin the fingerprint instead (tls.fingerprint
    /// in the lab, or IMGBUILD_PVE_FINGERPRINT).
    #[arg(long)]
    pub insecure_skip_tls_verify: bool,
}

pub fn run(args: Args) -> Result<()> {
    let loaded = model::load_all(&args.lab, &args.images)?;
    let lab = &loaded.lab;
    let topo = resolve::resolve(lab);
    let want = plan::desired(lab, &topo, &args.dist)?;
    let ep = proxmox::endpoint(lab, args.conn.insecure_skip_tls_verify)?;
    let rt = runtime()?;
    rt.block_on(async move {
        let api = Api::new(&ep)?;
        eprintln!(
            "reading {} (TLS {}, token {})",
            ep.base,
            ep.tls.describe(),
            api.token().id
        );
        let cluster = read_cluster(&api, &topo).await?;
        let mut problems = preflight::check(&cluster, &topo, &topo.name);
        problems.extend(backup::preflight(&cluster, &topo));
        problems.extend(volumes::preflight(&cluster, &topo));
        let job = match backup::read(&api, &topo.name).await {
            Ok(j) => j,
            // Without Sys.Audit on / jobs cannot be read: fine when the lab
            // wants none; preflight names the privilege when it does.
            Err(_) if topo.backup.is_none() || !cluster.has("/", "Sys.Audit") => None,
            Err(e) => return Err(e.context("reading the backup jobs")),
        };
        let job_plan = match backup::diff(&topo, job.as_ref()) {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!("{e:#}"));
                None
            }
        };
        if !problems.is_empty() {
            let mut msg = format!(
                "preflight found {} problem{} (nothing was changed):",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            );
            for p in &problems {
                msg.push_str("\n  - ");
                msg.push_str(p);
            }
            bail!(msg);
        }
        let media: Vec<_> = cluster.volumes.clone();
        let mut plan = plan::diff(&topo.name, &want, &cluster.guests, &media);
        proxmox::prechange::annotate(&mut plan, &topo, &cluster);
        if args.no_snapshot {
            plan.guests.iter_mut().for_each(|g| {
                g.snapshot = None;
                g.backup_first = None;
            });
        }
        plan.backup = job_plan;
        let data_state = volumes::read_state(&api, &topo, &cluster.guests)
            .await
            .context("reading where the data volumes are")?;
        volumes::annotate(&mut plan, &topo, &data_state);
        if !args.json {
            eprintln!(
                "Proxmox VE {} on {}; lab {}:\n",
                cluster.version.version, ep.base, topo.name
            );
            eprint!("{}", plan.render());
        }
        if args.plan {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({"plan": plan}))?);
            }
            return Ok(());
        }
        let finishing = plan.has_work() && plan.changes() == 0;
        if !plan.has_work() || (finishing && args.wait.no_wait) {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({"plan": plan, "outcome": [], "changed": false}))?);
            } else {
                eprintln!("\nNo changes: the cluster matches the lab. Nothing was sent.");
                if finishing {
                    eprintln!("(seed media stay attached until a deploy without --no-wait sees their guests ready)");
                }
            }
            return Ok(());
        }
        if plan.changes() > 0 && !args.yes {
            confirm("Apply this plan?")?;
        }
        let work = tempfile::Builder::new()
            .prefix("imgbuild-deploy-")
            .tempdir()
            .context("creating a private work directory")?;
        let stop = Arc::new(AtomicBool::new(false));
        spawn_interrupt_handler(stop.clone());
        let ctx = apply::Ctx::new(
            api.clone(),
            lab,
            &topo,
            apply::Options {
                parallel: args.parallel as usize,
                wait: !args.wait.no_wait,
                ready_timeout: Duration::from_secs(args.wait.ready_timeout),
                work: work.path().to_path_buf(),
                snapshot: !args.no_snapshot,
            },
            stop,
            cluster.volumes.clone(),
        );
        let outcomes = apply::apply(&ctx, &plan, &want).await;
        let mut errors: Vec<String> = outcomes
            .iter()
            .filter(|o| o.state.starts_with("failed"))
            .map(|o| format!("{}: {}", o.guest, o.state))
            .collect();
        if errors.is_empty() {
            errors.extend(apply::cleanup(&ctx, &plan.cleanup).await);
        }
        if errors.is_empty() {
            // After the guests: the job covers their vmids.
            match backup::sync(&api, &topo).await {
                Ok(Some(done)) => eprintln!("{}", done.trim_start()),
                Ok(None) => {}
                Err(e) => errors.push(format!("backup job: {e:#}")),
            }
        }
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({"plan": plan, "outcome": outcomes, "changed": true, "errors": errors}))?
            );
        } else {
            print!("{}", table(&outcomes));
        }
        if !errors.is_empty() {
            bail!(
                "deploy did not finish:\n  - {}\nrun `imgbuild deploy` again to continue from here",
                errors.join("\n  - ")
            );
        }
        Ok(())
    })
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Reads the cluster, turning connection/auth failures into one preflight message.
pub async fn read_cluster(api: &Api, topo: &resolve::Topology) -> Result<Cluster> {
    Cluster::read(api, topo).await.map_err(|e| {
        let hint = match e.status() {
            Some(s) if s.as_u16() == 401 => "the token was refused: check IMGBUILD_PVE_TOKEN / proxmox.token (USER@REALM!TOKENID=SECRET) and that the token exists (pveum user token list)",
            Some(s) if s.as_u16() == 403 => "the token may not read this: give it the role in the README (\"A token for imgbuild\")",
            Some(_) => "the API answered with an error",
            None => "the endpoint is unreachable or its TLS certificate is not trusted as configured (tls: verify | {fingerprint: ...} | {ca: FILE}, or IMGBUILD_PVE_FINGERPRINT)",
        };
        anyhow::anyhow!("preflight failed (nothing was changed): {e}\n  hint: {hint}")
    })
}

/// Asks on the terminal; refuses when there is none.
pub fn confirm(question: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        bail!("not applying without confirmation: stdin is not a terminal; pass --yes to apply");
    }
    eprint!("\n{question} Only `yes` applies: ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("reading the answer")?;
    if line.trim() != "yes" {
        bail!("not applied (answer was not `yes`)");
    }
    Ok(())
}

/// First Ctrl-C: finish the current step, then stop. Second: exit now.
pub fn spawn_interrupt_handler(stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!(
                "\ninterrupted: stopping after the current step (Ctrl-C again to abort at once)"
            );
            stop.store(true, Ordering::SeqCst);
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("aborted; run the command again to continue from the state left behind");
                std::process::exit(130);
            }
        }
    });
}

fn table(outcomes: &[apply::Outcome]) -> String {
    use std::fmt::Write as _;
    let mut rows = vec![["GUEST", "NODE", "VMID", "ADDRESS", "STATE"]
        .map(String::from)
        .to_vec()];
    for o in outcomes {
        rows.push(vec![
            o.guest.clone(),
            o.node.clone(),
            o.vmid.to_string(),
            o.address.clone(),
            o.state.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::from("\n");
    for r in &rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    for o in outcomes.iter().filter(|o| !o.services.is_empty()) {
        let _ = writeln!(out, "\n{}:", o.guest);
        for s in &o.services {
            let _ = writeln!(out, "  {s}");
        }
    }
    out
}
