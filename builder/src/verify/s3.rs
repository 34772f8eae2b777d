//! Just enough S3 for `verify`: put, get, list and delete one object with
//! AWS Signature Version 4 (path-style, region us-east-1), over a plain
//! std `TcpStream` so it runs from a thread inside a network namespace.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use imgbuild_sigv4 as sigv4;

/// `query` (already encoded `name=value` pairs joined by `&`) as the pairs
/// SigV4 signs; a name without `=` has an empty value.
fn query_pairs(query: &str) -> Vec<(&str, &str)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect()
}

/// An S3 endpoint with credentials.
pub struct Client<'a> {
    pub addr: SocketAddr,
    pub access: &'a str,
    pub secret: &'a str,
}

impl Client<'_> {
    /// One signed request; the status and body, or what went wrong.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        query: &str,
        body: &[u8],
    ) -> Result<(u16, Vec<u8>), String> {
        let host = self.addr.to_string();
        let amz = sigv4::amz_date_now();
        let payload = sigv4::sha256_hex(body);
        let auth = sigv4::S3Call {
            method,
            path,
            query: &query_pairs(query),
            host: &host,
            payload_sha256: &payload,
            amz_date: &amz,
        }
        .authorization(self.access, self.secret);
        let target = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        };
        let head = format!(
            "{method} {target} HTTP/1.0\r\nHost: {host}\r\nx-amz-date: {amz}\r\n\
             x-amz-content-sha256: {payload}\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let what = format!("{method} http://{host}{target}");
        let timeout = Duration::from_secs(20);
        let mut s =
            TcpStream::connect_timeout(&self.addr, timeout).map_err(|e| format!("{what}: {e}"))?;
        let _ = s.set_read_timeout(Some(timeout));
        let _ = s.set_write_timeout(Some(timeout));
        s.write_all(head.as_bytes())
            .and_then(|()| s.write_all(body))
            .map_err(|e| format!("{what}: {e}"))?;
        let mut raw = Vec::new();
        s.take(16 << 20)
            .read_to_end(&mut raw)
            .map_err(|e| format!("{what}: {e}"))?;
        crate::ready::parse_response(&raw).map_err(|e| format!("{what}: {e}"))
    }

    fn expect(
        &self,
        method: &str,
        path: &str,
        query: &str,
        body: &[u8],
        ok: &[u16],
    ) -> Result<Vec<u8>, String> {
        let (st, b) = self.request(method, path, query, body)?;
        if ok.contains(&st) {
            Ok(b)
        } else {
            Err(format!(
                "{method} {path}{}{query}: HTTP {st}: {}",
                if query.is_empty() { "" } else { "?" },
                String::from_utf8_lossy(&b)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ))
        }
    }

    /// Put, get (same bytes), list (the key is there) and delete (then gone)
    /// one object in `bucket`.
    pub fn round_trip(&self, bucket: &str) -> Result<(), String> {
        let key = format!(
            "imgbuild-verify/{}.txt",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        let path = format!("/{bucket}/{key}");
        let body = format!("imgbuild verify {key}\n").into_bytes();
        self.expect("PUT", &path, "", &body, &[200])?;
        let got = self.expect("GET", &path, "", b"", &[200])?;
        if got != body {
            return Err(format!("GET {path} returned other bytes than were put"));
        }
        let list = self.expect(
            "GET",
            &format!("/{bucket}"),
            "list-type=2&prefix=imgbuild-verify%2F",
            b"",
            &[200],
        )?;
        if !String::from_utf8_lossy(&list).contains(&format!("<Key>{key}</Key>")) {
            return Err(format!("listing {bucket} does not show {key}"));
        }
        self.expect("DELETE", &path, "", b"", &[200, 204])?;
        let (st, _) = self.request("GET", &path, "", b"")?;
        if st != 404 {
            return Err(format!("GET {path} after DELETE answered {st}, want 404"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_split_into_signed_pairs() {
        assert_eq!(
            query_pairs("list-type=2&prefix=imgbuild-verify%2F"),
            [("list-type", "2"), ("prefix", "imgbuild-verify%2F")]
        );
        assert_eq!(query_pairs("lifecycle"), [("lifecycle", "")]);
        assert!(query_pairs("").is_empty());
    }
}
