//! Readiness checks run after the units started: HTTP health endpoints, the
//! seed's buckets (SigV4 PUT), and Spark's worker count. Each polls until it
//! succeeds or its deadline passes; the error keeps the last failure.

use crate::http::{request, resolve, Response};
use crate::plan::Check;
use anyhow::{anyhow, bail, Context, Result};
use imgbuild_sigv4 as sigv4;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const POLL: Duration = Duration::from_millis(500);
/// The S3 users (access key and policy, one per line) the last run created.
pub const S3_USERS_RECORD: &str = "/var/lib/imgbuild/s3-users";
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs one check to completion or deadline: its own, or `run_end` (the
/// whole run's) if that comes first.
pub fn run(root: &Path, check: &Check, run_end: Instant) -> Result<()> {
    match check {
        Check::Http {
            host,
            port,
            path,
            deadline,
            ..
        } => {
            let addr = SocketAddr::new(resolve(root, host)?, *port);
            poll(*deadline, run_end, || {
                let r = get(addr, host, *port, path)?;
                if r.status != 200 {
                    bail!("GET http://{host}:{port}{path} answered {}", r.status);
                }
                Ok(())
            })
        }
        Check::Buckets {
            port,
            access_key,
            secret_key,
            buckets,
            deadline,
        } => {
            let addr = SocketAddr::from(([127, 0, 0, 1], *port));
            for b in buckets {
                poll(*deadline, run_end, || {
                    create_bucket(addr, access_key, secret_key.expose(), b)
                })
                .with_context(|| format!("creating bucket {b}"))?;
            }
            Ok(())
        }
        Check::S3Users {
            port,
            access_key,
            secret_key,
            users,
            deadline,
        } => {
            let admin = crate::madmin::Admin {
                addr: SocketAddr::from(([127, 0, 0, 1], *port)),
                access_key,
                secret_key: secret_key.expose(),
            };
            // Users an earlier seed listed and this one does not are removed
            // (user first, then its policy): a dropped Spark guest's keys stop
            // working. The record holds names only, never secrets.
            let record = crate::fsutil::under(root, S3_USERS_RECORD);
            let before = std::fs::read_to_string(&record).unwrap_or_default();
            for line in before.lines() {
                let Some((key, policy)) = line.split_once(' ') else {
                    continue;
                };
                if users.iter().any(|u| u.access_key.as_str() == key) {
                    continue;
                }
                poll(*deadline, run_end, || admin.remove_user(key))
                    .with_context(|| format!("removing S3 user {key}"))?;
                if !users.iter().any(|u| u.policy.as_str() == policy) {
                    poll(*deadline, run_end, || admin.remove_canned_policy(policy))
                        .with_context(|| format!("removing policy {policy}"))?;
                }
                tracing::info!(
                    "removed S3 user {key} and its policy {policy}: no longer in the seed"
                );
            }
            for u in users {
                let buckets: Vec<String> =
                    u.buckets.iter().map(|b| b.as_str().to_string()).collect();
                poll(*deadline, run_end, || {
                    admin.ensure_user(
                        u.access_key.as_str(),
                        u.secret_key.expose(),
                        u.policy.as_str(),
                        &buckets,
                    )
                })
                .with_context(|| format!("creating S3 user {}", u.access_key))?;
            }
            let now: String = users
                .iter()
                .map(|u| format!("{} {}\n", u.access_key, u.policy))
                .collect();
            if now != before {
                crate::fsutil::write_file(&record, now.as_bytes(), 0o600, 0, 0)
                    .with_context(|| format!("writing {}", record.display()))?;
            }
            Ok(())
        }
        Check::SparkWorkers {
            host,
            port,
            workers,
            deadline,
        } => {
            let addr = SocketAddr::new(resolve(root, host)?, *port);
            poll(*deadline, run_end, || {
                let r = get(addr, host, *port, "/json/")?;
                let alive = alive_workers(&r)?;
                if alive < *workers {
                    bail!("http://{host}:{port}/json/ lists {alive} ALIVE workers, waiting for {workers}");
                }
                Ok(())
            })
        }
    }
}

/// A plain GET with the check's timeout.
fn get(addr: SocketAddr, host: &str, port: u16, path: &str) -> Result<crate::http::Response> {
    request(
        addr,
        &format!("{host}:{port}"),
        "GET",
        path,
        &[],
        b"",
        REQUEST_TIMEOUT,
    )
}

fn poll(deadline: Duration, run_end: Instant, mut f: impl FnMut() -> Result<()>) -> Result<()> {
    let start = Instant::now();
    let own_end = start + deadline;
    let end = own_end.min(run_end);
    loop {
        let err = match f() {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= end {
            let why = if end < own_end {
                format!(
                    "still failing after {}s, when the run's deadline came",
                    start.elapsed().as_secs()
                )
            } else {
                format!("still failing after {}s", deadline.as_secs())
            };
            return Err(err.context(why));
        }
        tracing::debug!("not yet: {err:#}");
        std::thread::sleep(POLL);
    }
}

/// Counts workers in state ALIVE in the master's `/json/` answer.
pub fn alive_workers(r: &Response) -> Result<u32> {
    if r.status != 200 {
        bail!("Spark master /json/ answered {}", r.status);
    }
    let v: serde_json::Value =
        serde_json::from_slice(&r.body).context("Spark master /json/ is not JSON")?;
    let workers = v
        .get("workers")
        .and_then(|w| w.as_array())
        .ok_or_else(|| anyhow!("no workers array"))?;
    Ok(workers
        .iter()
        .filter(|w| w.get("state").and_then(|s| s.as_str()) == Some("ALIVE"))
        .count() as u32)
}

/// PUT /<bucket>, path style, SigV4 (region us-east-1, MinIO's default).
/// 200, or 409 BucketAlreadyOwnedByYou, means the bucket is there.
pub fn create_bucket(
    addr: SocketAddr,
    access_key: &str,
    secret_key: &str,
    bucket: &str,
) -> Result<()> {
    let host = addr.to_string();
    let date = sigv4::amz_date_now();
    let path = format!("/{bucket}");
    let auth = sigv4::S3Call {
        method: "PUT",
        path: &path,
        query: &[],
        host: &host,
        payload_sha256: sigv4::EMPTY_SHA256,
        amz_date: &date,
    }
    .authorization(access_key, secret_key);
    let r = request(
        addr,
        &host,
        "PUT",
        &path,
        &[
            ("x-amz-content-sha256", sigv4::EMPTY_SHA256),
            ("x-amz-date", &date),
            ("Authorization", &auth),
        ],
        b"",
        REQUEST_TIMEOUT,
    )?;
    let body = String::from_utf8_lossy(&r.body);
    match r.status {
        200 => Ok(()),
        409 if body.contains("BucketAlreadyOwnedByYou") => Ok(()),
        s => bail!(
            "PUT http://{host}{path} answered {s}: {}",
            body.chars().take(300).collect::<String>()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_alive_workers() {
        let body = br#"{"url":"spark://devlab:7077","workers":[{"id":"w1","state":"ALIVE"},{"id":"w0","state":"DEAD"}],"aliveworkers":1}"#;
        let r = Response {
            status: 200,
            body: body.to_vec(),
        };
        assert_eq!(alive_workers(&r).unwrap(), 1);
        assert!(alive_workers(&Response {
            status: 503,
            body: vec![]
        })
        .is_err());
    }
}
