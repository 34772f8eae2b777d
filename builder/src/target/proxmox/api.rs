//! The Proxmox VE HTTP API client: token auth, TLS as the lab says, the
//! `{"data": ...}` envelope, parameter errors, retries only where a retry
//! cannot duplicate work, and streamed uploads.
//!
//! Every request goes through [`Api::call`], which is also where each request
//! is logged (method and path only: parameters may carry secrets and the token
//! never leaves the `Authorization` header).

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;
use url::Url;

use super::params::Params;
use super::tls::TlsMode;

/// A PVE API token, `USER@REALM!TOKENID=SECRET`. Debug and Display show the
/// token id only; the secret is only ever written into the auth header.
#[derive(Clone)]
pub struct Token {
    /// `USER@REALM!TOKENID`
    pub id: String,
    secret: String,
}

impl Token {
    /// Parses `USER@REALM!TOKENID=SECRET`. The error never quotes the input.
    pub fn parse(s: &str) -> Result<Token, String> {
        let s = s.trim();
        let (id, secret) = s.split_once('=').ok_or(
            "an API token is written USER@REALM!TOKENID=SECRET (the `=SECRET` part is missing)",
        )?;
        let Some((user, tokenid)) = id.split_once('!') else {
            return Err("an API token is written USER@REALM!TOKENID=SECRET (no `!TOKENID`)".into());
        };
        if !user.contains('@') || tokenid.is_empty() || secret.is_empty() {
            return Err(
                "an API token is written USER@REALM!TOKENID=SECRET, e.g. root@pam!imgbuild=<uuid>"
                    .into(),
            );
        }
        if s.chars().any(|c| c.is_control() || c == ' ') {
            return Err("the API token contains spaces or control characters".into());
        }
        Ok(Token {
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// `root@pam`
    pub fn user(&self) -> &str {
        self.id.split('!').next().unwrap_or(&self.id)
    }

    fn header(&self) -> String {
        format!("PVEAPIToken={}={}", self.id, self.secret)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token({}=***)", self.id)
    }
}

/// A failed API call, by kind, so callers can branch (retry, "already
/// exists", permission problems in preflight).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 401: the token was not accepted.
    #[error("{method} {path}: the API token was not accepted (HTTP 401: {reason}); check the token id and secret")]
    Unauthorized {
        method: Method,
        path: String,
        reason: String,
    },
    /// An HTTP error status with PVE's message and per-parameter errors.
    #[error("{method} {path}: HTTP {status}: {message}{}", param_list(.params))]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        message: String,
        params: BTreeMap<String, String>,
    },
    /// No response: connection refused/dropped, TLS failure, timeout.
    #[error("{method} {path}: {detail}")]
    Transport {
        method: Method,
        path: String,
        detail: String,
    },
}

fn param_list(p: &BTreeMap<String, String>) -> String {
    if p.is_empty() {
        return String::new();
    }
    let items: Vec<String> = p.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!(" ({})", items.join("; "))
}

impl ApiError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            ApiError::Unauthorized { .. } => Some(StatusCode::UNAUTHORIZED),
            ApiError::Transport { .. } => None,
        }
    }

    /// Worth another try for a request that cannot duplicate work.
    pub fn retryable(&self) -> bool {
        match self {
            ApiError::Transport { .. } => true,
            ApiError::Status { status, .. } => {
                matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
            }
            ApiError::Unauthorized { .. } => false,
        }
    }
}

/// One file to upload to a node's storage.
#[derive(Debug, Clone, Copy)]
pub struct Upload<'a> {
    pub node: &'a str,
    pub storage: &'a str,
    /// `iso`, `vztmpl` or `import`.
    pub content: &'a str,
    /// The volume's file name.
    pub name: &'a str,
    pub file: &'a Path,
    pub sha256: &'a str,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// `https://host:8006` (no path).
    pub base: Url,
    pub token: Token,
    pub tls: TlsMode,
}

/// The API client. Cheap to clone (one connection pool).
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: Url,
    token: Token,
    /// Retries for GETs and idempotent PUTs.
    pub retry: crate::http::RetryPolicy,
    counters: std::sync::Arc<Counters>,
}

/// Request counts, for "nothing changed: no mutating request was sent".
#[derive(Debug, Default)]
pub struct Counters {
    pub reads: std::sync::atomic::AtomicU64,
    pub writes: std::sync::atomic::AtomicU64,
}

/// Whether a request may be repeated after a failure without duplicating work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotence {
    /// GET, or a PUT that sets absolute values.
    Safe,
    /// Creates, starts, uploads, deletes: never blindly repeated; the caller
    /// re-reads the state and decides.
    Once,
}

impl Api {
    pub fn new(ep: &Endpoint) -> Result<Api> {
        // The project's one HTTP configuration (user agent, timeouts, proxy
        // from the environment); TLS trust is the lab's, applied on top.
        let cfg = crate::http::HttpConfig {
            connect_timeout: Duration::from_secs(10),
            ..Default::default()
        };
        let builder = cfg
            .async_builder()?
            .pool_idle_timeout(Duration::from_secs(30))
            .https_only(true);
        let builder = ep.tls.apply(builder)?;
        let http = builder.build().context("building the HTTP client")?;
        Ok(Api {
            http,
            base: ep.base.clone(),
            token: ep.token.clone(),
            retry: crate::http::RetryPolicy {
                retries: 5,
                base: Duration::from_millis(200),
                max: Duration::from_secs(5),
            },
            counters: Default::default(),
        })
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn token(&self) -> &Token {
        &self.token
    }

    fn url(&self, path: &str) -> Url {
        let mut u = self.base.clone();
        u.set_path(&format!("/api2/json{path}"));
        u
    }

    /// GET, decoding `data`.
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &Params,
    ) -> Result<T, ApiError> {
        let v = self
            .call(Method::GET, path, query, Idempotence::Safe)
            .await?;
        decode(&Method::GET, path, v)
    }

    /// POST (form body); returns `data` (often a UPID).
    pub async fn post(&self, path: &str, params: &Params) -> Result<Value, ApiError> {
        self.call(Method::POST, path, params, Idempotence::Once)
            .await
    }

    /// PUT (form body).
    pub async fn put(
        &self,
        path: &str,
        params: &Params,
        idem: Idempotence,
    ) -> Result<Value, ApiError> {
        self.call(Method::PUT, path, params, idem).await
    }

    /// DELETE (parameters in the query string, as PVE reads them).
    pub async fn delete(&self, path: &str, params: &Params) -> Result<Value, ApiError> {
        self.call(Method::DELETE, path, params, Idempotence::Once)
            .await
    }

    /// One API call with retries where allowed.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        params: &Params,
        idem: Idempotence,
    ) -> Result<Value, ApiError> {
        let mut attempt = 0;
        loop {
            match self.once(method.clone(), path, params).await {
                Ok(v) => return Ok(v),
                Err(e)
                    if idem == Idempotence::Safe
                        && e.retryable()
                        && attempt < self.retry.retries =>
                {
                    let wait = self.retry.delay(attempt);
                    attempt += 1;
                    tracing::warn!("{e}; retry {attempt}/{} in {wait:?}", self.retry.retries);
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn once(&self, method: Method, path: &str, params: &Params) -> Result<Value, ApiError> {
        use std::sync::atomic::Ordering::Relaxed;
        if method == Method::GET {
            self.counters.reads.fetch_add(1, Relaxed);
        } else {
            self.counters.writes.fetch_add(1, Relaxed);
        }
        tracing::debug!("{method} {path}");
        let mut url = self.url(path);
        let body_in_query = method == Method::GET || method == Method::DELETE;
        if body_in_query && !params.is_empty() {
            url.set_query(Some(&params.encode()));
        }
        let mut req = self
            .http
            .request(method.clone(), url)
            .header("Authorization", self.token.header())
            .timeout(Duration::from_secs(60));
        if !body_in_query {
            req = req
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(params.encode());
        }
        let resp = req.send().await.map_err(|e| transport(&method, path, &e))?;
        finish(method, path, resp).await
    }

    /// Uploads a file as `up` describes, streamed from disk with a
    /// Content-Length, with PVE verifying its sha256. Returns the task's
    /// UPID. `progress` is called with bytes sent so far.
    pub async fn upload(
        &self,
        up: &Upload<'_>,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<Value> {
        let Upload {
            node,
            storage,
            content,
            name,
            file,
            sha256,
        } = *up;
        let path = format!("/nodes/{node}/storage/{storage}/upload");
        let (body, len) = super::upload::multipart_body(content, name, file, sha256, progress)
            .await
            .with_context(|| format!("reading {}", file.display()))?;
        self.counters
            .writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!("POST {path} ({len} bytes)");
        let resp = self
            .http
            .post(self.url(&path))
            .header("Authorization", self.token.header())
            .header(
                "Content-Type",
                format!("multipart/form-data; boundary={}", super::upload::BOUNDARY),
            )
            .header("Content-Length", len)
            .body(body)
            .send()
            .await
            .map_err(|e| transport(&Method::POST, &path, &e))?;
        Ok(finish(Method::POST, &path, resp).await?)
    }
}

fn transport(method: &Method, path: &str, e: &reqwest::Error) -> ApiError {
    // reqwest's Display can include the URL; ours has no secrets (the token is
    // a header), but keep only the error chain's causes to stay short.
    let mut detail = String::new();
    let mut src: Option<&dyn std::error::Error> = Some(e);
    let mut parts = Vec::new();
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.iter().any(|p: &String| p.contains(&t)) {
            parts.push(t);
        }
        src = s.source();
    }
    if e.is_timeout() {
        detail.push_str("timed out: ");
    }
    detail.push_str(&parts.join(": "));
    ApiError::Transport {
        method: method.clone(),
        path: path.to_string(),
        detail,
    }
}

async fn finish(method: Method, path: &str, resp: reqwest::Response) -> Result<Value, ApiError> {
    let status = resp.status();
    let reason = resp
        .headers()
        .get("x-pve-reason") // not standard; PVE puts the reason in the status line
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let status_text = status.canonical_reason().unwrap_or("").to_string();
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| transport(&method, path, &e))?;
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body.get("data").cloned().unwrap_or(Value::Null));
    }
    let message = body
        .get("message")
        .and_then(Value::as_str)
        .map(|s| s.trim().to_string())
        .or(reason)
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&bytes).trim().to_string();
            if text.is_empty() || text.starts_with('{') {
                status_text.clone()
            } else {
                text.chars().take(300).collect()
            }
        });
    if status == StatusCode::UNAUTHORIZED {
        return Err(ApiError::Unauthorized {
            method,
            path: path.to_string(),
            reason: message,
        });
    }
    let params = body
        .get("errors")
        .and_then(Value::as_object)
        .map(|o| {
            o.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(|s| s.trim().to_string())
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Err(ApiError::Status {
        method,
        path: path.to_string(),
        status,
        message,
        params,
    })
}

fn decode<T: DeserializeOwned>(method: &Method, path: &str, v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| ApiError::Transport {
        method: method.clone(),
        path: path.to_string(),
        detail: format!("unexpected response shape: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_parse_and_redaction() {
        let t = Token::parse("root@pam!imgbuild=0b1e-secret").unwrap();
        assert_eq!(t.id, "root@pam!imgbuild");
        assert_eq!(t.user(), "root@pam");
        assert!(!format!("{t:?}").contains("secret"));
        assert_eq!(t.header(), "PVEAPIToken=root@pam!imgbuild=0b1e-secret");
        for bad in [
            "root@pam!imgbuild",
            "root@pam=x",
            "root!id=x",
            "root@pam!=x",
            "root@pam!id=",
        ] {
            let e = Token::parse(bad).unwrap_err();
            assert!(!e.contains(bad), "{e}");
        }
    }
}
