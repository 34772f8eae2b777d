//! `imgbuild lock`: read every recipe in the images directory, learn each
//! artifact's digest (inline in the recipe, or from its checksum file at the
//! upstream URL; from a mirror's copy only with `--trust-mirror-checksums`,
//! recorded as such) and write the lock file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::fetch::NetArgs;
use crate::fetch::Fetcher;
use crate::lock;
use crate::model::recipe;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory of image recipes (`*.yaml`).
    #[arg(long, value_name = "DIR", default_value = "images")]
    pub images: PathBuf,

    /// The lock file to write. Default: imgbuild.lock in the images directory.
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,

    /// Do not write; fail if the lock file is missing or differs from what would be
    /// written (for CI).
    #[arg(long)]
    pub check: bool,

    /// Print the pinned artifacts as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub net: NetArgs,
}

pub fn run(args: Args, cache: &Path) -> Result<()> {
    let recipes = recipe::load_dir(&args.images)?;
    let lock_path = args
        .lock
        .clone()
        .unwrap_or_else(|| args.images.join(lock::FILE_NAME));
    let inputs: Vec<(String, Vec<_>)> = recipes
        .iter()
        .map(|r| {
            let name = r
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| r.path.display().to_string());
            (name, r.artifacts())
        })
        .collect();
    let fetcher = Fetcher::new(cache, args.net.options()?)?;
    let new = lock::build(&inputs, |spec| fetcher.learn(spec))?;
    let text = new.to_yaml();
    let old = std::fs::read_to_string(&lock_path).ok();
    let unchanged = old.as_deref() == Some(text.as_str());
    if args.check {
        if !unchanged {
            bail!(
                "{} is {}; run `imgbuild lock` and commit the result",
                lock_path.display(),
                if old.is_some() {
                    "out of date"
                } else {
                    "missing"
                }
            );
        }
    } else if !unchanged {
        new.write(&lock_path)
            .with_context(|| format!("writing lock file {}", lock_path.display()))?;
    }
    let verb = match (args.check, unchanged) {
        (_, true) => "up to date",
        (false, false) => "written",
        (true, false) => unreachable!("checked above"),
    };
    if args.json {
        let v = json!({
            "lock": lock_path,
            "status": verb,
            "artifacts": new.artifacts.iter().map(|(url, e)| json!({
                "url": url,
                "digest": e.digest.to_string(),
                "source": e.source,
                "mirror": e.mirror,
                "checksums": e.checksums,
                "recipes": e.recipes,
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for (url, e) in &new.artifacts {
            println!("{}\t{url}", e.digest);
        }
    }
    for (url, e) in new
        .artifacts
        .iter()
        .filter(|(_, e)| e.source.is_from_mirror())
    {
        eprintln!(
            "warning: {url} is pinned from the mirror's checksum file {} \
             (--trust-mirror-checksums), not from upstream",
            e.mirror.as_deref().unwrap_or("(unknown)")
        );
    }
    if !args.json {
        eprintln!(
            "{}: {verb} ({} artifacts)",
            lock_path.display(),
            new.artifacts.len()
        );
    }
    Ok(())
}
