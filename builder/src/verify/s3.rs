//! Just enough S3 for `verify`: put, get, list and delete one object with
//! AWS Signature Version 4 (path-style, region us-east-1), over a plain
//! std `TcpStream` so it runs from a thread inside a network namespace.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use imgbuild_sigv4 as sigv4;

const REGION: &str = "us-east-1";

/// The `Authorization` header for a request whose path is already encoded
/// and whose query is `query` (already encoded `name=value` pairs joined by
/// `&`), signing `host`, `x-amz-content-sha256` and `x-amz-date`.
#[allow(clippy::too_many_arguments)]
pub fn authorization(
    method: &str,
    path: &str,
    query: &str,
    host: &str,
    amz: &str,
    payload_sha: &str,
    access: &str,
    secret: &str,
) -> String {
    let pairs: Vec<(&str, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    let req = sigv4::Request {
        method,
        path,
        query: &pairs,
        headers: &[
            ("host", host),
            ("x-amz-content-sha256", payload_sha),
            ("x-amz-date", amz),
        ],
        payload_sha256: payload_sha,
    };
    sigv4::authorization(&req, access, secret, REGION, "s3", amz)
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
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let amz = sigv4::amz_date(unix);
        let payload = sigv4::sha256_hex(body);
        let auth = authorization(
            method,
            path,
            query,
            &host,
            &amz,
            &payload,
            self.access,
            self.secret,
        );
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

    /// The S3 API reference's header-based SigV4 examples that sign exactly
    /// our headers: "GET Bucket (List Objects)" and "GET Bucket Lifecycle".
    #[test]
    fn signs_the_s3_docs_bucket_examples() {
        let sign = |query| {
            authorization(
                "GET",
                "/",
                query,
                "examplebucket.s3.amazonaws.com",
                "20130524T000000Z",
                sigv4::EMPTY_SHA256,
                "AKIAIOSFODNN7EXAMPLE",
                "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            )
        };
        assert_eq!(
            sign("max-keys=2&prefix=J"),
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date, \
             Signature=34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"
        );
        assert!(
            sign("lifecycle").ends_with(
                "Signature=fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"
            ),
            "a bare query name is signed as `lifecycle=`"
        );
    }
}
