//! The one download pipeline: source → hash → partial file in the cache →
//! verify → fsync → rename into `blobs/`. Resumes a partial left by an earlier
//! attempt or run (re-hashing its prefix first), retries transient failures with
//! capped exponential backoff, and never publishes bytes whose digest is wrong.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::cache::Cache;
use super::error::{fetch_error, FetchError};
use super::hash::{Hasher, HashingReader};
use super::progress::{Meter, ProgressReader};
use super::source::{Opened, Source};
use super::BUF_SIZE;
use crate::artifact::Digest;

/// The retry policy of [`crate::http`], under the fetcher's old name.
pub type Backoff = crate::http::RetryPolicy;

/// What the pipeline needs besides the source.
pub struct Job<'a> {
    pub cache: &'a Cache,
    pub digest: &'a Digest,
    pub label: &'a str,
    pub backoff: Backoff,
    pub progress: &'a super::progress::Progress,
    /// Run on the complete, digest-checked file before it is published (an
    /// upstream signature over the artifact); an error discards it.
    pub verify: Option<&'a VerifyFn<'a>>,
}

/// A check of a complete download before it is published.
pub type VerifyFn<'a> = dyn Fn(&mut File) -> Result<()> + Sync + 'a;

/// Downloads `digest` from `source` into the cache; returns the blob path and the
/// number of bytes transferred in this run (`None`: another process published
/// the blob while we waited for the partial's lock).
pub fn download(job: &Job<'_>, source: &dyn Source) -> Result<(PathBuf, Option<u64>)> {
    let (mut file, partial) = job.cache.lock_partial(job.digest)?;
    if let Some(blob) = job.cache.lookup(job.digest, false)? {
        // Another process finished it while we waited for the lock.
        drop_partial_if_empty(&file, &partial);
        return Ok((blob, None));
    }
    let result = run(job, source, &mut file, &partial).map(|(blob, n)| (blob, Some(n)));
    match &result {
        Ok(_) => {}
        // Keep a non-empty partial after source failures so the next attempt (another
        // source, or a rerun) resumes it; it is keyed by the expected digest and
        // verified at the end, so bytes from any source that serves this digest fit.
        Err(e)
            if fetch_error(e).is_some_and(|f| !matches!(f, FetchError::DigestMismatch { .. })) =>
        {
            drop_partial_if_empty(&file, &partial)
        }
        Err(_) => remove(&partial),
    }
    result
}

fn run(
    job: &Job<'_>,
    source: &dyn Source,
    file: &mut File,
    partial: &Path,
) -> Result<(PathBuf, u64)> {
    let location = source.location();
    let mut hasher = Hasher::new(job.digest.algo);
    let mut have = rehash_prefix(file, partial, &mut hasher)?;
    // A resumed prefix may come from a source that changed since; if the result does
    // not verify, start over once from zero before calling it a mismatch.
    let mut may_restart = have > 0;
    let mut attempt = 0u32;
    let mut transferred = 0u64;
    let mut meter: Option<Meter<'_>> = None;
    loop {
        let outcome = attempt_once(
            job,
            source,
            file,
            partial,
            &mut hasher,
            &mut have,
            &mut meter,
            &mut transferred,
        );
        let err = match outcome {
            Ok(()) => {
                let actual = std::mem::replace(&mut hasher, Hasher::new(job.digest.algo)).finish();
                if &actual == job.digest {
                    if let Some(verify) = job.verify {
                        file.seek(SeekFrom::Start(0))
                            .with_context(|| format!("seeking in {}", partial.display()))?;
                        verify(file)?;
                    }
                    let blob = job.cache.publish(file, partial, job.digest)?;
                    if let Some(m) = meter.take() {
                        m.done();
                    }
                    return Ok((blob, transferred));
                }
                if may_restart {
                    tracing::warn!(
                        "{}: the resumed download from {location} hashes to {actual}, not {}; starting over",
                        job.label,
                        job.digest
                    );
                    may_restart = false;
                    truncate(file, partial)?;
                    have = 0;
                    if let Some(m) = meter.as_mut() {
                        m.restart(None);
                    }
                    continue;
                }
                anyhow::Error::new(FetchError::DigestMismatch {
                    url: location.clone(),
                    expected: job.digest.clone(),
                    actual,
                })
            }
            Err(e) => e,
        };
        let retry = fetch_error(&err).is_some_and(FetchError::is_retryable)
            && attempt < job.backoff.retries;
        if !retry {
            if let Some(m) = meter.take() {
                m.failed(&format!("{err:#}"));
            }
            return Err(err);
        }
        let delay = job.backoff.delay(attempt);
        attempt += 1;
        tracing::warn!(
            "{}: {err:#}; retrying in {} ms (attempt {} of {})",
            job.label,
            delay.as_millis(),
            attempt + 1,
            job.backoff.retries + 1
        );
        std::thread::sleep(delay);
    }
}

/// One request: appends the body to the partial, hashing as it goes.
#[allow(clippy::too_many_arguments)]
fn attempt_once<'p>(
    job: &Job<'p>,
    source: &dyn Source,
    file: &mut File,
    partial: &Path,
    hasher: &mut Hasher,
    have: &mut u64,
    meter: &mut Option<Meter<'p>>,
    transferred: &mut u64,
) -> Result<()> {
    let location = source.location();
    let body = match source.open(*have)? {
        Opened::Body(body) => body,
        Opened::PastEnd { total } if *have > 0 && total.is_none_or_eq(*have) => {
            // We already hold every byte (the earlier run was cut just before publishing).
            return Ok(());
        }
        Opened::PastEnd { total } => {
            // Our partial is longer than the artifact: it cannot be right.
            tracing::warn!(
                "{}: partial download is {have} bytes but {location} has {total:?}; starting over",
                job.label
            );
            truncate(file, partial)?;
            *hasher = Hasher::new(job.digest.algo);
            *have = 0;
            return Err(FetchError::Transport {
                url: location,
                message: "range not satisfiable; discarded the partial download".into(),
                retryable: true,
            }
            .into());
        }
    };
    if body.start != *have {
        if body.start != 0 {
            return Err(FetchError::Transport {
                url: location,
                message: format!(
                    "asked for bytes from {have} but the server sent from {}",
                    body.start
                ),
                retryable: false,
            }
            .into());
        }
        // The server ignored Range (HTTP 200): start from scratch.
        tracing::info!(
            "{}: {location} does not resume downloads; starting from zero",
            job.label
        );
        truncate(file, partial)?;
        *hasher = Hasher::new(job.digest.algo);
        *have = 0;
        if let Some(m) = meter.as_mut() {
            m.restart(body.total);
        }
    }
    let m = meter.get_or_insert_with(|| {
        job.progress.meter(
            job.label,
            &format!("{} {location}", source.kind()),
            *have,
            body.total,
        )
    });
    file.seek(SeekFrom::Start(*have))
        .with_context(|| format!("seeking in {}", partial.display()))?;
    // source → progress → hash → partial file. The hasher moves into the stack for
    // this attempt and comes back out (with what it saw) whatever the outcome.
    let hashing = HashingReader::with_hasher(
        ProgressReader::new(body.reader, m),
        std::mem::replace(hasher, Hasher::new(job.digest.algo)),
        *have,
    );
    let mut reader = hashing;
    let mut buf = vec![0u8; BUF_SIZE];
    let copied = loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                break Err(FetchError::Transport {
                    url: location.clone(),
                    message: format!("transfer interrupted after {} bytes: {e}", reader.len()),
                    retryable: true,
                }
                .into())
            }
        };
        if let Err(e) = file.write_all(&buf[..n]) {
            break Err(anyhow::Error::new(e).context(format!("writing {}", partial.display())));
        }
        *transferred += n as u64;
    };
    let (_, h, len) = reader.into_parts();
    *hasher = h;
    *have = len;
    copied?;
    if let Some(total) = body.total {
        if *have != total {
            return Err(FetchError::Transport {
                url: location,
                message: format!("body ended after {} of {total} bytes", *have),
                retryable: true,
            }
            .into());
        }
    }
    Ok(())
}

/// Feeds the bytes already in the partial file to the hasher; returns their count.
fn rehash_prefix(file: &mut File, partial: &Path, hasher: &mut Hasher) -> Result<u64> {
    file.seek(SeekFrom::Start(0))
        .with_context(|| format!("seeking in {}", partial.display()))?;
    let mut buf = vec![0u8; BUF_SIZE];
    let mut have = 0u64;
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", partial.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        have += n as u64;
    }
    if have > 0 {
        tracing::info!("resuming {} at {have} bytes", partial.display());
    }
    Ok(have)
}

fn truncate(file: &mut File, partial: &Path) -> Result<()> {
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)).map(drop))
        .with_context(|| format!("truncating {}", partial.display()))
}

fn drop_partial_if_empty(file: &File, partial: &Path) {
    if file.metadata().map(|m| m.len() == 0).unwrap_or(false) {
        remove(partial);
    }
}

fn remove(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("could not remove {}: {e}", path.display());
        }
    }
}

trait NoneOrEq {
    fn is_none_or_eq(&self, v: u64) -> bool;
}

impl NoneOrEq for Option<u64> {
    fn is_none_or_eq(&self, v: u64) -> bool {
        self.map_or(true, |t| t == v)
    }
}
