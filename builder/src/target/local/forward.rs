//! Forwards of the guests' web UIs to 127.0.0.1, so a browser on this
//! machine opens them although the lab's network lives in its own namespace.
//!
//! One detached process per lab (`imgbuild local-forward`, hidden) listens on
//! the host's loopback and, per connection, opens the guest side from a
//! thread that has entered the lab's namespace (a socket keeps the namespace
//! it was created in, so the copy threads need not). Each listener takes the
//! guest's own port when it is free on the host, else any free port; the
//! ports chosen go to a JSON file `imgbuild up` reads back.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::net::Netns;

/// One forwarded UI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forward {
    pub guest: String,
    /// e.g. `object store console`.
    pub purpose: String,
    /// The guest's address and port inside the lab namespace.
    pub target: SocketAddr,
    /// The port on 127.0.0.1 (0 until the forwarder has bound it).
    pub host_port: u16,
}

impl Forward {
    /// `GUEST|PURPOSE|TARGET`, the forwarder's argument form.
    fn arg(&self) -> String {
        format!("{}|{}|{}", self.guest, self.purpose, self.target)
    }

    fn parse(s: &str) -> Result<Forward> {
        let mut it = s.splitn(3, '|');
        let (Some(guest), Some(purpose), Some(target)) = (it.next(), it.next(), it.next()) else {
            bail!("bad forward {s:?}: want GUEST|PURPOSE|ADDR:PORT");
        };
        Ok(Forward {
            guest: guest.into(),
            purpose: purpose.into(),
            target: target
                .parse()
                .map_err(|e| anyhow!("bad forward target {target:?}: {e}"))?,
            host_port: 0,
        })
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.host_port)
    }
}

/// Starts the forwarder for `forwards` (detached), waits until it has bound
/// every port, and returns it with the ports filled in.
pub fn start(
    netns: &Netns,
    forwards: &[Forward],
    ports_file: &Path,
    log: &Path,
) -> Result<(Child, Vec<Forward>)> {
    use std::os::unix::process::CommandExt;
    let _ = std::fs::remove_file(ports_file);
    let exe = std::env::current_exe().context("finding the imgbuild executable")?;
    let logf = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut child = Command::new(exe)
        .arg("local-forward")
        .arg("--netns")
        .arg(netns.path())
        .arg("--ports-file")
        .arg(ports_file)
        .args(forwards.iter().map(Forward::arg))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(logf)
        .process_group(0)
        .spawn()
        .context("starting the UI forwarder")?;
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(ports_file) {
            let got: Vec<Forward> = serde_json::from_str(&text)
                .with_context(|| format!("reading {}", ports_file.display()))?;
            return Ok((child, got));
        }
        if let Some(st) = child.try_wait()? {
            bail!(
                "the UI forwarder exited ({st}): {}",
                std::fs::read_to_string(log).unwrap_or_default().trim()
            );
        }
        if Instant::now() >= end {
            let _ = child.kill();
            bail!("the UI forwarder did not bind its ports within 20s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The forwarder's own arguments (the hidden `imgbuild local-forward`).
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The lab's network namespace file (/run/netns/NAME).
    #[arg(long)]
    pub netns: PathBuf,
    /// Where to write the bound ports (JSON).
    #[arg(long)]
    pub ports_file: PathBuf,
    /// GUEST|PURPOSE|ADDR:PORT, one per UI.
    pub forwards: Vec<String>,
}

/// Binds every forward on 127.0.0.1, writes the ports file, then serves
/// until killed.
pub fn serve(args: ServeArgs) -> Result<()> {
    let mut forwards: Vec<Forward> = args
        .forwards
        .iter()
        .map(|s| Forward::parse(s))
        .collect::<Result<_>>()?;
    let mut listeners = Vec::new();
    for f in &mut forwards {
        let l = TcpListener::bind(("127.0.0.1", f.target.port()))
            .or_else(|_| TcpListener::bind(("127.0.0.1", 0)))
            .context("binding a port on 127.0.0.1")?;
        f.host_port = l.local_addr()?.port();
        listeners.push((l, f.target));
    }
    let json = serde_json::to_vec_pretty(&forwards)?;
    crate::fsutil::write_atomic(&args.ports_file, &json, 0o600)?;
    let netns = args.netns;
    let mut handles = Vec::new();
    for (l, target) in listeners {
        let netns = netns.clone();
        handles.push(std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let netns = netns.clone();
                std::thread::spawn(move || {
                    if let Err(e) = relay(conn, &netns, target) {
                        eprintln!("forward to {target}: {e:#}");
                    }
                });
            }
        }));
    }
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

fn relay(client: TcpStream, netns: &Path, target: SocketAddr) -> Result<()> {
    let f = std::fs::File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&f),
        Some(rustix::thread::LinkNameSpaceType::Network),
    )
    .context("entering the lab's network namespace")?;
    let upstream = TcpStream::connect_timeout(&target, Duration::from_secs(5))
        .with_context(|| format!("connecting {target}"))?;
    let (mut a_r, mut a_w) = (client.try_clone()?, client);
    let (mut b_r, mut b_w) = (upstream.try_clone()?, upstream);
    let t = std::thread::spawn(move || {
        copy(&mut a_r, &mut b_w);
    });
    copy(&mut b_r, &mut a_w);
    let _ = t.join();
    Ok(())
}

fn copy(from: &mut TcpStream, to: &mut TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
