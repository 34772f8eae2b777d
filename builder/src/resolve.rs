//! From a validated lab to the resolved picture every target reads: each
//! guest's node and storages, network settings (address, prefix, gateway,
//! DNS, bridge, a MAC stable per lab and guest), sizes, open ports and web
//! UIs, and how its services reach the others (peers, the Spark master URL,
//! the S3 endpoint and which credentials, the object store's volumes). Pure:
//! no I/O and no secret values (only references; [`crate::seed`] reads them).
//! Nobody downstream looks a peer up again.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use sha2::{Digest, Sha256};

use crate::model::lab::{Guest, GuestKind, Lab, OpenPort, Storage};
use crate::model::types::SecretRef;

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
    /// Every guest of the lab by name (for /etc/hosts).
    pub peers: BTreeMap<String, Ipv4Addr>,
    /// The object store's volumes (MINIO_VOLUMES), when it runs here.
    pub object_store_volumes: Option<StoreVolumes>,
    /// A Spark master here: the address it binds and advertises, and how many
    /// workers join it.
    pub spark_master: Option<MasterLink>,
    /// A Spark worker here: the master it joins, `spark://addr:port`.
    pub spark_master_url: Option<String>,
    /// Spark's S3A connection.
    pub s3: Option<S3Link>,
    /// Spark's `spark.authenticate.secret` (a worker-only guest: its master's).
    pub spark_auth: Option<SecretRef>,
    /// On an object-store guest: the S3 users it creates, one per access key
    /// of every Spark guest whose `s3` points at it (or at its pool).
    pub s3_users: Vec<S3User>,
    /// The data volume (object-store data dir on its own volume), if any.
    pub data: Option<DataSpec>,
}

/// MINIO_VOLUMES: local directories, or one distributed-mode expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreVolumes {
    Local(Vec<String>),
    /// `http://minio{1...4}:9000/var/lib/minio/drive{1...2}`
    Distributed(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterLink {
    /// The guest's address, not its name: Ubuntu maps the own host name to
    /// 127.0.1.1, and a master bound there is unreachable from workers.
    pub host: Ipv4Addr,
    pub expect_workers: u32,
}

/// Spark's S3A settings, credentials by reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Link {
    /// `http://addr:port` of the object store.
    pub endpoint: String,
    /// Spark's own S3 user (never the object store's root user).
    pub access_key: SecretRef,
    pub secret_key: SecretRef,
    /// The object store's root credentials, only to refuse a Spark user
    /// whose values turn out to be the same (never put in Spark's seed).
    pub store_root: (SecretRef, SecretRef),
}

/// A service user an object-store guest creates, with a canned policy
/// limited to that store's buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3User {
    pub access_key: SecretRef,
    pub secret_key: SecretRef,
    /// `imgbuild-spark-<first guest using it>`.
    pub policy: String,
    pub buckets: Vec<String>,
    /// The Spark guests that use it.
    pub guests: Vec<String>,
}

/// A guest's data volume, resolved: storage (the node's images storage
/// unless the lab names one), size and where it is mounted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSpec {
    pub storage: String,
    pub size_gib: u64,
    /// The directory it is mounted at (the object store's data_dir).
    pub mount: String,
}

impl Topology {
    pub fn guest(&self, name: &str) -> Option<&GuestSpec> {
        self.guests.iter().find(|g| g.name == name)
    }
}

/// Resolves `lab`. Every reference was checked by the model, so this cannot fail.
pub fn resolve(lab: &Lab) -> Topology {
    let name = lab_name(lab);
    let peers: BTreeMap<String, Ipv4Addr> = lab
        .guests
        .iter()
        .map(|g| (g.name.to_string(), g.address))
        .collect();
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
                        "object store console"
                            | "spark master UI"
                            | "spark worker UI"
                            | "prometheus UI"
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
                peers: peers.clone(),
                object_store_volumes: store_volumes(lab, g),
                spark_master: spark_master(lab, g),
                spark_master_url: spark_master_url(lab, g),
                s3: s3_link(lab, g),
                spark_auth: spark_auth(lab, g),
                s3_users: s3_users(lab, g),
                data: g.roles.object_store.as_ref().and_then(|os| {
                    os.data_volume.as_ref().map(|v| DataSpec {
                        storage: v
                            .storage
                            .clone()
                            .unwrap_or_else(|| node.storage.images.clone()),
                        size_gib: v.size.gib(),
                        mount: os.data_dir.clone(),
                    })
                }),
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

fn store_volumes(lab: &Lab, g: &Guest) -> Option<StoreVolumes> {
    let os = g.roles.object_store.as_ref()?;
    let drives = |base: &str| -> String {
        if os.drives_per_guest <= 1 {
            base.to_string()
        } else {
            format!("{base}/drive{{1...{}}}", os.drives_per_guest)
        }
    };
    Some(match &os.pool {
        None if os.drives_per_guest <= 1 => StoreVolumes::Local(vec![os.data_dir.clone()]),
        None => StoreVolumes::Local(
            (1..=os.drives_per_guest)
                .map(|i| format!("{}/drive{i}", os.data_dir))
                .collect(),
        ),
        Some(_) => {
            let names: Vec<&str> = lab
                .object_store_members(g)
                .iter()
                .map(|m| m.name.as_str())
                .collect();
            let (prefix, first, last) = crate::model::lab::pool_expansion(&names)
                .expect("the model checked the pool's names");
            StoreVolumes::Distributed(format!(
                "http://{prefix}{{{first}...{last}}}:{}{}",
                os.api_port.get(),
                drives(&os.data_dir)
            ))
        }
    })
}

fn spark_master(lab: &Lab, g: &Guest) -> Option<MasterLink> {
    g.roles.spark.as_ref()?.master.as_ref()?;
    Some(MasterLink {
        host: g.address,
        expect_workers: lab.spark_workers_of(g.name.as_str()).len() as u32,
    })
}

fn spark_master_url(lab: &Lab, g: &Guest) -> Option<String> {
    let w = g.roles.spark.as_ref()?.worker.as_ref()?;
    let master = lab
        .guest(w.master.as_str())
        .expect("the model checked the worker's master");
    let port = master
        .roles
        .spark
        .as_ref()
        .and_then(|s| s.master.as_ref())
        .expect("the model checked that the master guest runs a master")
        .port
        .get();
    Some(format!("spark://{}:{port}", master.address))
}

fn s3_link(lab: &Lab, g: &Guest) -> Option<S3Link> {
    let s3 = g.roles.spark.as_ref()?.s3.as_ref()?;
    let store = lab
        .guest(s3.object_store.as_str())
        .expect("the model checked the S3 object store guest");
    let os = store
        .roles
        .object_store
        .as_ref()
        .expect("the model checked that it runs the object store");
    Some(S3Link {
        endpoint: format!("http://{}:{}", store.address, os.api_port.get()),
        access_key: s3.access_key.clone(),
        secret_key: s3.secret_key.clone(),
        store_root: (os.root_user.clone(), os.root_password.clone()),
    })
}

fn spark_auth(lab: &Lab, g: &Guest) -> Option<SecretRef> {
    let s = g.roles.spark.as_ref()?;
    if s.master.is_some() {
        return s.auth_secret.clone();
    }
    let w = s.worker.as_ref()?;
    let master = lab.guest(w.master.as_str())?;
    master.roles.spark.as_ref()?.auth_secret.clone()
}

fn s3_users(lab: &Lab, g: &Guest) -> Vec<S3User> {
    let Some(os) = g.roles.object_store.as_ref() else {
        return Vec::new();
    };
    let members: Vec<&str> = lab
        .object_store_members(g)
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    let mut users: Vec<S3User> = Vec::new();
    for sg in &lab.guests {
        let Some(s3) = sg.roles.spark.as_ref().and_then(|s| s.s3.as_ref()) else {
            continue;
        };
        if !members.contains(&s3.object_store.as_str()) {
            continue;
        }
        match users.iter_mut().find(|u| u.access_key == s3.access_key) {
            Some(u) => u.guests.push(sg.name.to_string()),
            None => users.push(S3User {
                access_key: s3.access_key.clone(),
                secret_key: s3.secret_key.clone(),
                policy: format!("imgbuild-spark-{}", sg.name),
                buckets: os.buckets.clone(),
                guests: vec![sg.name.to_string()],
            }),
        }
    }
    users
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
