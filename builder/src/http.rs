//! The project's one HTTP configuration: user agent, timeouts, TLS trust and
//! the retry policy, shared by the fetcher (blocking client) and deploy (async
//! client), so both speak to the network the same way.
//!
//! - **TLS**: rustls only (no OpenSSL). Trust is the operating system's root
//!   store (`rustls-native-certs`, through reqwest's `rustls-tls-native-roots`),
//!   not a compiled-in Mozilla list (webpki-roots): an admin who adds a company
//!   CA or removes a distrusted one with the distribution's tools
//!   (`update-ca-certificates`) is obeyed without rebuilding imgbuild, and a
//!   mirror behind an internal CA works. [`HttpConfig::ca_file`] adds a PEM
//!   bundle on top (a private mirror's CA without touching the system store).
//! - **Proxy**: `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` from the
//!   environment, as reqwest reads them.
//! - **Timeouts**: [`HttpConfig::connect_timeout`] for connecting (TLS included),
//!   [`HttpConfig::read_timeout`] for the longest silence while waiting for a
//!   response or reading its body; a long transfer that keeps moving never
//!   times out.
//! - **Retries**: [`RetryPolicy`] names the retryable statuses
//!   ([`RETRYABLE_STATUSES`]) and the capped exponential backoff; callers decide
//!   which requests are safe to repeat (a GET is, a create may not be).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

/// HTTP statuses worth retrying: timeouts, rate limits and transient server errors.
pub const RETRYABLE_STATUSES: &[u16] = &[408, 429, 500, 502, 503, 504];

/// The `User-Agent` every request carries.
pub const USER_AGENT: &str = concat!("imgbuild/", env!("CARGO_PKG_VERSION"));

/// Retry policy: `retries` more attempts after the first, waiting
/// `base * 2^n` (capped at `max`) before attempt n+1. Tests set `retries: 0`
/// or shrink the delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub retries: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: 5,
            base: Duration::from_millis(500),
            max: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `attempt + 1` (attempt 0 is the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        self.base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max)
    }

    /// Whether an HTTP status is worth another attempt.
    pub fn is_retryable_status(status: u16) -> bool {
        RETRYABLE_STATUSES.contains(&status)
    }
}

/// What every imgbuild HTTP client shares.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub user_agent: String,
    pub connect_timeout: Duration,
    /// Longest silence while waiting for a response or reading its body.
    pub read_timeout: Duration,
    /// A PEM file of extra CA certificates trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
    pub retry: RetryPolicy,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            user_agent: USER_AGENT.to_string(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            ca_file: None,
            retry: RetryPolicy::default(),
        }
    }
}

impl HttpConfig {
    /// The extra CA certificates from [`HttpConfig::ca_file`] (none without one).
    pub fn extra_roots(&self) -> Result<Vec<reqwest::Certificate>> {
        let Some(path) = &self.ca_file else {
            return Ok(Vec::new());
        };
        let pem =
            std::fs::read(path).with_context(|| format!("reading CA file {}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("reading CA file {}: not a PEM bundle", path.display()))?;
        if certs.is_empty() {
            anyhow::bail!(
                "CA file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                path.display()
            );
        }
        Ok(certs)
    }

    /// A blocking client builder with this configuration (the fetcher's `Read`
    /// pipeline). Do not build or drop it inside an async runtime.
    pub fn blocking_builder(&self) -> Result<reqwest::blocking::ClientBuilder> {
        let mut b = reqwest::blocking::Client::builder()
            .user_agent(self.user_agent.clone())
            .use_rustls_tls()
            .connect_timeout(self.connect_timeout)
            // The blocking client applies `timeout` to waiting for the response
            // head and to each read of the body: a silence limit, not a deadline.
            .timeout(self.read_timeout);
        for cert in self.extra_roots()? {
            b = b.add_root_certificate(cert);
        }
        Ok(b)
    }

    /// An async client builder with this configuration (deploy adds its own TLS
    /// pinning and headers on top).
    pub fn async_builder(&self) -> Result<reqwest::ClientBuilder> {
        let mut b = reqwest::Client::builder()
            .user_agent(self.user_agent.clone())
            .use_rustls_tls()
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.read_timeout);
        for cert in self.extra_roots()? {
            b = b.add_root_certificate(cert);
        }
        Ok(b)
    }

    /// The blocking client itself.
    pub fn blocking_client(&self) -> Result<reqwest::blocking::Client> {
        self.blocking_builder()?
            .build()
            .context("setting up the HTTP client")
    }
}

/// A URL as it may appear in messages, logs and files: any user name and
/// password (`https://user:pass@mirror/`) replaced by `***`.
pub fn redact(url: &url::Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    let mut u = url.clone();
    let _ = u.set_password(None);
    let _ = u.set_username("***");
    u.to_string()
}

/// A transport error's causes without the URL reqwest puts in its own message
/// (callers name the URL themselves, with any password removed).
pub fn error_message(err: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut parts = Vec::new();
    let top = if err.is_timeout() {
        "timed out".to_string()
    } else if err.is_connect() {
        "cannot connect".to_string()
    } else if err.is_body() || err.is_decode() {
        "reading the response failed".to_string()
    } else if err.is_redirect() {
        "redirect failed".to_string()
    } else {
        "request failed".to_string()
    };
    parts.push(top);
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        // hyper and hyper-util wrap the same cause several times; skip repeats
        // and the bare kind words that add nothing.
        if !text.is_empty()
            && !parts.iter().any(|p| p.contains(&text))
            && !matches!(
                text.as_str(),
                "client error (Connect)" | "client error (SendRequest)"
            )
        {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// Whether a transport error may go away on its own (connection refused or
/// reset, DNS, a timeout, a cut body), as opposed to one that will repeat
/// (a certificate the client does not trust, a redirect loop, a bad URL).
pub fn error_is_retryable(err: &reqwest::Error) -> bool {
    if err.is_builder() || err.is_redirect() {
        return false;
    }
    let message = error_message(err);
    !(message.contains("certificate") || message.contains("UnknownIssuer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let b = RetryPolicy {
            retries: 5,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.delay(0), Duration::from_millis(100));
        assert_eq!(b.delay(2), Duration::from_millis(400));
        assert_eq!(b.delay(10), Duration::from_secs(1));
        assert_eq!(b.delay(40), Duration::from_secs(1));
    }

    #[test]
    fn redact_removes_user_info() {
        let u = url::Url::parse("https://alice:s3cret@mirror.example/dl/a.tgz").unwrap();
        assert_eq!(redact(&u), "https://***@mirror.example/dl/a.tgz");
        let u = url::Url::parse("https://token@mirror.example/").unwrap();
        assert_eq!(redact(&u), "https://***@mirror.example/");
        let u = url::Url::parse("http://127.0.0.1:8080/x").unwrap();
        assert_eq!(redact(&u), "http://127.0.0.1:8080/x");
    }

    #[test]
    fn retryable_statuses() {
        assert!(RetryPolicy::is_retryable_status(503));
        assert!(!RetryPolicy::is_retryable_status(404));
        assert!(!RetryPolicy::is_retryable_status(403));
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let cfg = HttpConfig {
            ca_file: Some(path.clone()),
            ..HttpConfig::default()
        };
        let err = cfg.extra_roots().unwrap_err();
        assert!(
            format!("{err:#}").contains(&path.display().to_string()),
            "{err:#}"
        );
        let missing = HttpConfig {
            ca_file: Some(dir.path().join("nope.pem")),
            ..HttpConfig::default()
        };
        assert!(format!("{:#}", missing.blocking_builder().unwrap_err()).contains("nope.pem"));
    }
}
