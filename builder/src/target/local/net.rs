//! The lab's network on this machine: a network namespace of the lab's own
//! holding a bridge named like the lab's (`vmbr0`) with the lab's gateway
//! address, so the lab's subnet never meets the host's own network. VMs get
//! a TAP (`tap<vmid>i0`, Proxmox's name), containers a veth whose host side
//! is `veth<vmid>i0` (Proxmox's name) and whose guest side is `eth0`; both
//! are enslaved to the bridge. Deleting the namespace removes all of it.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::sys::{ip, run, succeeds};

/// A named network namespace (`/run/netns/NAME`, as `ip netns` keeps them).
#[derive(Debug, Clone)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: impl Into<String>) -> Netns {
        Netns { name: name.into() }
    }

    /// Its file, for `nsenter --net=` and `setns`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    pub fn exists(&self) -> bool {
        self.path().exists()
    }

    /// Creates it (with loopback up) unless it exists.
    pub fn ensure(&self) -> Result<()> {
        if !self.exists() {
            run(
                std::process::Command::new("ip").args(["netns", "add", &self.name]),
                "creating the lab's network namespace",
            )?;
        }
        ip(&self.name, &["link", "set", "lo", "up"])?;
        Ok(())
    }

    fn has_link(&self, name: &str) -> bool {
        succeeds(std::process::Command::new("ip").args(["-n", &self.name, "link", "show", name]))
    }

    /// The bridge `name` with `gateway/prefix`, up.
    pub fn ensure_bridge(&self, name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<()> {
        if !self.has_link(name) {
            ip(&self.name, &["link", "add", name, "type", "bridge"]).context(
                "creating the lab bridge (kernel feature: bridge, CONFIG_BRIDGE / `modprobe bridge`)",
            )?;
        }
        let cidr = format!("{gateway}/{prefix}");
        let have = ip(&self.name, &["-o", "-4", "addr", "show", "dev", name])?;
        if !have.contains(&format!(" {cidr} ")) {
            ip(&self.name, &["addr", "add", &cidr, "dev", name])?;
        }
        ip(&self.name, &["link", "set", name, "up"])?;
        Ok(())
    }

    /// A persistent TAP `tap` on `bridge` (recreated when it exists).
    pub fn ensure_tap(&self, tap: &str, bridge: &str) -> Result<()> {
        if self.has_link(tap) {
            ip(&self.name, &["link", "del", tap])?;
        }
        ip(&self.name, &["tuntap", "add", "dev", tap, "mode", "tap"])
            .context("creating a TAP device (kernel feature: tun, /dev/net/tun)")?;
        ip(&self.name, &["link", "set", tap, "master", bridge, "up"])?;
        Ok(())
    }

    /// Waits until `iface` appears (a container's veth, created by
    /// systemd-nspawn), then enslaves it to `bridge` and brings it up.
    pub fn attach_when_present(&self, iface: &str, bridge: &str, limit: Duration) -> Result<()> {
        let end = Instant::now() + limit;
        while !self.has_link(iface) {
            if Instant::now() >= end {
                bail!(
                    "{iface} did not appear in network namespace {} within {}s",
                    self.name,
                    limit.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        ip(&self.name, &["link", "set", iface, "master", bridge, "up"])?;
        Ok(())
    }

    /// Removes a link if it exists (a stale TAP or veth).
    pub fn remove_link(&self, name: &str) {
        if self.has_link(name) {
            let _ = ip(&self.name, &["link", "del", name]);
        }
    }

    /// The pids of every process in the namespace (`ip netns pids`).
    pub fn pids(&self) -> Vec<u32> {
        if !self.exists() {
            return Vec::new();
        }
        run(
            std::process::Command::new("ip").args(["netns", "pids", &self.name]),
            "listing the lab's processes",
        )
        .map(|o| {
            o.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
    }

    /// Deletes the namespace (and with it the bridge, TAPs and veths).
    pub fn delete(&self) -> Result<()> {
        if self.exists() {
            run(
                std::process::Command::new("ip").args(["netns", "del", &self.name]),
                "deleting the lab's network namespace",
            )?;
        }
        Ok(())
    }

    /// Moves the calling thread into this namespace (only this thread:
    /// sockets it opens from then on live in the lab's network).
    pub fn enter_this_thread(&self) -> Result<()> {
        let f = std::fs::File::open(self.path())
            .with_context(|| format!("opening {}", self.path().display()))?;
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&f),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .with_context(|| format!("entering network namespace {}", self.name))
    }
}

/// Proxmox's interface names: `tap<vmid>i0` (VMs), `veth<vmid>i0` (containers).
pub fn tap_name(vmid: u32) -> String {
    format!("tap{vmid}i0")
}

/// See [`tap_name`].
pub fn veth_name(vmid: u32) -> String {
    format!("veth{vmid}i0")
}
