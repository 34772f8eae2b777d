//! Content-addressed artifact cache and the download pipeline.
//!
//! Every download goes through one pipeline ([`download`]): stream from a
//! [`source::Source`] → hash (sha256 or sha512, whichever the expected digest
//! uses) → append to `<cache>/partial/<algo>-<hex>` → verify the digest → fsync →
//! rename to `<cache>/blobs/<algo>/<hex>`. A blob exists only if its bytes were
//! verified; a digest mismatch removes the partial. Interrupted transfers keep the
//! partial and resume it with `Range: bytes=N-` (its prefix is hashed again first),
//! within a run (retries) and across runs. Retries: HTTP
//! [`error::RETRYABLE_STATUSES`], connection errors and truncated bodies, with
//! capped exponential backoff ([`crate::http::RetryPolicy`]). Checksum files,
//! which vouch for the bytes, come from their upstream URL only, never from the
//! mirror, unless [`FetchOptions::trust_mirror_checksums`] says otherwise. HTTP goes through
//! the project's one client configuration, [`crate::http`] (rustls with the
//! system's roots, `HTTPS_PROXY`/`NO_PROXY`); the pipeline's stages are `Read`
//! adapters ([`hash::HashingReader`], [`progress::ProgressReader`]) that other
//! transfers (deploy's uploads) stack the same way. A mirror (directory or URL) is asked first, by the
//! artifact's [file name](crate::artifact::ArtifactSpec::file_name); when it lacks
//! the file (404 or no such file) the upstream URL serves it.
//!
//! Library use (what `imgbuild fetch` and `imgbuild bake` do):
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use imgbuild::fetch::{Fetcher, FetchOptions};
//! # let specs: Vec<imgbuild::artifact::ArtifactSpec> = vec![];
//! # let cache_dir = std::path::PathBuf::from("cache");
//! let lock = imgbuild::lock::Lock::load_or_empty("images/imgbuild.lock".as_ref())?;
//! let fetcher = Fetcher::new(&cache_dir, FetchOptions { mirror: None, ..Default::default() })?;
//! // Digests: recipe inline > lock > (unless `locked`) the upstream checksum file.
//! let pinned = fetcher.pin(&specs, &lock, /* locked */ true)?;
//! for f in fetcher.fetch_all(&pinned)? {
//!     println!("{} {} {}", f.spec.name, f.digest, f.path.display());
//! }
//! # Ok(()) }
//! ```
//!
//! Failures name the URL, the artifact and where the recipe declared it; callers
//! that branch on the kind find a [`FetchError`] in the chain with [`fetch_error`].

pub mod cache;
pub mod checksums;
mod download;
pub mod error;
pub mod hash;
pub mod progress;
pub mod signature;
pub mod source;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use url::Url;

use crate::artifact::{file_name_of, ArtifactSpec, Digest, Signed};
use crate::lock::{DigestSource, Learned, Lock, Pinned};
pub use cache::Cache;
pub use download::Backoff;
pub use error::{fetch_error, FetchError};
use progress::Progress;
pub use progress::ProgressMode;
use source::{DirSource, HttpSource, Opened, Source};

/// Read/write buffer size of the pipeline.
pub(crate) const BUF_SIZE: usize = 256 * 1024;

/// Largest checksum file we read.
const MAX_CHECKSUM_FILE: u64 = 1 << 20;

/// A place that serves artifacts by file name before upstream is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mirror {
    /// A directory holding files named like the last segment of their upstream URL.
    Dir(PathBuf),
    /// A base URL; an artifact is `GET <base>/<file name>`.
    Url(Url),
}

impl FromStr for Mirror {
    type Err = String;

    /// `http://` or `https://` means a URL, anything else a directory.
    fn from_str(s: &str) -> Result<Self, String> {
        if s.starts_with("http://") || s.starts_with("https://") {
            // The text may hold a password: never repeat it.
            let url = Url::parse(s).map_err(|e| format!("the mirror URL does not parse: {e}"))?;
            Ok(Mirror::Url(url))
        } else if s.is_empty() {
            Err("the mirror must be a directory or an http(s) URL".into())
        } else {
            Ok(Mirror::Dir(PathBuf::from(s)))
        }
    }
}

impl std::fmt::Display for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mirror::Dir(d) => write!(f, "{}", d.display()),
            Mirror::Url(u) => write!(f, "{}", crate::http::redact(u)),
        }
    }
}

/// How the fetcher behaves. `Default` suits the CLI; tests shrink the delays.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub mirror: Option<Mirror>,
    /// Extra attempts per source after the first (0 = no retries).
    pub retries: u32,
    /// First retry delay; doubles per attempt up to `retry_max_delay`.
    pub retry_delay: Duration,
    pub retry_max_delay: Duration,
    /// Downloads running at once (at least 1).
    pub parallel: usize,
    pub progress: ProgressMode,
    /// Minimum time between plain progress lines of one download.
    pub progress_interval: Duration,
    /// Hash cached blobs again before trusting them.
    pub verify_cache: bool,
    pub connect_timeout: Duration,
    /// Longest silence while reading a response.
    pub read_timeout: Duration,
    /// Extra CA certificates (PEM) trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Read checksum files from the mirror too (before upstream). Off by default:
    /// a mirror supplies bytes, never the digests that vouch for them.
    pub trust_mirror_checksums: bool,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            mirror: None,
            retries: 5,
            retry_delay: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(30),
            parallel: 4,
            progress: ProgressMode::Auto,
            progress_interval: Duration::from_secs(1),
            verify_cache: false,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            ca_file: None,
            trust_mirror_checksums: false,
        }
    }
}

impl FetchOptions {
    /// The shared HTTP configuration these options amount to.
    pub fn http(&self) -> crate::http::HttpConfig {
        crate::http::HttpConfig {
            connect_timeout: self.connect_timeout,
            read_timeout: self.read_timeout,
            ca_file: self.ca_file.clone(),
            retry: self.backoff(),
            ..crate::http::HttpConfig::default()
        }
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            retries: self.retries,
            base: self.retry_delay,
            max: self.retry_max_delay,
        }
    }
}

/// Where a fetched artifact came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Served {
    /// Already in the cache.
    Cache,
    /// The mirror, at this path or URL.
    Mirror(String),
    /// The upstream URL.
    Upstream(String),
}

impl std::fmt::Display for Served {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Served::Cache => write!(f, "cache"),
            Served::Mirror(l) => write!(f, "mirror {l}"),
            Served::Upstream(l) => write!(f, "upstream {l}"),
        }
    }
}

/// A verified artifact in the cache.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub spec: ArtifactSpec,
    pub digest: Digest,
    /// `<cache>/blobs/<algo>/<hex>` (read-only).
    pub path: PathBuf,
    pub served: Served,
    /// Bytes transferred by this run (0 on a cache hit).
    pub transferred: u64,
}

/// A checksum file's text and where it came from.
#[derive(Debug, Clone)]
pub struct ChecksumText {
    pub text: String,
    /// `upstream <URL>` or `mirror <path|URL>`, for messages.
    pub from: String,
    /// The path or URL alone (credentials removed).
    pub location: String,
    pub from_mirror: bool,
}

/// Brings artifacts into the cache. Cheap to share across threads.
pub struct Fetcher {
    cache: Cache,
    opts: FetchOptions,
    client: reqwest::blocking::Client,
    progress: Progress,
}

impl Fetcher {
    /// A fetcher over the cache at `cache_dir` (created if missing).
    pub fn new(cache_dir: &Path, opts: FetchOptions) -> Result<Self> {
        std::fs::create_dir_all(cache_dir)
            .with_context(|| format!("creating cache directory {}", cache_dir.display()))?;
        if let Some(Mirror::Dir(d)) = &opts.mirror {
            if !d.is_dir() {
                bail!("mirror directory {} does not exist", d.display());
            }
        }
        let client = opts.http().blocking_client()?;
        let progress = Progress::new(opts.progress, opts.progress_interval);
        Ok(Fetcher {
            cache: Cache::new(cache_dir),
            opts,
            client,
            progress,
        })
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Gives every spec a definite digest (see [`crate::lock::resolve`]); unpinned
    /// artifacts learn theirs from their checksum file unless `locked`.
    pub fn pin(&self, specs: &[ArtifactSpec], lock: &Lock, locked: bool) -> Result<Vec<Pinned>> {
        crate::lock::resolve(specs, lock, locked, |spec| self.learn(spec))
    }

    /// Fetches all artifacts, `parallel` at a time; results in input order. If any
    /// fails, the others still finish and the error names every failure.
    pub fn fetch_all(&self, pinned: &[Pinned]) -> Result<Vec<Fetched>> {
        let workers = self.opts.parallel.max(1).min(pinned.len());
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<Fetched>>>> =
            Mutex::new((0..pinned.len()).map(|_| None).collect());
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(p) = pinned.get(i) else { break };
                    let r = self.fetch(p);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                });
            }
        });
        let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut ok = Vec::with_capacity(results.len());
        let mut errors = Vec::new();
        for r in results {
            match r.expect("every index was fetched") {
                Ok(f) => ok.push(f),
                Err(e) => errors.push(e),
            }
        }
        match errors.len() {
            0 => Ok(ok),
            1 => Err(errors.pop().expect("one error")),
            n => {
                let list: Vec<String> = errors.iter().map(|e| format!("  - {e:#}")).collect();
                Err(anyhow!("{n} artifacts failed:\n{}", list.join("\n")))
            }
        }
    }

    /// Fetches one artifact: cache hit, else mirror (if any), else upstream.
    pub fn fetch(&self, p: &Pinned) -> Result<Fetched> {
        let spec = &p.spec;
        let what = || format!("artifact `{}` (declared at {})", spec.name, spec.origin);
        let done = |path, served, transferred| Fetched {
            spec: spec.clone(),
            digest: p.digest.clone(),
            path,
            served,
            transferred,
        };
        if let Some(path) = self
            .cache
            .lookup(&p.digest, self.opts.verify_cache)
            .with_context(what)?
        {
            tracing::info!("{}: cached at {}", spec.name, path.display());
            return Ok(done(path, Served::Cache, 0));
        }
        // An upstream signature over the artifact is checked before the bytes
        // are published (its file may come from the mirror: it cannot be forged).
        let signed = match &spec.signature {
            Some(sig) if sig.signs == Signed::Artifact => Some((
                sig,
                self.fetch_signature(&sig.url)
                    .with_context(|| format!("fetching the signature of {}", what()))?,
            )),
            _ => None,
        };
        let verify = signed.as_ref().map(|(sig, bytes)| {
            move |file: &mut std::fs::File| -> Result<()> {
                signature::verify(
                    sig.kind,
                    &sig.key,
                    bytes,
                    std::io::BufReader::with_capacity(BUF_SIZE, file),
                    &format!("artifact `{}`", spec.name),
                )?;
                tracing::info!(
                    "{}: signature verified with {}",
                    spec.name,
                    sig.key.display()
                );
                Ok(())
            }
        });
        let job = download::Job {
            cache: &self.cache,
            digest: &p.digest,
            label: &spec.name,
            backoff: self.backoff(),
            progress: &self.progress,
            verify: verify.as_ref().map(|v| v as &download::VerifyFn),
        };
        let started = Instant::now();
        let mut mirror_miss = None;
        for source in self.sources(&spec.url).with_context(what)? {
            match download::download(&job, source.as_ref()) {
                Ok((path, None)) => {
                    tracing::info!("{}: published meanwhile by another fetch", spec.name);
                    return Ok(done(path, Served::Cache, 0));
                }
                Ok((path, Some(transferred))) => {
                    let served = match source.kind() {
                        "mirror" => Served::Mirror(source.location()),
                        _ => Served::Upstream(source.location()),
                    };
                    tracing::info!(
                        "{}: {} from {served} in {:.2} s",
                        spec.name,
                        progress::size(transferred),
                        started.elapsed().as_secs_f64()
                    );
                    return Ok(done(path, served, transferred));
                }
                Err(e)
                    if source.kind() == "mirror"
                        && fetch_error(&e).is_some_and(FetchError::is_not_found) =>
                {
                    tracing::info!("{}: not in the mirror ({e:#}); trying upstream", spec.name);
                    mirror_miss = Some(source.location());
                }
                Err(e) => {
                    let also = match &mirror_miss {
                        Some(m) => format!(" (the mirror has no {m} either)"),
                        None => String::new(),
                    };
                    return Err(e.context(format!("fetching {}{also}", what())));
                }
            }
        }
        unreachable!("the upstream source is always last and returns")
    }

    /// Reads the checksum file of `spec` from its upstream URL (or, with
    /// [`FetchOptions::trust_mirror_checksums`], from the mirror first) and finds
    /// the artifact's digest there.
    pub fn learn(&self, spec: &ArtifactSpec) -> Result<Learned> {
        let what = || format!("artifact `{}` (declared at {})", spec.name, spec.origin);
        let Some(cs) = &spec.checksums else {
            bail!("{} has neither a digest nor a checksum file", what());
        };
        let signed = spec
            .signature
            .as_ref()
            .filter(|s| s.signs == Signed::Checksums);
        // A signed checksum file may come from the mirror: its signature is
        // checked against the pinned key below.
        let text = self
            .fetch_checksum_file(&cs.url, signed.is_some())
            .with_context(|| format!("fetching the checksum file of {}", what()))?;
        if let Some(sig) = signed {
            let bytes = self
                .fetch_signature(&sig.url)
                .with_context(|| format!("fetching the signature of {}", what()))?;
            signature::verify(
                sig.kind,
                &sig.key,
                &bytes,
                text.text.as_bytes(),
                &format!("checksum file {}", text.from),
            )
            .with_context(|| format!("checking the checksum file of {}", what()))?;
            tracing::info!(
                "{}: checksum file {} signature verified with {}",
                spec.name,
                text.from,
                sig.key.display()
            );
            let digest = checksums::find_digest(&text.text, &spec.file_name(), cs.algo)
                .with_context(|| format!("reading checksum file {} for {}", text.from, what()))?;
            return Ok(Learned::upstream(digest));
        }
        let digest = checksums::find_digest(&text.text, &spec.file_name(), cs.algo)
            .with_context(|| format!("reading checksum file {} for {}", text.from, what()))?;
        let learned = if text.from_mirror {
            tracing::warn!(
                "{}: {digest} from the MIRROR's checksum file {} (--trust-mirror-checksums): \
                 not checked against upstream",
                spec.name,
                text.location
            );
            Learned {
                digest,
                source: DigestSource::MirrorChecksumFile,
                mirror: Some(text.location),
            }
        } else {
            tracing::info!("{}: {digest} from {}", spec.name, text.from);
            Learned::upstream(digest)
        };
        Ok(learned)
    }

    /// Like [`Fetcher::learn`], the digest only.
    pub fn learn_digest(&self, spec: &ArtifactSpec) -> Result<Digest> {
        Ok(self.learn(spec)?.digest)
    }

    /// A checksum file's text: from its upstream URL only, unless the mirror's
    /// checksum files are trusted (then the mirror first). Retried like
    /// downloads; never cached.
    pub fn fetch_checksum_file(&self, url: &Url, signed: bool) -> Result<ChecksumText> {
        let mut sources = self.sources(url)?;
        let skipped_mirror = !(self.opts.trust_mirror_checksums || signed)
            && sources.iter().any(|s| s.kind() == "mirror");
        if skipped_mirror {
            sources.retain(|s| s.kind() != "mirror");
        }
        let mut last = None;
        for source in sources {
            match self.read_text(source.as_ref()) {
                Ok(text) => {
                    return Ok(ChecksumText {
                        text,
                        from: format!("{} {}", source.kind(), source.location()),
                        location: source.location(),
                        from_mirror: source.kind() == "mirror" && !signed,
                    })
                }
                Err(e)
                    if source.kind() == "mirror"
                        && fetch_error(&e).is_some_and(FetchError::is_not_found) =>
                {
                    tracing::info!("{e:#}; trying upstream");
                    last = Some(e);
                }
                Err(e) if skipped_mirror => {
                    return Err(e.context(
                        "checksum files are read from upstream only: a mirror supplies bytes, \
                         not the digests that vouch for them; where upstream is out of reach, \
                         pin from the mirror's checksum files with --trust-mirror-checksums \
                         (the lock file records it)",
                    ))
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow!("no source for {}", crate::http::redact(url))))
    }

    /// A signature file's bytes, from the mirror first (a signature cannot be
    /// forged, so a mirror may serve it), else upstream. A missing signature is
    /// an error: the recipe says upstream signs.
    pub fn fetch_signature(&self, url: &Url) -> Result<Vec<u8>> {
        let mut last = None;
        for source in self.sources(url)? {
            match self.read_bytes(source.as_ref()) {
                Ok(bytes) => return Ok(bytes),
                Err(e)
                    if source.kind() == "mirror"
                        && fetch_error(&e).is_some_and(FetchError::is_not_found) =>
                {
                    last = Some(e)
                }
                Err(e) => return Err(e.context("the signature is missing or unreadable")),
            }
        }
        Err(last
            .unwrap_or_else(|| anyhow!("no source for {}", crate::http::redact(url)))
            .context("the signature is missing"))
    }

    fn read_text(&self, source: &dyn Source) -> Result<String> {
        let bytes = self.read_bytes(source)?;
        String::from_utf8(bytes).with_context(|| format!("{} is not UTF-8 text", source.location()))
    }

    fn read_bytes(&self, source: &dyn Source) -> Result<Vec<u8>> {
        let backoff = self.backoff();
        let mut attempt = 0;
        loop {
            let r = (|| -> Result<Vec<u8>> {
                let Opened::Body(body) = source.open(0)? else {
                    bail!("{}: range not satisfiable", source.location());
                };
                let mut bytes = Vec::new();
                body.reader
                    .take(MAX_CHECKSUM_FILE)
                    .read_to_end(&mut bytes)
                    .map_err(|e| FetchError::Transport {
                        url: source.location(),
                        message: e.to_string(),
                        retryable: true,
                    })?;
                Ok(bytes)
            })();
            match r {
                Err(e)
                    if attempt < backoff.retries
                        && fetch_error(&e).is_some_and(FetchError::is_retryable) =>
                {
                    let delay = backoff.delay(attempt);
                    attempt += 1;
                    tracing::warn!("{e:#}; retrying in {} ms", delay.as_millis());
                    std::thread::sleep(delay);
                }
                other => return other,
            }
        }
    }

    fn backoff(&self) -> Backoff {
        self.opts.backoff()
    }

    /// The sources to try for `url`, in order: the mirror's copy (if any), upstream.
    fn sources(&self, url: &Url) -> Result<Vec<Box<dyn Source>>> {
        let mut out: Vec<Box<dyn Source>> = Vec::new();
        if let Some(mirror) = &self.opts.mirror {
            let name = file_name_of(url);
            if name.is_empty() || name == "." || name == ".." || name.contains('/') {
                bail!(
                    "{} has no usable file name to look up in the mirror",
                    crate::http::redact(url)
                );
            }
            match mirror {
                Mirror::Dir(d) => out.push(Box::new(DirSource {
                    path: d.join(&name),
                })),
                Mirror::Url(base) => {
                    let mut u = base.clone();
                    u.path_segments_mut()
                        .map_err(|()| {
                            anyhow!(
                                "mirror URL {} cannot have a path",
                                crate::http::redact(base)
                            )
                        })?
                        .pop_if_empty()
                        .push(&name);
                    out.push(Box::new(HttpSource {
                        url: u,
                        client: self.client.clone(),
                        kind: "mirror",
                    }));
                }
            }
        }
        match url.scheme() {
            "http" | "https" => out.push(Box::new(HttpSource {
                url: url.clone(),
                client: self.client.clone(),
                kind: "upstream",
            })),
            other => bail!(
                "{}: unsupported scheme {other:?} (expected http or https)",
                crate::http::redact(url)
            ),
        }
        Ok(out)
    }
}
