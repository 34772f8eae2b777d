//! `imgbuild verify`: the lab's verification step, the same checks against
//! either target. For every guest: SSH takes the lab's key as root and offers
//! only `publickey`; the agent reports ready; each service's unit is active;
//! the web UIs answer (the Spark master listing its workers ALIVE); S3 put,
//! get, list and delete in every declared bucket with the lab's credentials;
//! SparkPi through the master (from the installed Spark's examples jar)
//! finishing with its result; logs in the declared places; a port the lab
//! does not declare is dropped by the guest's firewall; on a monitoring
//! guest, Prometheus lists every target of the lab up.
//!
//! Where the guests are reached from is an [`Access`]: the deploy host
//! (Proxmox: the lab's addresses are routable) or the lab's network
//! namespace (the local target). Network checks run on a thread inside it;
//! SSH runs through `ip netns exec`.

pub mod s3;

use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::model::lab::{Guest, Lab};
use crate::target::local::net::Netns;

/// How the checks reach the guests.
#[derive(Debug, Clone)]
pub struct Access {
    /// The lab's namespace (local target), or `None`: straight from here.
    pub netns: Option<Netns>,
    /// The private key whose public half the lab authorizes.
    pub key: PathBuf,
}

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub guest: String,
    pub check: String,
    pub ok: bool,
    pub detail: String,
    pub secs: f64,
}

/// What a command printed.
struct Out {
    ok: bool,
    /// The exit code (`None`: killed by a signal).
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// How long ssh may take to connect and exchange banners. The guests are
/// ready when verify runs, but a VM under TCG on a loaded machine can take
/// well over 10 s to accept and fork a session.
const SSH_CONNECT_TIMEOUT: &str = "ConnectTimeout=30";

/// How long a short command over ssh may take, login included. A login
/// normally takes a second, but one arriving while the guest stops root's
/// user manager (10 s after the last session) waits for that stop, which
/// took ~2 minutes in the local target's containers before each had a
/// cgroup of its own; a stall like that is no failure of the lab.
const SSH_LOGIN_SECS: u64 = 240;

/// How many times a command that ssh itself failed (exit 255 with nothing on
/// stdout: no connection, the command never ran) is tried in all.
const SSH_TRIES: u32 = 3;

/// The pause between two such tries.
const SSH_RETRY_PAUSE: Duration = Duration::from_secs(5);

impl Access {
    /// Runs `f` on a thread inside the namespace (or here).
    fn inside<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, String> {
        let ns = self.netns.clone();
        std::thread::spawn(move || -> Result<T, String> {
            if let Some(ns) = ns {
                ns.enter_this_thread().map_err(|e| format!("{e:#}"))?;
            }
            Ok(f())
        })
        .join()
        .map_err(|_| "a check panicked".to_string())?
    }

    fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.name, program]);
                c
            }
            None => Command::new(program),
        }
    }

    fn ssh_base(&self) -> Command {
        let mut c = self.command("ssh");
        c.args(["-o", "StrictHostKeyChecking=no"])
            .args(["-o", "UserKnownHostsFile=/dev/null"])
            .args(["-o", "BatchMode=yes", "-o", SSH_CONNECT_TIMEOUT]);
        c
    }

    /// `ssh -i KEY root@ADDR CMD`. When ssh itself fails before the
    /// command ran (exit 255, no output: a connection refused, reset or
    /// timed out on a loaded host), it is tried again, [`SSH_TRIES`] in all;
    /// the command's own failures are returned at once.
    fn ssh(&self, addr: &str, cmd: &str, timeout: Duration) -> Result<Out, String> {
        let mut tries = 1;
        loop {
            let mut c = self.ssh_base();
            c.args(["-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes", "-i"])
                .arg(&self.key)
                .arg(format!("root@{addr}"))
                .arg(cmd);
            let o = run_timeout(&mut c, timeout)?;
            if o.ok || o.code != Some(255) || !o.stdout.is_empty() || tries >= SSH_TRIES {
                return Ok(o);
            }
            tries += 1;
            std::thread::sleep(SSH_RETRY_PAUSE);
        }
    }
}

fn run_timeout(cmd: &mut Command, timeout: Duration) -> Result<Out, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {:?}: {e}", cmd.get_program()))?;
    let mut so = child.stdout.take().expect("piped");
    let mut se = child.stderr.take().expect("piped");
    let to = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let te = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let end = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() >= end => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("no answer within {} s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(e.to_string()),
        }
    };
    Ok(Out {
        ok: status.success(),
        code: status.code(),
        stdout: to.join().unwrap_or_default(),
        stderr: te.join().unwrap_or_default(),
    })
}

fn last_line(s: &str) -> String {
    s.trim().lines().last().unwrap_or("").to_string()
}

/// Every check for every guest of `lab`; `on_result` sees each as it ends.
pub fn run(
    lab: &Lab,
    access: &Access,
    on_result: &mut dyn FnMut(&CheckResult),
) -> Vec<CheckResult> {
    let mut all = Vec::new();
    for g in &lab.guests {
        let mut push = |check: &str, t: Instant, r: Result<String, String>| {
            let c = CheckResult {
                guest: g.name.as_str().into(),
                check: check.into(),
                ok: r.is_ok(),
                detail: r.unwrap_or_else(|e| e),
                secs: t.elapsed().as_secs_f64(),
            };
            on_result(&c);
            all.push(c);
        };
        let addr = g.address.to_string();
        let ssh = |cmd: &str, secs: u64| access.ssh(&addr, cmd, Duration::from_secs(secs));

        let t = Instant::now();
        push(
            "ssh: root with the lab's key",
            t,
            ssh("id -u", SSH_LOGIN_SECS).and_then(|o| match (o.ok, o.stdout.trim()) {
                (true, "0") => Ok("logged in as root".into()),
                _ => Err(format!("`id -u` over ssh: {}", last_line(&o.stderr))),
            }),
        );
        let t = Instant::now();
        push(
            "ssh: only publickey offered",
            t,
            publickey_only(access, &addr),
        );
        // The endpoints can answer a moment before the agent records ready
        // (its last checks and status write): allow it two minutes.
        let t = Instant::now();
        let mut r = Err(String::new());
        while t.elapsed() < Duration::from_secs(120) {
            r = ssh("cat /var/lib/imgbuild/status.json", SSH_LOGIN_SECS).and_then(|o| {
                let v: serde_json::Value = serde_json::from_str(&o.stdout)
                    .map_err(|e| format!("status.json: {e}: {}", last_line(&o.stderr)))?;
                match v["state"].as_str() {
                    Some("ready") => Ok(format!(
                        "instance {}",
                        v["instance_id"]
                            .as_str()
                            .unwrap_or("?")
                            .chars()
                            .take(12)
                            .collect::<String>()
                    )),
                    other => Err(format!("state {other:?}, failed step {}", v["failed_step"])),
                }
            });
            if !matches!(&r, Err(e) if e.starts_with("state Some(\"running\")")) {
                break;
            }
            std::thread::sleep(Duration::from_secs(2));
        }
        push("firstboot: ready", t, r);
        let units = units(g);
        let t = Instant::now();
        push(
            "services active",
            t,
            ssh(
                &format!("systemctl is-active {}", units.join(" ")),
                SSH_LOGIN_SECS,
            )
            .and_then(|o| {
                let states: Vec<&str> = o.stdout.split_whitespace().collect();
                let bad: Vec<String> = units
                    .iter()
                    .zip(states.iter().chain(std::iter::repeat(&"unknown")))
                    .filter(|(_, s)| **s != "active")
                    .map(|(u, s)| format!("{u} is {s}"))
                    .collect();
                if bad.is_empty() {
                    Ok(units.join(", "))
                } else {
                    Err(bad.join(", "))
                }
            }),
        );
        for (name, r, secs) in network_checks(lab, g, access) {
            all.push(CheckResult {
                guest: g.name.as_str().into(),
                check: name,
                ok: r.is_ok(),
                detail: r.unwrap_or_else(|e| e),
                secs,
            });
            on_result(all.last().expect("just pushed"));
        }
        let mut push = |check: &str, t: Instant, r: Result<String, String>| {
            let c = CheckResult {
                guest: g.name.as_str().into(),
                check: check.into(),
                ok: r.is_ok(),
                detail: r.unwrap_or_else(|e| e),
                secs: t.elapsed().as_secs_f64(),
            };
            on_result(&c);
            all.push(c);
        };
        if let Some(m) = g.roles.spark.as_ref().and_then(|s| s.master.as_ref()) {
            let t = Instant::now();
            let cmd = format!(
                "J=$(ls /opt/spark/examples/jars/spark-examples_*.jar | head -n1) && \
                 /opt/spark/bin/spark-submit --master spark://{addr}:{} \
                 --class org.apache.spark.examples.SparkPi \
                 --conf spark.executor.memory=512m --conf spark.ui.enabled=false \"$J\" 10 2>&1",
                m.port
            );
            let submit = || {
                ssh(&cmd, 600).and_then(|o| {
                    let line = o.stdout.lines().find(|l| l.starts_with("Pi is roughly"));
                    match line {
                        Some(l) if o.ok => Ok(l.to_string()),
                        _ => Err(format!(
                            "spark-submit exited {}: {}",
                            if o.ok {
                                "0 without a result"
                            } else {
                                "non-zero"
                            },
                            o.stdout
                                .lines()
                                .rev()
                                .take(5)
                                .collect::<Vec<_>>()
                                .join(" | ")
                        )),
                    }
                })
            };
            let mut r = submit();
            // A JVM that dies of a fatal error (it leaves hs_err_pid*.log; seen
            // once in a while under QEMU's TCG emulation) says nothing about the
            // lab: one more try, and the result says so.
            if matches!(&r, Err(e) if e.contains("hs_err_pid")) {
                r = submit()
                    .map(|l| format!("{l} (second try: the first JVM died of a fatal error)"));
            }
            push("spark: SparkPi through the master", t, r);
        }
        let mut dirs: Vec<(String, String)> = Vec::new();
        if let Some(os) = &g.roles.object_store {
            dirs.push(("logs: object store".into(), os.log_dir.clone()));
        }
        if g.roles.spark.is_some() {
            dirs.push(("logs: spark".into(), "/opt/spark/logs".into()));
        }
        for (name, dir) in dirs {
            let t = Instant::now();
            push(
                &name,
                t,
                ssh(
                    &format!("find {dir} -type f -size +0 | head -n 3"),
                    SSH_LOGIN_SECS,
                )
                .and_then(|o| {
                    if o.ok && !o.stdout.trim().is_empty() {
                        Ok(o.stdout.split_whitespace().collect::<Vec<_>>().join(", "))
                    } else {
                        Err(format!(
                            "no non-empty log file under {dir} {}",
                            last_line(&o.stderr)
                        ))
                    }
                }),
            );
        }
    }
    all
}

/// Runs `f` until it passes or `within` has passed since the first try,
/// pausing `pause` between tries: for answers that follow the lab's own
/// rhythm (Prometheus' view of its targets is only as fresh as the last
/// scrape; a UI on a loaded guest can miss one deadline). The error is the
/// last one, with how many tries it took.
fn retry(
    within: Duration,
    pause: Duration,
    mut f: impl FnMut() -> Result<String, String>,
) -> Result<String, String> {
    let t = Instant::now();
    let mut tries = 1;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if t.elapsed() + pause >= within => {
                return Err(if tries == 1 {
                    e
                } else {
                    format!(
                        "{e} ({tries} tries over {:.0} s)",
                        t.elapsed().as_secs_f64()
                    )
                });
            }
            Err(_) => {
                tries += 1;
                std::thread::sleep(pause);
            }
        }
    }
}

/// How long a web UI check keeps trying.
const UI_WITHIN: Duration = Duration::from_secs(30);

/// How long the Prometheus check waits for every target to be up: a JVM's
/// metrics servlet on a loaded guest can miss a scrape (the scrape timeout
/// is at most the scrape interval), and the target is down until the next.
const PROMETHEUS_WITHIN: Duration = Duration::from_secs(90);

/// A service user to check: the guests using it, its resolved credentials
/// (or why not), its buckets.
type ServiceUser = (String, Result<(String, String), String>, Vec<String>);

/// A service user round-trips an object in each of its buckets, and a
/// bucket outside them answers 403.
fn spark_user_confined(c: &s3::Client<'_>, buckets: &[String]) -> Result<String, String> {
    for b in buckets {
        c.round_trip(b)?;
    }
    let path = "/imgbuild-verify-not-granted/denied.txt";
    match c.request("PUT", path, "", b"x")? {
        (403, _) => Ok(format!(
            "put, get, list, delete in {}; PUT {path} refused (403)",
            buckets.join(",")
        )),
        (st, body) => Err(format!(
            "PUT {path} as the service user answered {st}, want 403: {}",
            String::from_utf8_lossy(&body)
                .chars()
                .take(200)
                .collect::<String>()
        )),
    }
}

/// The units the guest's roles run, plus SSH and the firewall.
fn units(g: &Guest) -> Vec<String> {
    let mut v = vec!["ssh".to_string(), "nftables".to_string()];
    if g.roles.object_store.is_some() {
        v.push("minio".into());
    }
    if let Some(s) = &g.roles.spark {
        if s.master.is_some() {
            v.push("spark-master".into());
        }
        if s.worker.is_some() {
            v.push("spark-worker".into());
        }
    }
    if g.metrics.is_some() {
        v.push("node-exporter".into());
    }
    if g.roles.monitoring.is_some() {
        v.push("prometheus".into());
    }
    v
}

/// Prometheus' `/api/v1/targets`: every one of the lab's `want` targets is
/// active and up; else which are not, with Prometheus' last error.
fn prometheus_targets(body: &[u8], want: usize) -> Result<String, String> {
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let active = v["data"]["activeTargets"]
        .as_array()
        .ok_or_else(|| "no `data.activeTargets`".to_string())?;
    let down: Vec<String> = active
        .iter()
        .filter(|t| t["health"] != "up")
        .map(|t| {
            format!(
                "{} on {} is {} ({})",
                t["labels"]["job"].as_str().unwrap_or("?"),
                t["labels"]["guest"].as_str().unwrap_or("?"),
                t["health"].as_str().unwrap_or("?"),
                t["lastError"].as_str().unwrap_or("")
            )
        })
        .collect();
    if active.len() != want || !down.is_empty() {
        return Err(format!(
            "{} of {want} targets active, {} down: {}",
            active.len(),
            down.len(),
            down.join("; ")
        ));
    }
    Ok(format!("all {want} targets up"))
}

/// `ssh -v` with passwords only must fail, and the server must name only
/// `publickey` as a method that can continue.
fn publickey_only(access: &Access, addr: &str) -> Result<String, String> {
    let mut tries = 1;
    let o = loop {
        let mut c = access.ssh_base();
        c.args([
            "-v",
            "-o",
            "PreferredAuthentications=password,keyboard-interactive",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            "LogLevel=DEBUG1",
        ])
        .arg(format!("root@{addr}"))
        .arg("true");
        let o = run_timeout(&mut c, Duration::from_secs(SSH_LOGIN_SECS))?;
        // No method named at all: the connection failed before
        // authentication (as [`Access::ssh`], tried again).
        let reached_auth = o.stderr.contains("Authentications that can continue: ");
        if o.ok || reached_auth || tries >= SSH_TRIES {
            break o;
        }
        tries += 1;
        std::thread::sleep(SSH_RETRY_PAUSE);
    };
    if o.ok {
        return Err("logged in without a key".into());
    }
    let offered: Vec<&str> = o
        .stderr
        .lines()
        .filter_map(|l| l.split("Authentications that can continue: ").nth(1))
        .map(str::trim)
        .collect();
    if offered.is_empty() || offered.iter().any(|m| *m != "publickey") {
        return Err(format!(
            "the server offers {offered:?}, want only publickey ({})",
            last_line(&o.stderr)
        ));
    }
    Ok("password login refused; methods offered: publickey".into())
}

/// The checks made over TCP from inside the namespace: web UIs, S3, the firewall.
fn network_checks(
    lab: &Lab,
    g: &Guest,
    access: &Access,
) -> Vec<(String, Result<String, String>, f64)> {
    let ip = g.address;
    let mut uis: Vec<(String, u16, Option<usize>)> = Vec::new();
    if let Some(os) = &g.roles.object_store {
        uis.push((
            "ui: object store console".into(),
            os.console_port.get(),
            None,
        ));
    }
    if let Some(s) = &g.roles.spark {
        if let Some(m) = &s.master {
            let workers = lab.spark_workers_of(g.name.as_str()).len();
            uis.push(("ui: spark master".into(), m.ui_port.get(), Some(workers)));
        }
        if let Some(w) = &s.worker {
            uis.push(("ui: spark worker".into(), w.ui_port.get(), None));
        }
    }
    let s3 = g.roles.object_store.as_ref().map(|os| {
        (
            os.api_port.get(),
            os.buckets.clone(),
            os.root_user.resolve().map_err(|e| format!("{e:#}")),
            os.root_password.resolve().map_err(|e| format!("{e:#}")),
        )
    });
    // The service users this object store created (Spark's): each reaches
    // its buckets and is refused elsewhere.
    let users: Vec<ServiceUser> = crate::resolve::resolve(lab)
        .guest(g.name.as_str())
        .map(|spec| {
            spec.s3_users
                .iter()
                .map(|u| {
                    let creds = u
                        .access_key
                        .resolve()
                        .and_then(|a| Ok((a, u.secret_key.resolve()?)))
                        .map_err(|e| format!("{e:#}"));
                    (u.guests.join(","), creds, u.buckets.clone())
                })
                .collect()
        })
        .unwrap_or_default();
    let api_port = g.roles.object_store.as_ref().map(|os| os.api_port.get());
    let prometheus = g
        .roles
        .monitoring
        .as_ref()
        .map(|m| (m.port.get(), crate::scrape::targets(lab).len()));
    let declared: Vec<u16> = g.open_ports().iter().map(|p| p.port.get()).collect();
    let worker_master = g
        .roles
        .spark
        .as_ref()
        .and_then(|s| s.worker.as_ref())
        .and_then(|w| lab.guest(w.master.as_str()))
        .and_then(|m| {
            let ui = m.roles.spark.as_ref()?.master.as_ref()?.ui_port.get();
            Some(SocketAddr::new(m.address.into(), ui))
        });
    let r = access.inside(move || {
        let mut out = Vec::new();
        let timeout = Duration::from_secs(10);
        for (name, port, workers) in uis {
            let t = Instant::now();
            let a = SocketAddr::new(ip.into(), port);
            let r = retry(UI_WITHIN, Duration::from_secs(2), || match workers {
                None => crate::ready::http_get(a, "/", timeout).and_then(|(st, _)| {
                    if st < 500 {
                        Ok(format!("http://{a}/ answers {st}"))
                    } else {
                        Err(format!("http://{a}/ answers {st}"))
                    }
                }),
                Some(n) => crate::ready::http_get(a, "/json/", timeout).and_then(|(st, b)| {
                    let alive = crate::ready::alive_workers(&b)?;
                    if st == 200 && alive >= n {
                        Ok(format!("http://{a}/json/: {alive} worker(s) ALIVE"))
                    } else {
                        Err(format!(
                            "http://{a}/json/: HTTP {st}, {alive} ALIVE, want {n}"
                        ))
                    }
                }),
            });
            out.push((name, r, t.elapsed().as_secs_f64()));
        }
        if let Some((port, want)) = prometheus {
            let t = Instant::now();
            let a = SocketAddr::new(ip.into(), port);
            let r = retry(PROMETHEUS_WITHIN, Duration::from_secs(2), || {
                crate::ready::http_get(a, "/api/v1/targets?state=active", timeout)
                    .and_then(|(st, b)| match st {
                        200 => prometheus_targets(&b, want),
                        _ => Err(format!("HTTP {st}")),
                    })
                    .map_err(|e| format!("http://{a}/api/v1/targets: {e}"))
            });
            out.push((
                "monitoring: every target up".into(),
                r,
                t.elapsed().as_secs_f64(),
            ));
        }
        if let Some((port, buckets, user, password)) = s3 {
            for b in buckets {
                let t = Instant::now();
                let r = match (&user, &password) {
                    (Ok(u), Ok(p)) => s3::Client {
                        addr: SocketAddr::new(ip.into(), port),
                        access: u,
                        secret: p,
                    }
                    .round_trip(&b)
                    .map(|()| "put, get, list, delete".to_string()),
                    (Err(e), _) | (_, Err(e)) => Err(format!("credentials: {e}")),
                };
                out.push((format!("s3: bucket {b}"), r, t.elapsed().as_secs_f64()));
            }
        }
        if let Some(port) = api_port {
            for (guests, creds, buckets) in &users {
                let t = Instant::now();
                let r = match creds {
                    Ok((a, sk)) => {
                        let c = s3::Client {
                            addr: SocketAddr::new(ip.into(), port),
                            access: a,
                            secret: sk,
                        };
                        spark_user_confined(&c, buckets)
                    }
                    Err(e) => Err(format!("credentials: {e}")),
                };
                out.push((
                    format!("s3: spark's user ({guests}) only in its buckets"),
                    r,
                    t.elapsed().as_secs_f64(),
                ));
            }
        }
        // An undeclared port: the worker's RPC port (it listens, but the lab
        // does not declare it), else one nothing should listen on. Dropped =
        // no answer at all; refused means packets reach the guest's stack.
        let t = Instant::now();
        let mut probe = 1u16;
        if let Some(m) = worker_master {
            if let Ok((200, body)) = crate::ready::http_get(m, "/json/", timeout) {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let mine = v["workers"].as_array().and_then(|ws| {
                    ws.iter()
                        .find(|w| w["host"] == ip.to_string().as_str())
                        .and_then(|w| w["port"].as_u64())
                });
                if let Some(p) = mine.and_then(|p| u16::try_from(p).ok()) {
                    probe = p;
                }
            }
        }
        let r = if declared.contains(&probe) {
            Err(format!(
                "port {probe} is declared; no undeclared port to probe"
            ))
        } else {
            let a = SocketAddr::new(ip.into(), probe);
            match std::net::TcpStream::connect_timeout(&a, Duration::from_secs(3)) {
                Ok(_) => Err(format!("{a} accepted a connection (undeclared port open)")),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
                    Ok(format!("{a}: no answer (dropped)"))
                }
                Err(e) => Err(format!("{a}: {e} (answered, not dropped)")),
            }
        };
        out.push((
            "firewall: undeclared port dropped".into(),
            r,
            t.elapsed().as_secs_f64(),
        ));
        out
    });
    r.unwrap_or_else(|e| vec![("network checks".into(), Err(e), 0.0)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_passes_late_or_names_the_last_error_and_tries() {
        let mut n = 0;
        let r = retry(Duration::from_secs(5), Duration::from_millis(10), || {
            n += 1;
            if n < 3 {
                Err(format!("not yet {n}"))
            } else {
                Ok("fine".into())
            }
        });
        assert_eq!((r, n), (Ok("fine".to_string()), 3));
        let mut n = 0;
        let e = retry(
            Duration::from_millis(100),
            Duration::from_millis(10),
            || {
                n += 1;
                Err(format!("down {n}"))
            },
        )
        .unwrap_err();
        assert!(n > 1, "{n}");
        assert!(e.starts_with(&format!("down {n} ({n} tries over ")), "{e}");
        // A deadline shorter than the pause: one try, its error as it is.
        let e = retry(Duration::from_millis(1), Duration::from_secs(2), || {
            Err("once".to_string())
        })
        .unwrap_err();
        assert_eq!(e, "once");
    }

    #[test]
    fn prometheus_targets_all_up_or_named() {
        let up = br#"{"status":"success","data":{"activeTargets":[
            {"labels":{"job":"node","guest":"lab2"},"health":"up","lastError":""},
            {"labels":{"job":"spark-worker","guest":"lab2"},"health":"up","lastError":""}]}}"#;
        assert_eq!(prometheus_targets(up, 2).unwrap(), "all 2 targets up");
        let e = prometheus_targets(up, 3).unwrap_err();
        assert!(e.starts_with("2 of 3 targets active"), "{e}");
        let down = br#"{"status":"success","data":{"activeTargets":[
            {"labels":{"job":"node","guest":"lab2"},"health":"up","lastError":""},
            {"labels":{"job":"spark-worker","guest":"lab2"},"health":"down",
             "lastError":"connect: connection refused"}]}}"#;
        let e = prometheus_targets(down, 2).unwrap_err();
        assert!(
            e.contains("spark-worker on lab2 is down (connect: connection refused)"),
            "{e}"
        );
        assert!(prometheus_targets(b"<html>", 1).is_err());
    }
}
