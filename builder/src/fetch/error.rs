//! The download failures callers branch on (retry, fall back from a mirror,
//! report a mismatch). Everything else is an `anyhow` error with context.

use crate::artifact::Digest;

pub use crate::http::RETRYABLE_STATUSES;

/// Why one attempt at getting bytes from a source failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The server answered with an error status (404 included).
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    /// A mirror directory does not have the file.
    #[error("{path}: no such file in the mirror directory")]
    MissingFile { path: String },
    /// Connection refused or reset, DNS failure, truncated body, timeout.
    #[error("{url}: {message}")]
    Transport {
        url: String,
        message: String,
        retryable: bool,
    },
    /// The bytes arrived but hash to something else. Nothing was published.
    #[error("digest mismatch for {url}: expected {expected}, got {actual}")]
    DigestMismatch {
        url: String,
        expected: Digest,
        actual: Digest,
    },
}

impl FetchError {
    /// Whether trying the same source again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            FetchError::Status { status, .. } => RETRYABLE_STATUSES.contains(status),
            FetchError::Transport { retryable, .. } => *retryable,
            FetchError::MissingFile { .. } | FetchError::DigestMismatch { .. } => false,
        }
    }

    /// Whether the source simply does not have the file (a mirror then falls back upstream).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            FetchError::Status {
                status: 404 | 410,
                ..
            } | FetchError::MissingFile { .. }
        )
    }
}

/// Finds a [`FetchError`] anywhere in an error chain.
pub fn fetch_error(err: &anyhow::Error) -> Option<&FetchError> {
    err.chain().find_map(|e| e.downcast_ref::<FetchError>())
}
