//! `imgbuild fetch`: bring a recipe's artifacts into the cache, verified, and
//! print where each one is. Also the download flags `imgbuild lock` shares.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use crate::fetch::{FetchOptions, Fetcher, Mirror, ProgressMode};
use crate::lock::{self, Lock, Pinned};
use crate::model::recipe;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The image recipe whose artifacts to fetch (e.g. images/ubuntu-22.04-vm.yaml).
    #[arg(long, value_name = "FILE")]
    pub recipe: PathBuf,

    /// Refuse any artifact the lock file does not pin (and any recipe digest that
    /// disagrees with it). Without it, unpinned digests come from upstream checksum files.
    #[arg(long)]
    pub locked: bool,

    /// The lock file. Default: imgbuild.lock in the recipe's directory.
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,

    /// Print the results as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    /// Hash cached artifacts again instead of trusting the cache.
    #[arg(long)]
    pub verify_cache: bool,

    #[command(flatten)]
    pub net: NetArgs,
}

/// Download flags shared by `fetch` and `lock`.
#[derive(Debug, clap::Args)]
pub struct NetArgs {
    /// Look artifacts up by file name here before upstream: a directory, or an
    /// http(s) URL (GET <URL>/<file name>). Upstream serves what it lacks.
    /// A URL may carry credentials (https://user:pass@host/): they are sent, never shown.
    // Parsed after clap, whose errors and --help would echo the text.
    #[arg(
        long,
        value_name = "DIR|URL",
        env = "IMGBUILD_MIRROR",
        hide_env_values = true
    )]
    pub mirror: Option<String>,

    /// No progress output on stderr.
    #[arg(short, long)]
    pub quiet: bool,

    /// Extra attempts after a transient failure (HTTP 408/429/500/502/503/504,
    /// connection errors, cut transfers), with exponential backoff.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub retries: u32,

    /// Downloads running at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub jobs: usize,

    /// First retry delay in milliseconds (doubles per attempt, capped at 30 s).
    #[arg(long, value_name = "MS", default_value_t = 500, hide = true)]
    pub retry_delay_ms: u64,

    /// Take checksum files from the mirror (before upstream) when pinning: the
    /// MIRROR then vouches for its own bytes. Only for air-gapped sites and tests
    /// where upstream is out of reach; the lock file records each such pin as
    /// `source: mirror-checksum-file`, and `fetch`/`bake`/`plan` say so.
    #[arg(long)]
    pub trust_mirror_checksums: bool,

    /// Trust the CA certificates in this PEM file too, besides the system's
    /// roots (e.g. a private mirror's CA). Proxies come from HTTPS_PROXY/NO_PROXY.
    #[arg(long, value_name = "FILE", env = "IMGBUILD_CA_FILE")]
    pub ca_file: Option<PathBuf>,
}

impl NetArgs {
    pub fn options(&self) -> Result<FetchOptions> {
        let mirror = match &self.mirror {
            None => None,
            Some(m) => Some(
                m.parse::<Mirror>()
                    .map_err(|e| anyhow::anyhow!("--mirror: {e}"))?,
            ),
        };
        Ok(FetchOptions {
            mirror,
            retries: self.retries,
            retry_delay: Duration::from_millis(self.retry_delay_ms),
            parallel: self.jobs.max(1),
            progress: if self.quiet {
                ProgressMode::Quiet
            } else {
                ProgressMode::Auto
            },
            ca_file: self.ca_file.clone(),
            trust_mirror_checksums: self.trust_mirror_checksums,
            ..FetchOptions::default()
        })
    }
}

/// Says on stderr, even with `--quiet`, which digests a mirror vouched for.
pub fn warn_mirror_pins(pinned: &[Pinned]) {
    for line in pinned.iter().filter_map(Pinned::mirror_warning) {
        eprintln!("warning: {line}");
    }
}

fn pin_of<'a>(pinned: &'a [Pinned], f: &crate::fetch::Fetched) -> Option<&'a Pinned> {
    pinned.iter().find(|p| p.spec.url == f.spec.url)
}

/// The lock file used for a recipe when `--lock` is not given.
pub fn default_lock_path(recipe: &Path) -> PathBuf {
    match recipe.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.join(lock::FILE_NAME),
        _ => PathBuf::from(lock::FILE_NAME),
    }
}

pub fn run(args: Args, cache: &Path) -> Result<()> {
    let recipe = recipe::load(&args.recipe)?;
    let lock_path = args
        .lock
        .clone()
        .unwrap_or_else(|| default_lock_path(&args.recipe));
    let lock = Lock::load_or_empty(&lock_path)?;
    let fetcher = Fetcher::new(
        cache,
        FetchOptions {
            verify_cache: args.verify_cache,
            ..args.net.options()?
        },
    )?;
    let pinned = fetcher.pin(&recipe.artifacts(), &lock, args.locked)?;
    warn_mirror_pins(&pinned);
    let fetched = fetcher.fetch_all(&pinned)?;
    if args.json {
        let items: Vec<_> = fetched
            .iter()
            .map(|f| {
                json!({
                    "name": f.spec.name,
                    "url": f.spec.url.as_str(),
                    "file_name": f.spec.file_name(),
                    "digest": f.digest.to_string(),
                    "path": f.path,
                    "source": f.served.to_string(),
                    "transferred": f.transferred,
                    "pinned_by": pin_of(&pinned, f).map(|p| p.source.as_str()),
                    "pinned_from_mirror": pin_of(&pinned, f).and_then(|p| p.mirror.clone()),
                })
            })
            .collect();
        let v = json!({ "recipe": args.recipe, "artifacts": items });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        for f in &fetched {
            println!("{}\t{}", f.spec.name, f.path.display());
        }
    }
    Ok(())
}
