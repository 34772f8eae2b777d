//! Where a lab's guests run: `proxmox` (the real PVE API, `imgbuild deploy`)
//! and `local` (this machine, `imgbuild up`). Both read the same resolved
//! [`Topology`](crate::resolve::Topology), deliver the same seeds, and share
//! one readiness rule.

pub mod local;
pub mod proxmox;

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::model::lab::Lab;

/// A place guests run. Methods are what shared code (readiness, verify)
/// needs from a target.
pub trait Target {
    /// `proxmox` or `local`.
    fn name(&self) -> &'static str;
    /// The address this host connects to for `guest`'s `port`.
    fn reach(&self, guest: &crate::resolve::GuestSpec, port: u16) -> SocketAddr;
}

/// The shared readiness rule ([`crate::ready`]) for one guest, reached at
/// its lab address from this host (Proxmox guests). Blocking; `stop` (Ctrl-C)
/// is honoured between waits of at most the probe timeout.
pub fn ready_blocking(lab: &Lab, guest: &str, timeout: Duration, stop: &AtomicBool) -> Result<()> {
    let g = lab
        .guest(guest)
        .ok_or_else(|| anyhow::anyhow!("no guest {guest}"))?;
    let address = g.address;
    let probes: Vec<_> = crate::ready::probes(lab)
        .into_iter()
        .filter(|p| p.guest == guest)
        .collect();
    let deadline = Instant::now() + timeout;
    let mut resolve = |_: &str, port: u16| -> Result<SocketAddr, crate::ready::Unresolved> {
        if stop.load(Ordering::SeqCst) {
            return Err(crate::ready::Unresolved::Gone(
                "interrupted (Ctrl-C)".into(),
            ));
        }
        Ok(SocketAddr::V4(SocketAddrV4::new(address, port)))
    };
    let mut progress = |p: &crate::ready::Progress| {
        if let crate::ready::Progress::Waiting { guest, missing } = p {
            eprintln!("{guest}: waiting for {}", missing.join("; "));
        }
    };
    let out = crate::ready::wait_ready(&mut resolve, &probes, deadline, &mut progress);
    match out.into_iter().find(|r| r.guest == guest) {
        Some(r) if r.is_ready() => Ok(()),
        Some(r) => bail!(
            "{guest} not ready after {} s: {}",
            timeout.as_secs(),
            r.missing.join("; ")
        ),
        None => Ok(()),
    }
}
