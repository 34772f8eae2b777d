//! `imgbuild up`: the lab on this machine (the local target). Bakes the
//! images into `dist/` first when they are missing or stale, starts what is
//! not running as the lab says, waits until every guest is ready by the same
//! rule `deploy` uses, and prints the guests with their web UIs on 127.0.0.1.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::commands::fetch::NetArgs;
use crate::target::local::{self, images, vm::Accel, GuestRow, UpOptions};

/// Where the lab lives on this machine (shared by up, status, logs, ssh, down).
#[derive(Debug, Clone, clap::Args)]
pub struct LabArgs {
    /// The lab file.
    #[arg(long, value_name = "FILE", default_value = "lab/homelab.yaml")]
    pub lab: PathBuf,

    /// Where the local target keeps each lab's guests (disks, roots, logs, state).
    #[arg(
        long,
        value_name = "DIR",
        env = "IMGBUILD_STATE_DIR",
        default_value = "/var/lib/imgbuild/local"
    )]
    pub state_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub at: LabArgs,

    /// The image recipes.
    #[arg(long, value_name = "DIR", default_value = "images")]
    pub images: PathBuf,

    /// Where baked images are (and are baked to when missing or stale).
    #[arg(long, value_name = "DIR", default_value = "dist")]
    pub dist: PathBuf,

    /// The static firstboot agent to bake in (default: as `imgbuild bake` finds it).
    #[arg(long, value_name = "FILE")]
    pub agent: Option<PathBuf>,

    /// Bake only from artifacts the lock file pins.
    #[arg(long)]
    pub locked: bool,

    /// When the lab's memory does not fit this machine, give each guest a
    /// proportional share of 80% of the available memory (at least 1 GiB).
    #[arg(long)]
    pub scale_memory: bool,

    /// VM accelerator: KVM when it really boots, else TCG (auto), or force one.
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    pub accel: Accel,

    /// Seconds to wait for every guest to be ready (also `--ready-timeout`,
    /// as deploy, rollback and restore spell it; longer here: a VM may boot
    /// under TCG).
    #[arg(
        long,
        visible_alias = "ready-timeout",
        value_name = "SECS",
        default_value_t = 1200
    )]
    pub timeout: u64,

    /// Print the guests as JSON on stdout instead of a table.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub net: NetArgs,
}

pub fn run(args: Args, cache: &Path) -> Result<()> {
    let t0 = Instant::now();
    let loaded = crate::model::load_all(&args.at.lab, &args.images)?;
    let lab = &loaded.lab;
    local::host::preflight(lab)?;
    let agent = match &args.agent {
        Some(a) => Some(a.clone()),
        None => crate::bake::assemble::find_agent().ok(),
    };
    let mut baked = BTreeMap::new();
    for name in lab.images() {
        let recipe = loaded
            .recipe(&name)
            .expect("load_all checked every image name");
        let recipe_path = args.images.join(format!("{name}.yaml"));
        let lock_path = crate::commands::fetch::default_lock_path(&recipe_path);
        match images::fresh(recipe, &args.dist, &lock_path, agent.as_deref())? {
            Ok(b) => {
                eprintln!("up: image {name}: {} is current", b.path.display());
                baked.insert(name, b);
            }
            Err(why) => {
                eprintln!("up: image {name}: {why}; baking it");
                bake(&args, &recipe_path, cache)?;
                let agent = agent
                    .clone()
                    .or_else(|| crate::bake::assemble::find_agent().ok());
                match images::fresh(recipe, &args.dist, &lock_path, agent.as_deref())? {
                    Ok(b) => {
                        baked.insert(name, b);
                    }
                    Err(why) => bail!("image {name} is still stale after baking it: {why}"),
                }
            }
        }
    }
    let opts = UpOptions {
        state_root: args.at.state_dir.clone(),
        scale_memory: args.scale_memory,
        accel: args.accel,
        timeout: Duration::from_secs(args.timeout),
    };
    let rows = local::up(lab, &baked, &opts, &mut |m| eprintln!("up: {m}"))?;
    print_rows(&rows, args.json)?;
    eprintln!("up: done in {:.1} s", t0.elapsed().as_secs_f64());
    let not_ready: Vec<String> = rows
        .iter()
        .filter(|r| r.state != "ready")
        .map(|r| format!("{} ({}): {}", r.guest, r.state, r.missing.join("; ")))
        .collect();
    if !not_ready.is_empty() {
        bail!(
            "not ready within {} s:\n  {}\n(see `imgbuild logs GUEST`)",
            args.timeout,
            not_ready.join("\n  ")
        );
    }
    Ok(())
}

/// `imgbuild bake` for one recipe, as a child process whose stdout (the
/// image path) goes to our stderr: `up`'s stdout is its table or JSON.
fn bake(args: &Args, recipe: &Path, cache: &Path) -> Result<()> {
    let exe = std::env::current_exe().context("finding the imgbuild executable")?;
    let mut c = std::process::Command::new(exe);
    c.arg("--cache-dir")
        .arg(cache)
        .arg("bake")
        .arg("--recipe")
        .arg(recipe)
        .arg("--out-dir")
        .arg(&args.dist)
        .args(["--retries", &args.net.retries.to_string()])
        .args(["--jobs", &args.net.jobs.to_string()]);
    // Through the environment, not argv: a mirror URL may carry credentials.
    match &args.net.mirror {
        Some(m) => c.env("IMGBUILD_MIRROR", m),
        None => c.env_remove("IMGBUILD_MIRROR"),
    };
    if args.net.trust_mirror_checksums {
        c.arg("--trust-mirror-checksums");
    }
    if let Some(ca) = &args.net.ca_file {
        c.arg("--ca-file").arg(ca);
    }
    if let Some(a) = &args.agent {
        c.arg("--agent").arg(a);
    }
    if args.locked {
        c.arg("--locked");
    }
    if args.net.quiet {
        c.arg("-q");
    }
    let st = c
        .stdout(std::io::stderr())
        .status()
        .context("running imgbuild bake")?;
    if !st.success() {
        bail!("baking {} failed ({st})", recipe.display());
    }
    Ok(())
}

/// The guests as a table (or JSON) on stdout.
pub fn print_rows(rows: &[GuestRow], json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(rows)?);
        return Ok(());
    }
    println!(
        "{:<12} {:<4} {:<16} {:<9} {:<10} SERVICES",
        "GUEST", "KIND", "ADDRESS", "STATE", "DONE"
    );
    for r in rows {
        let done = match (r.action, r.ready_secs) {
            (_, Some(s)) => format!("{s:.0}s"),
            (Some(local::Action::Unchanged), None) => "unchanged".into(),
            _ => "-".into(),
        };
        let kind = match &r.accel {
            Some(a) => format!("{} ({a})", r.kind),
            None => r.kind.clone(),
        };
        println!(
            "{:<12} {:<4} {:<16} {:<9} {:<10} {}",
            r.guest,
            kind,
            r.address,
            r.state,
            done,
            r.services.join(", ")
        );
    }
    let urls: Vec<String> = rows
        .iter()
        .flat_map(|r| {
            r.urls
                .iter()
                .map(move |u| format!("  {:<22} {}  ({})", u.purpose, u.url, r.guest))
        })
        .collect();
    if !urls.is_empty() {
        println!("\nweb UIs (forwarded from the lab's network to this machine):");
        for u in urls {
            println!("{u}");
        }
    }
    Ok(())
}
