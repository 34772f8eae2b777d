//! A small HTTP/1.1 client over `TcpStream` for in-lab health checks and S3
//! calls (plain http on the lab network), and host resolution from /etc/hosts.
//!
//! Names are resolved by reading the guest's /etc/hosts (which the agent
//! writes from the seed's peers) instead of calling getaddrinfo: the agent is
//! a static glibc binary, and glibc's NSS in a static binary needs the very
//! shared libraries it was meant to avoid.

use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// A response: status code and the (de-chunked) body.
#[derive(Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// Resolves `host` (IP literal, `localhost`, or a name in `<root>/etc/hosts`).
pub fn resolve(root: &Path, host: &str) -> Result<IpAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ip);
    }
    if host == "localhost" {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let hosts = crate::fsutil::under(root, "/etc/hosts");
    let text =
        std::fs::read_to_string(&hosts).with_context(|| format!("reading {}", hosts.display()))?;
    lookup_hosts(&text, host).with_context(|| format!("{host} is not in {}", hosts.display()))
}

/// Finds `name` in hosts(5) text; the first IPv4 match wins, then IPv6.
pub fn lookup_hosts(text: &str, name: &str) -> Option<IpAddr> {
    let mut v6 = None;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        let Some(addr) = fields.next().and_then(|a| a.parse::<IpAddr>().ok()) else {
            continue;
        };
        if fields.any(|n| n.eq_ignore_ascii_case(name)) {
            match addr {
                IpAddr::V4(_) => return Some(addr),
                IpAddr::V6(_) => v6 = v6.or(Some(addr)),
            }
        }
    }
    v6
}

/// Sends one request (`Connection: close`) and reads the whole response.
pub fn request(
    addr: SocketAddr,
    host_header: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Response> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\nUser-Agent: imgbuild-firstboot\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading response from {addr}"))?;
    parse_response(&raw)
        .with_context(|| format!("parsing response from http://{host_header}{path}"))
}

/// Parses a complete HTTP/1.1 response (Content-Length, chunked, or until close).
pub fn parse_response(raw: &[u8]) -> Result<Response> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).context("headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
            {
                chunked = true;
            }
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let nl = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk size")?;
        let size_str = std::str::from_utf8(&data[..nl])?
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        let size = usize::from_str_radix(size_str, 16)
            .with_context(|| format!("bad chunk size {size_str:?}"))?;
        data = &data[nl + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
        let r = parse_response(b"HTTP/1.1 409 Conflict\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (409, &b"abcde"[..]));
        assert!(parse_response(b"garbage").is_err());
    }

    #[test]
    fn hosts_lookup() {
        let t = "127.0.0.1 localhost\n::1 minio6 # v6\n192.168.1.200 minio minio.lab\n# 10.0.0.1 devlab\n";
        assert_eq!(
            lookup_hosts(t, "minio"),
            Some("192.168.1.200".parse().unwrap())
        );
        assert_eq!(
            lookup_hosts(t, "MINIO.lab"),
            Some("192.168.1.200".parse().unwrap())
        );
        assert_eq!(lookup_hosts(t, "minio6"), Some("::1".parse().unwrap()));
        assert_eq!(lookup_hosts(t, "devlab"), None);
    }

    #[test]
    fn talks_to_a_loopback_server() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = c.read(&mut buf).unwrap();
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                .unwrap();
            req
        });
        let r = request(
            addr,
            "x:1",
            "GET",
            "/p",
            &[("a", "b")],
            b"",
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(r.body, b"hello");
        let req = t.join().unwrap();
        assert!(req.starts_with("GET /p HTTP/1.1\r\nHost: x:1\r\n"), "{req}");
        assert!(req.contains("\r\na: b\r\n"));
    }
}
