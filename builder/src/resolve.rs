//! From a validated lab to the resolved picture every target reads: each
//! guest's node and storages, network settings (address, prefix, gateway,
//! DNS, bridge, a MAC stable per lab and guest), sizes, open ports and web
//! UIs. Pure: no I/O, no secrets (seeds are built from the lab by
//! [`crate::seed`], because they need the secret values).

use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};

use crate::model::lab::{GuestKind, Lab, OpenPort, Storage};

/// The resolved lab.
#[derive(Debug, Clone)]
pub struct Topology {
    /// The lab's name: its file name without extension, lowercased, as used
    /// in tags and volume names (`[a-z0-9-]`).
    pub name: String,
    pub bridge: String,
    pub gateway: Ipv4Addr,
    pub prefix: u8,
    pub dns: Vec<Ipv4Addr>,
    pub guests: Vec<GuestSpec>,
    /// The lab's scheduled backup (`backup:`), if any.
    pub backup: Option<crate::model::backup::Backup>,
}

/// One guest, fully resolved.
#[derive(Debug, Clone)]
pub struct GuestSpec {
    pub name: String,
    pub kind: GuestKind,
    pub vmid: u32,
    pub node: String,
    pub storage: Storage,
    pub image: String,
    pub cores: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
    pub address: Ipv4Addr,
    /// Locally administered unicast MAC, the same on every run for this lab and guest.
    pub mac: String,
    pub ports: Vec<OpenPort>,
    /// Web UIs: (what, port).
    pub web: Vec<(&'static str, u16)>,
    pub roles: Vec<&'static str>,
}

impl Topology {
    pub fn guest(&self, name: &str) -> Option<&GuestSpec> {
        self.guests.iter().find(|g| g.name == name)
    }
}

/// Resolves `lab`. Every reference was checked by the model, so this cannot fail.
pub fn resolve(lab: &Lab) -> Topology {
    let name = lab_name(lab);
    let guests = lab
        .guests
        .iter()
        .map(|g| {
            let node = lab
                .node(g.node.as_str())
                .expect("the model checked every guest's node");
            let ports = g.open_ports();
            let web = ports
                .iter()
                .filter(|p| {
                    matches!(
                        p.purpose,
                        "object store console" | "spark master UI" | "spark worker UI"
                    )
                })
                .map(|p| (p.purpose, p.port.get()))
                .collect();
            GuestSpec {
                name: g.name.to_string(),
                kind: g.kind,
                vmid: g.vmid.get(),
                node: node.name.to_string(),
                storage: node.storage.clone(),
                image: g.image.clone(),
                cores: g.resources.cores.get(),
                memory_mib: g.resources.memory.mib(),
                disk_gib: g.resources.disk.gib(),
                address: g.address,
                mac: mac_for(&name, g.name.as_str()),
                ports,
                web,
                roles: g.role_names(),
            }
        })
        .collect();
    Topology {
        name,
        bridge: lab.network.bridge.clone(),
        gateway: lab.network.gateway,
        prefix: lab.network.cidr.prefix(),
        dns: lab.network.dns.clone(),
        guests,
        backup: lab.backup.clone(),
    }
}

/// `lab/homelab.yaml` -> `homelab`; anything outside `[a-z0-9-]` becomes `-`.
pub fn lab_name(lab: &Lab) -> String {
    let stem = lab
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_else(|| "lab".into());
    let s: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-').to_string();
    if s.is_empty() {
        "lab".into()
    } else {
        s
    }
}

/// `02:xx:xx:xx:xx:xx` from a hash of the lab and guest names.
pub fn mac_for(lab: &str, guest: &str) -> String {
    let h = Sha256::digest(format!("imgbuild-mac\0{lab}\0{guest}").as_bytes());
    let mut b = [0u8; 6];
    b[0] = 0x02; // locally administered, unicast
    b[1..].copy_from_slice(&h[..5]);
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_are_stable_local_unicast_and_distinct() {
        let a = mac_for("homelab", "devlab");
        assert_eq!(a, mac_for("homelab", "devlab"));
        assert_ne!(a, mac_for("homelab", "minio"));
        assert_ne!(a, mac_for("other", "devlab"));
        assert!(a.starts_with("02:"));
        assert_eq!(a.len(), 17);
    }
}
