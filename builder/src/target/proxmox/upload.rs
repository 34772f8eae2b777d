//! The multipart body of `POST /nodes/{node}/storage/{storage}/upload`, the
//! way PVE's HTTP server parses it: the fields `content`, `checksum-algorithm`
//! and `checksum` first, then the file part named `filename`, with an exact
//! Content-Length (PVE refuses chunked bodies). The file is streamed from disk
//! in 256 KiB chunks: memory stays flat whatever its size, and no temporary
//! copy is made.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use futures_util::{stream, StreamExt, TryStreamExt};

pub const BOUNDARY: &str = "imgbuild-7c0f3b2e9a4d41b8a6f1d2c3e4b5a697";

/// Renders the fields before the file's bytes and the closing boundary after.
pub fn envelope(content: &str, name: &str, sha256: &str) -> (String, String) {
    let mut head = String::new();
    for (k, v) in [
        ("content", content),
        ("checksum-algorithm", "sha256"),
        ("checksum", sha256),
    ] {
        head.push_str(&format!(
            "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n"
        ));
    }
    head.push_str(&format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"filename\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    ));
    let tail = format!("\r\n--{BOUNDARY}--\r\n");
    (head, tail)
}

/// The streamed body and its exact length.
pub async fn multipart_body(
    content: &str,
    name: &str,
    file: &Path,
    sha256: &str,
    progress: impl Fn(u64) + Send + Sync + 'static,
) -> Result<(reqwest::Body, u64)> {
    let (head, tail) = envelope(content, name, sha256);
    let f = tokio::fs::File::open(file).await?;
    let size = f.metadata().await?.len();
    let len = head.len() as u64 + size + tail.len() as u64;
    let sent = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(progress);
    let file_stream =
        tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024).map_ok(move |chunk| {
            let n = sent.fetch_add(chunk.len() as u64, Ordering::Relaxed) + chunk.len() as u64;
            progress(n);
            chunk
        });
    let body = stream::once(async move { Ok::<_, std::io::Error>(bytes::Bytes::from(head)) })
        .chain(file_stream)
        .chain(stream::once(async move { Ok(bytes::Bytes::from(tail)) }));
    Ok((reqwest::Body::wrap_stream(body), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_come_in_pve_order() {
        let (head, tail) = envelope("import", "x.qcow2", "ab12");
        let c = head.find("name=\"content\"").unwrap();
        let a = head.find("name=\"checksum-algorithm\"").unwrap();
        let s = head.find("name=\"checksum\"\r\n").unwrap();
        let f = head
            .find("name=\"filename\"; filename=\"x.qcow2\"")
            .unwrap();
        assert!(c < a && a < s && s < f);
        assert!(head.ends_with("\r\n\r\n"));
        assert_eq!(tail, format!("\r\n--{BOUNDARY}--\r\n"));
    }
}
