//! Where artifact bytes come from: one trait, two implementations (an HTTP(S)
//! URL via reqwest's blocking client, a file in a mirror directory). Both can start at an offset so
//! an interrupted download resumes.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use url::Url;

use super::error::FetchError;

/// A readable body starting at byte `start` of the artifact.
pub struct Body {
    pub reader: Box<dyn Read + Send>,
    /// Where the body starts: the requested offset, or 0 when the source ignored it.
    pub start: u64,
    /// The artifact's full size, when the source says.
    pub total: Option<u64>,
}

/// The answer to a request starting at an offset.
pub enum Opened {
    Body(Body),
    /// The offset is at or past the end (HTTP 416); `total` is the size if known.
    PastEnd {
        total: Option<u64>,
    },
}

/// A source of one artifact's bytes.
pub trait Source: Send + Sync {
    /// The URL or path, for messages.
    fn location(&self) -> String;
    /// `mirror` or `upstream`, for messages.
    fn kind(&self) -> &'static str;
    /// Starts reading at `offset` (0 for the whole artifact).
    fn open(&self, offset: u64) -> Result<Opened, FetchError>;
}

/// A file in a mirror directory.
pub struct DirSource {
    pub path: PathBuf,
}

impl Source for DirSource {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn kind(&self) -> &'static str {
        "mirror"
    }

    fn open(&self, offset: u64) -> Result<Opened, FetchError> {
        let io_err = |e: std::io::Error| FetchError::Transport {
            url: self.location(),
            message: e.to_string(),
            retryable: false,
        };
        let mut file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(FetchError::MissingFile {
                    path: self.location(),
                })
            }
            Err(e) => return Err(io_err(e)),
        };
        let total = file.metadata().map_err(io_err)?.len();
        if offset >= total && offset > 0 {
            return Ok(Opened::PastEnd { total: Some(total) });
        }
        file.seek(SeekFrom::Start(offset)).map_err(io_err)?;
        Ok(Opened::Body(Body {
            reader: Box::new(file),
            start: offset,
            total: Some(total),
        }))
    }
}

/// An HTTP(S) URL, fetched with the shared blocking client of [`crate::http`].
pub struct HttpSource {
    pub url: Url,
    pub client: reqwest::blocking::Client,
    pub kind: &'static str,
}

impl Source for HttpSource {
    fn location(&self) -> String {
        crate::http::redact(&self.url)
    }

    fn kind(&self) -> &'static str {
        self.kind
    }

    fn open(&self, offset: u64) -> Result<Opened, FetchError> {
        let url = self.location();
        let mut req = self.client.get(self.url.clone());
        if offset > 0 {
            req = req.header(reqwest::header::RANGE, format!("bytes={offset}-"));
        }
        let resp = req.send().map_err(|e| FetchError::Transport {
            url: url.clone(),
            message: crate::http::error_message(&e),
            retryable: crate::http::error_is_retryable(&e),
        })?;
        let header = |name: reqwest::header::HeaderName| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let length: Option<u64> =
            header(reqwest::header::CONTENT_LENGTH).and_then(|v| v.trim().parse().ok());
        match resp.status().as_u16() {
            200 => Ok(Opened::Body(Body {
                reader: Box::new(resp),
                start: 0,
                total: length,
            })),
            206 => {
                let range = header(reqwest::header::CONTENT_RANGE)
                    .as_deref()
                    .and_then(content_range);
                let Some((start, _end, total)) = range else {
                    return Err(FetchError::Transport {
                        url,
                        message: "HTTP 206 without a usable Content-Range header".into(),
                        retryable: false,
                    });
                };
                Ok(Opened::Body(Body {
                    reader: Box::new(resp),
                    start,
                    total: Some(total),
                }))
            }
            416 => {
                let total = header(reqwest::header::CONTENT_RANGE)
                    .as_deref()
                    .and_then(|v| content_range(v).map(|r| r.2));
                Ok(Opened::PastEnd { total })
            }
            status => Err(FetchError::Status { url, status }),
        }
    }
}

/// Parses `bytes START-END/TOTAL` (206) or `bytes */TOTAL` (416, start and end = 0).
fn content_range(value: &str) -> Option<(u64, u64, u64)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total: u64 = total.trim().parse().ok()?;
    if range.trim() == "*" {
        return Some((0, 0, total));
    }
    let (start, end) = range.split_once('-')?;
    Some((start.trim().parse().ok()?, end.trim().parse().ok()?, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_forms() {
        assert_eq!(content_range("bytes 100-199/200"), Some((100, 199, 200)));
        assert_eq!(content_range("bytes */200"), Some((0, 0, 200)));
        assert_eq!(content_range("bytes 1-2/*"), None);
        assert_eq!(content_range("items 1-2/3"), None);
    }
}
