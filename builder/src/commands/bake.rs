//! `imgbuild bake`: recipe -> fetched, verified artifacts -> payload tree ->
//! image (LXC template or VM qcow2) + manifest in the output directory. Needs
//! no root. Nothing is left half-written: each output appears by rename.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use crate::bake::{assemble, lxc, manifest, vm};
use crate::commands::fetch::{default_lock_path, NetArgs};
use crate::fetch::Fetcher;
use crate::lock::Lock;
use crate::model::recipe::{self, ImageKind};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image recipe to bake (e.g. images/ubuntu-22.04-lxc.yaml).
    #[arg(long, value_name = "FILE")]
    pub recipe: PathBuf,

    /// Where to write <name>.tar.zst / <name>.qcow2 and <name>.manifest.json.
    #[arg(long, value_name = "DIR", default_value = "dist")]
    pub out_dir: PathBuf,

    /// The static firstboot agent to bake in. Default: $IMGBUILD_AGENT, else
    /// the static build under target/ (firstboot/build-static.sh).
    #[arg(long, value_name = "FILE")]
    pub agent: Option<PathBuf>,

    /// Refuse any artifact the lock file does not pin.
    #[arg(long)]
    pub locked: bool,

    /// The lock file. Default: imgbuild.lock in the recipe's directory.
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,

    /// VM images: zstd-compress the qcow2 clusters (smaller upload, QEMU 5.1+ to read).
    #[arg(long)]
    pub compress: bool,

    /// Print the manifest as JSON on stdout instead of the output path.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub net: NetArgs,
}

pub fn run(args: Args, cache: &Path) -> Result<()> {
    let t0 = Instant::now();
    let recipe = recipe::load(&args.recipe)?;
    let agent = match &args.agent {
        Some(a) => {
            assemble::ensure_static(a)?;
            a.clone()
        }
        None => assemble::find_agent()?,
    };
    let say = |msg: String| {
        if !args.net.quiet {
            eprintln!("bake {}: {msg}", recipe.name);
        }
    };

    let lock_path = args
        .lock
        .clone()
        .unwrap_or_else(|| default_lock_path(&args.recipe));
    let lock = Lock::load_or_empty(&lock_path)?;
    let fetcher = Fetcher::new(cache, args.net.options()?)?;
    let pinned = fetcher.pin(&recipe.artifacts(), &lock, args.locked)?;
    crate::commands::fetch::warn_mirror_pins(&pinned);
    say(format!("fetching {} artifacts", pinned.len()));
    let fetched = fetcher.fetch_all(&pinned)?;
    let base = fetched
        .iter()
        .find(|f| f.spec.url == recipe.base.artifact.url)
        .context("the base image was not fetched")?;

    say("assembling the payload".into());
    let payload = assemble::payload_tree(&recipe, &fetched, &agent, cache)?;
    say(format!(
        "payload: {} entries, {:.1} MiB",
        payload.len(),
        payload.content_bytes() as f64 / (1 << 20) as f64
    ));

    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating output directory {}", args.out_dir.display()))?;
    let out = args.out_dir.join(format!(
        "{}.{}",
        recipe.name,
        match recipe.kind {
            ImageKind::Lxc => "tar.zst",
            ImageKind::Vm => "qcow2",
        }
    ));
    say(format!("writing {}", out.display()));
    match recipe.kind {
        ImageKind::Lxc => {
            let stats = lxc::bake_checked(&base.path, &base.digest, &payload, &out)?;
            tracing::info!(?stats, "lxc bake done");
        }
        ImageKind::Vm => {
            let settings = recipe.vm.clone().unwrap_or_default();
            let opts = vm::VmBakeOptions {
                headroom_bytes: settings.headroom_bytes,
                root_label: settings.root_label,
                compress: args.compress,
                base_digest: Some(base.digest.clone()),
                ..vm::VmBakeOptions::default()
            };
            let stats = vm::bake(&base.path, &payload, &out, &opts)?;
            for (stage, d) in &stats.stages {
                say(format!("  {stage:<14} {:>7.2} s", d.as_secs_f64()));
            }
        }
    }

    let m = manifest::Manifest {
        recipe: recipe.name.clone(),
        kind: recipe.kind.as_str(),
        imgbuild_version: env!("CARGO_PKG_VERSION"),
        output: manifest::describe(&out)?,
        inputs: fetched
            .iter()
            .map(|f| manifest::Input {
                name: f.spec.name.clone(),
                url: f.spec.url.to_string(),
                digest: f.digest.to_string(),
            })
            .collect(),
        agent: manifest::describe(&agent)?,
        payload: manifest::PayloadSummary {
            entries: payload.len(),
            bytes: payload.content_bytes(),
        },
    };
    let manifest_path = args.out_dir.join(format!("{}.manifest.json", recipe.name));
    manifest::write(&m, &manifest_path)?;
    say(format!(
        "done in {:.1} s: {} ({:.1} MiB, sha256 {})",
        t0.elapsed().as_secs_f64(),
        out.display(),
        m.output.size as f64 / (1 << 20) as f64,
        m.output.sha256
    ));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&m)?);
    } else {
        println!("{}", out.display());
    }
    Ok(())
}
