//! The one readiness rule both targets use (`imgbuild deploy` for Proxmox,
//! `imgbuild up` for the local target): a guest is ready when every endpoint
//! its roles declare answers, and every Spark master lists the workers the lab
//! points at it as ALIVE.
//!
//! [`probes`] turns the lab into the list of [`Probe`]s; [`wait_ready`] runs
//! them until each guest passes all of its own or a deadline passes, and
//! returns per guest what is still missing. It is plain blocking std code
//! (`std::net::TcpStream`, a minimal HTTP/1.0 GET), so a caller can run it on
//! a thread of its own, including a thread that has entered a network
//! namespace. Where to connect is the caller's: a [`Resolve`] maps a guest's
//! name and port to a socket address (the guest's lab address from the
//! deploy host, or a forwarded port for the local target), and may report
//! that a guest is gone so the wait stops for it at once.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::model::lab::Lab;

/// How long one connect, request or banner read may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The pause between two rounds over the probes still failing.
pub const ROUND_PAUSE: Duration = Duration::from_millis(500);

/// One endpoint of one guest that must answer before the guest is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The guest's name in the lab.
    pub guest: String,
    /// The guest port to connect to.
    pub port: u16,
    pub kind: ProbeKind,
}

/// What a [`Probe`] asks of its endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// The object store answers `GET /minio/health/ready` with 200.
    ObjectStore,
    /// The Spark master's UI answers `GET /json/` listing at least as many
    /// ALIVE workers as `workers` names (the guests whose worker joins this
    /// master, [`Lab::spark_workers_of`]).
    SparkMaster { workers: Vec<String> },
    /// An SSH server sends its `SSH-2.0-` banner.
    SshBanner,
    /// Prometheus answers `GET /-/ready` with 200 (its TSDB is loaded).
    Prometheus,
}

impl Probe {
    /// A short name for messages: `ssh :22`, `object store :9000`, ...
    pub fn describe(&self) -> String {
        match &self.kind {
            ProbeKind::ObjectStore => {
                format!("object store :{} /minio/health/ready", self.port)
            }
            ProbeKind::SparkMaster { workers } => format!(
                "spark master :{} /json/ with {} ALIVE ({})",
                self.port,
                workers.len(),
                workers.join(", ")
            ),
            ProbeKind::SshBanner => format!("ssh :{} banner", self.port),
            ProbeKind::Prometheus => format!("prometheus :{} /-/ready", self.port),
        }
    }
}

/// Every guest's probes, in lab order: SSH, then the object store's API, then
/// a Spark master's UI with the workers that join it, then Prometheus.
pub fn probes(lab: &Lab) -> Vec<Probe> {
    let mut v = Vec::new();
    for g in &lab.guests {
        let guest = g.name.as_str().to_string();
        v.push(Probe {
            guest: guest.clone(),
            port: crate::model::lab::SSH_PORT.get(),
            kind: ProbeKind::SshBanner,
        });
        if let Some(os) = &g.roles.object_store {
            v.push(Probe {
                guest: guest.clone(),
                port: os.api_port.get(),
                kind: ProbeKind::ObjectStore,
            });
        }
        if let Some(m) = g.roles.spark.as_ref().and_then(|s| s.master.as_ref()) {
            let workers = lab
                .spark_workers_of(&guest)
                .iter()
                .map(|w| w.name.as_str().to_string())
                .collect();
            v.push(Probe {
                guest,
                port: m.ui_port.get(),
                kind: ProbeKind::SparkMaster { workers },
            });
        }
        if let Some(m) = &g.roles.monitoring {
            v.push(Probe {
                guest: g.name.as_str().to_string(),
                port: m.port.get(),
                kind: ProbeKind::Prometheus,
            });
        }
    }
    v
}

/// Why a [`Resolve`] has no address for a guest's port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unresolved {
    /// Not yet (e.g. a forward is still being set up): keep waiting.
    NotYet(String),
    /// The guest is gone (its VM or container exited): stop waiting for it.
    Gone(String),
}

/// Where to connect for `(guest, port)`.
pub trait Resolve {
    fn resolve(&mut self, guest: &str, port: u16) -> Result<SocketAddr, Unresolved>;
}

impl<F> Resolve for F
where
    F: FnMut(&str, u16) -> Result<SocketAddr, Unresolved>,
{
    fn resolve(&mut self, guest: &str, port: u16) -> Result<SocketAddr, Unresolved> {
        self(guest, port)
    }
}

/// Runs one probe once against `addr`; `Err` says what was seen instead.
pub fn check(probe: &Probe, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    match &probe.kind {
        ProbeKind::SshBanner => ssh_banner(addr, timeout),
        ProbeKind::ObjectStore => {
            let (status, _) = http_get(addr, "/minio/health/ready", timeout)?;
            if status == 200 {
                Ok(())
            } else {
                Err(format!(
                    "http://{addr}/minio/health/ready answered {status}"
                ))
            }
        }
        ProbeKind::Prometheus => {
            let (status, _) = http_get(addr, "/-/ready", timeout)?;
            if status == 200 {
                Ok(())
            } else {
                Err(format!("http://{addr}/-/ready answered {status}"))
            }
        }
        ProbeKind::SparkMaster { workers } => {
            let (status, body) = http_get(addr, "/json/", timeout)?;
            if status != 200 {
                return Err(format!("http://{addr}/json/ answered {status}"));
            }
            let alive = alive_workers(&body).map_err(|e| format!("http://{addr}/json/: {e}"))?;
            if alive < workers.len() {
                return Err(format!(
                    "http://{addr}/json/ lists {alive} ALIVE of {} workers ({})",
                    workers.len(),
                    workers.join(", ")
                ));
            }
            Ok(())
        }
    }
}

/// How many workers a Spark master's `/json/` lists in state ALIVE.
pub fn alive_workers(body: &[u8]) -> Result<usize, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let workers = v["workers"]
        .as_array()
        .ok_or_else(|| "no `workers` array".to_string())?;
    Ok(workers.iter().filter(|w| w["state"] == "ALIVE").count())
}

/// The outcome of [`wait_ready`] for one guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestReadiness {
    pub guest: String,
    /// Since the wait started, when the last of its probes passed.
    pub ready_after: Option<Duration>,
    /// For a guest not ready: each failing probe with its last error, or why
    /// the guest is gone.
    pub missing: Vec<String>,
}

impl GuestReadiness {
    pub fn is_ready(&self) -> bool {
        self.ready_after.is_some()
    }
}

/// What [`wait_ready`] reports while it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Every probe of `guest` passed.
    Ready { guest: String, after: Duration },
    /// `guest` is gone ([`Unresolved::Gone`]); no more waiting for it.
    Gone { guest: String, why: String },
    /// Still waiting (at most every 10 s per guest): what is missing.
    Waiting { guest: String, missing: Vec<String> },
}

/// Probes until every guest passes all of its probes (each at least once;
/// a passed probe is not run again) or `deadline`. Returns one entry per
/// guest in the order the probes name them; a guest that is not ready names
/// every probe still failing and its last error. Never returns early for a
/// slow guest, only for a gone one.
pub fn wait_ready(
    resolve: &mut dyn Resolve,
    probes: &[Probe],
    deadline: Instant,
    on_progress: &mut dyn FnMut(&Progress),
) -> Vec<GuestReadiness> {
    let start = Instant::now();
    let mut guests: Vec<String> = Vec::new();
    for p in probes {
        if !guests.contains(&p.guest) {
            guests.push(p.guest.clone());
        }
    }
    // Per probe: None = passed, Some(last error).
    let mut failing: Vec<Option<String>> = vec![Some("not tried yet".into()); probes.len()];
    let mut out: Vec<GuestReadiness> = guests
        .iter()
        .map(|g| GuestReadiness {
            guest: g.clone(),
            ready_after: None,
            missing: Vec::new(),
        })
        .collect();
    let mut gone: Vec<Option<String>> = vec![None; guests.len()];
    let mut last_note = vec![start; guests.len()];
    loop {
        for (gi, g) in guests.iter().enumerate() {
            if out[gi].ready_after.is_some() || gone[gi].is_some() {
                continue;
            }
            for (pi, p) in probes.iter().enumerate() {
                if &p.guest != g || failing[pi].is_none() {
                    continue;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                let timeout = PROBE_TIMEOUT.min(left).max(Duration::from_millis(200));
                match resolve.resolve(g, p.port) {
                    Err(Unresolved::Gone(why)) => {
                        on_progress(&Progress::Gone {
                            guest: g.clone(),
                            why: why.clone(),
                        });
                        gone[gi] = Some(why);
                        break;
                    }
                    Err(Unresolved::NotYet(why)) => failing[pi] = Some(why),
                    Ok(addr) => failing[pi] = check(p, addr, timeout).err(),
                }
            }
            let all_passed = probes
                .iter()
                .zip(&failing)
                .all(|(p, f)| &p.guest != g || f.is_none());
            if gone[gi].is_none() && all_passed {
                let after = start.elapsed();
                out[gi].ready_after = Some(after);
                on_progress(&Progress::Ready {
                    guest: g.clone(),
                    after,
                });
            } else if gone[gi].is_none() && last_note[gi].elapsed() >= Duration::from_secs(10) {
                last_note[gi] = Instant::now();
                on_progress(&Progress::Waiting {
                    guest: g.clone(),
                    missing: missing_of(g, probes, &failing),
                });
            }
        }
        let pending = (0..guests.len()).any(|i| out[i].ready_after.is_none() && gone[i].is_none());
        if !pending || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(ROUND_PAUSE.min(deadline.saturating_duration_since(Instant::now())));
    }
    for (gi, g) in guests.iter().enumerate() {
        if out[gi].ready_after.is_some() {
            continue;
        }
        out[gi].missing = match &gone[gi] {
            Some(why) => vec![format!("gone: {why}")],
            None => missing_of(g, probes, &failing),
        };
    }
    out
}

fn missing_of(guest: &str, probes: &[Probe], failing: &[Option<String>]) -> Vec<String> {
    probes
        .iter()
        .zip(failing)
        .filter(|(p, _)| p.guest == guest)
        .filter_map(|(p, f)| f.as_ref().map(|e| format!("{}: {e}", p.describe())))
        .collect()
}

fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, String> {
    let s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("{addr}: {e}"))?;
    Ok(s)
}

fn ssh_banner(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let s = connect(addr, timeout)?;
    let mut line = String::new();
    // Servers may send other lines before the version line (RFC 4253 4.2).
    let mut r = BufReader::new(s.take(8192));
    for _ in 0..10 {
        line.clear();
        let n = r
            .read_line(&mut line)
            .map_err(|e| format!("{addr}: reading the SSH banner: {e}"))?;
        if n == 0 {
            break;
        }
        if line.starts_with("SSH-2.0-") {
            return Ok(());
        }
    }
    Err(format!("{addr}: no SSH-2.0 banner (got {:?})", line.trim()))
}

/// A minimal `GET` (HTTP/1.0, so the answer is never chunked and the server
/// closes the connection): the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>), String> {
    let mut s = connect(addr, timeout)?;
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nUser-Agent: imgbuild\r\nAccept: */*\r\n\r\n"
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("http://{addr}{path}: {e}"))?;
    let mut buf = Vec::new();
    s.take(4 << 20)
        .read_to_end(&mut buf)
        .map_err(|e| format!("http://{addr}{path}: {e}"))?;
    parse_response(&buf).map_err(|e| format!("http://{addr}{path}: {e}"))
}

/// Splits a whole HTTP/1.x response into status code and body (chunked
/// bodies are decoded, for servers that answer 1.0 requests with 1.1).
pub fn parse_response(buf: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| "no complete response header".to_string())?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = &buf[end + 4..];
    if !chunked {
        return Ok((status, body.to_vec()));
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let nl = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunk size")?;
        let size_text = String::from_utf8_lossy(&rest[..nl]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[nl + 2..];
        if size == 0 {
            return Ok((status, out));
        }
        if rest.len() < size {
            return Err("truncated chunk".into());
        }
        out.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or(&[]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// Serves `answer` to every connection on a loopback port.
    fn serve(answer: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                let mut b = [0u8; 1024];
                let _ = s.read(&mut b);
                let _ = s.write_all(answer);
            }
        });
        addr
    }

    fn probe(guest: &str, kind: ProbeKind) -> Probe {
        Probe {
            guest: guest.into(),
            port: 1,
            kind,
        }
    }

    #[test]
    fn the_homelab_probes_ssh_the_object_store_and_the_master_with_its_worker() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/seed/lab.yaml");
        let lab = crate::model::lab::load(&path).unwrap();
        let got: Vec<(String, u16, ProbeKind)> = probes(&lab)
            .into_iter()
            .map(|p| (p.guest, p.port, p.kind))
            .collect();
        assert_eq!(
            got,
            vec![
                ("minio".into(), 22, ProbeKind::SshBanner),
                ("minio".into(), 9000, ProbeKind::ObjectStore),
                ("devlab".into(), 22, ProbeKind::SshBanner),
                (
                    "devlab".into(),
                    8080,
                    ProbeKind::SparkMaster {
                        workers: vec!["devlab".into()]
                    }
                ),
            ]
        );
    }

    #[test]
    fn parses_plain_and_chunked_responses() {
        let (s, b) = parse_response(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nhello").unwrap();
        assert_eq!((s, b.as_slice()), (200, &b"hello"[..]));
        let (s, b) = parse_response(
            b"HTTP/1.1 503 X\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((s, b.as_slice()), (503, &b"abcde"[..]));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }

    #[test]
    fn counts_only_alive_workers() {
        let body = br#"{"workers":[{"state":"ALIVE"},{"state":"DEAD"},{"state":"ALIVE"}]}"#;
        assert_eq!(alive_workers(body).unwrap(), 2);
        assert!(alive_workers(b"{}").is_err());
        assert!(alive_workers(b"<html>").is_err());
    }

    #[test]
    fn every_probe_must_pass_and_the_missing_ones_are_named() {
        let ssh = serve(b"SSH-2.0-OpenSSH_8.9\r\n");
        let health = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        let one_worker = serve(
            b"HTTP/1.1 200 OK\r\n\r\n{\"workers\":[{\"state\":\"ALIVE\"},{\"state\":\"DEAD\"}]}",
        );
        let probes = vec![
            probe("a", ProbeKind::SshBanner),
            probe("a", ProbeKind::ObjectStore),
            probe("b", ProbeKind::SshBanner),
            probe(
                "b",
                ProbeKind::SparkMaster {
                    workers: vec!["b".into(), "c".into()],
                },
            ),
        ];
        let mut resolve = |guest: &str, _port: u16| -> Result<SocketAddr, Unresolved> {
            Ok(match guest {
                "a" => ssh,
                _ => one_worker,
            })
        };
        // a's object-store probe hits the SSH server; b's SSH probe hits HTTP.
        let out = wait_ready(
            &mut resolve,
            &probes,
            Instant::now() + Duration::from_millis(800),
            &mut |_| {},
        );
        assert_eq!(out.len(), 2);
        assert!(!out[0].is_ready() && !out[1].is_ready());
        assert_eq!(out[0].missing.len(), 1, "{:?}", out[0].missing);
        assert!(out[0].missing[0].starts_with("object store :1"));
        assert_eq!(out[1].missing.len(), 2, "{:?}", out[1].missing);
        assert!(
            out[1].missing[1].contains("1 ALIVE of 2 workers (b, c)"),
            "{:?}",
            out[1].missing
        );

        // With the right endpoints both are ready, and progress says so.
        let mut resolve = |guest: &str, port: u16| -> Result<SocketAddr, Unresolved> {
            let _ = port;
            Ok(match guest {
                "a" => health,
                _ => ssh,
            })
        };
        let probes = vec![
            probe("a", ProbeKind::ObjectStore),
            probe("b", ProbeKind::SshBanner),
        ];
        let mut seen = Vec::new();
        let out = wait_ready(
            &mut resolve,
            &probes,
            Instant::now() + Duration::from_secs(5),
            &mut |p| seen.push(p.clone()),
        );
        assert!(out.iter().all(GuestReadiness::is_ready), "{out:?}");
        assert_eq!(seen.len(), 2, "{seen:?}");
    }

    #[test]
    fn a_gone_guest_stops_the_wait_at_once() {
        let probes = vec![probe("a", ProbeKind::SshBanner)];
        let mut resolve = |_: &str, _: u16| -> Result<SocketAddr, Unresolved> {
            Err(Unresolved::Gone("QEMU exited (signal 9)".into()))
        };
        let t = Instant::now();
        let out = wait_ready(
            &mut resolve,
            &probes,
            Instant::now() + Duration::from_secs(60),
            &mut |_| {},
        );
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(out[0].missing, vec!["gone: QEMU exited (signal 9)"]);
    }

    #[test]
    fn a_refused_port_is_named_at_the_deadline() {
        // Bind then drop: nothing listens there any more.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let probes = vec![probe("a", ProbeKind::SshBanner)];
        let mut resolve = move |_: &str, _: u16| -> Result<SocketAddr, Unresolved> { Ok(addr) };
        let out = wait_ready(
            &mut resolve,
            &probes,
            Instant::now() + Duration::from_millis(300),
            &mut |_| {},
        );
        assert!(!out[0].is_ready());
        assert!(out[0].missing[0].starts_with("ssh :1 banner: 127.0.0.1:"));
    }
}
