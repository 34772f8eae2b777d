//! The lab: one Proxmox VE cluster, one network, and the guests to run on it
//! with their roles. [`load`] reads `lab/*.yaml` into these types, checks every
//! rule it can check without the image recipes, and reads the SSH public keys;
//! [`crate::model::load_all`] also resolves image names against the recipes.
//!
//! A sample (see `lab/homelab.yaml` for the full, commented file):
//!
//! ```yaml
//! proxmox:
//!   endpoint: https://192.168.1.2:8006
//!   token: env:PVE_TOKEN            # USER@REALM!TOKENID=SECRET
//!   tls: verify                     # or {fingerprint: "AB:CD:..."}
//!   nodes:
//!     - name: pve
//!       storage: {images: local-lvm, iso: local, vztmpl: local, import: local}
//! network: {bridge: vmbr0, cidr: 192.168.1.0/24, gateway: 192.168.1.1, dns: [8.8.8.8]}
//! ssh: {authorized_keys: [~/.ssh/id_ed25519.pub]}
//! guests:
//!   minio:
//!     kind: lxc
//!     vmid: 200
//!     image: ubuntu-22.04-lxc
//!     resources: {cores: 2, memory: 4GiB, disk: 20GiB}
//!     address: 192.168.1.200
//!     roles:
//!       object_store: {root_user: env:MINIO_ROOT_USER, root_password: env:MINIO_ROOT_PASSWORD}
//! ```

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use anyhow::Result;
use url::Url;

use super::lab_parse;
use super::types::{Cores, Hostname, Ipv4Cidr, Port, SecretRef, Size, VmId};
use super::yaml::Spans;
use crate::diag::BadInput;

/// Reads, converts and checks a lab file (everything except image names,
/// which need the recipes). Bad input is a [`BadInput`] listing every problem found.
pub fn load(path: &Path) -> Result<Lab> {
    lab_parse::load(path).map_err(|d| BadInput(d).into())
}

/// [`load`] of a lab file's text already in memory (the fuzz target's entry
/// point); `path` names it in diagnostics and anchors relative key paths.
pub fn from_text(path: &Path, text: &str) -> Result<Lab> {
    lab_parse::parse(path, text).map_err(|d| BadInput(d).into())
}

/// A whole lab file.
#[derive(Debug, Clone)]
pub struct Lab {
    /// The file it was read from.
    pub path: PathBuf,
    pub proxmox: Proxmox,
    pub network: Network,
    pub ssh: Ssh,
    /// In file order.
    pub guests: Vec<Guest>,
    /// The scheduled backup job of the lab's guests (`backup:`), if any.
    pub backup: Option<super::backup::Backup>,
    /// Node exporters and who may scrape them (`metrics:`), if any.
    pub metrics: Option<super::metrics::Metrics>,
    /// Unattended security updates on every guest (`updates:`; default on, no reboot).
    pub updates: super::updates::Updates,
    /// Where each field was written (dotted field path -> line/column), for diagnostics.
    pub spans: Spans,
}

/// The Proxmox VE cluster (or single host) the lab deploys to.
#[derive(Debug, Clone)]
pub struct Proxmox {
    /// Base URL of the API, e.g. `https://192.168.1.2:8006` (no path; clients add `/api2/json`).
    pub endpoint: Url,
    /// The API token, `USER@REALM!TOKENID=SECRET`, by reference.
    pub token: SecretRef,
    pub tls: Tls,
    /// At least one; guests name theirs with `node:` when there are several.
    pub nodes: Vec<PveNode>,
}

/// How the endpoint's TLS certificate is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// Verify against the system's CA roots.
    Verify,
    /// Pin the certificate's SHA-256 fingerprint, uppercase hex pairs joined by `:`
    /// (as the Proxmox GUI shows it); for the self-signed default certificate.
    Fingerprint(String),
    /// Verify against the CA certificates in this PEM file (e.g. the cluster's
    /// `/etc/pve/pve-root-ca.pem`), instead of the system's.
    CaFile(PathBuf),
}

/// One Proxmox node.
#[derive(Debug, Clone)]
pub struct PveNode {
    pub name: Hostname,
    pub storage: Storage,
}

/// Proxmox storage ids on a node, by content type.
#[derive(Debug, Clone)]
pub struct Storage {
    /// Guest disks and container root file systems (`images`/`rootdir`), e.g. `local-lvm`.
    pub images: String,
    /// Seed ISOs (`iso`), e.g. `local`.
    pub iso: String,
    /// Container templates (`vztmpl`), e.g. `local`.
    pub vztmpl: String,
    /// Disk images uploaded for `import-from` (`import`, PVE 8.4+), e.g. `local`.
    pub import: String,
}

/// The guests' network.
#[derive(Debug, Clone)]
pub struct Network {
    /// The Linux bridge guests attach to, e.g. `vmbr0`.
    pub bridge: String,
    pub cidr: Ipv4Cidr,
    pub gateway: Ipv4Addr,
    pub dns: Vec<Ipv4Addr>,
}

/// SSH access to every guest (key-only).
#[derive(Debug, Clone)]
pub struct Ssh {
    pub authorized_keys: Vec<SshKeyFile>,
}

/// A public key file and the key lines read from it at load time.
#[derive(Debug, Clone)]
pub struct SshKeyFile {
    /// As resolved (`~` expanded, relative to the lab file).
    pub path: PathBuf,
    /// Each public key line (`ssh-ed25519 AAAA... comment`), comments and blanks dropped.
    pub lines: Vec<String>,
}

impl Ssh {
    /// Every public key line, in order, for authorized_keys.
    pub fn public_keys(&self) -> Vec<String> {
        self.authorized_keys
            .iter()
            .flat_map(|k| k.lines.iter().cloned())
            .collect()
    }
}

/// Virtual machine or container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuestKind {
    /// A QEMU VM from a qcow2 image, seeded through a NoCloud ISO.
    Vm,
    /// An LXC container from a template, seeded inside the template.
    Lxc,
}

impl GuestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            GuestKind::Vm => "vm",
            GuestKind::Lxc => "lxc",
        }
    }
}

/// One guest.
#[derive(Debug, Clone)]
pub struct Guest {
    /// The map key in `guests:`; also the guest's host name.
    pub name: Hostname,
    pub kind: GuestKind,
    pub vmid: VmId,
    /// The Proxmox node it runs on (filled in when the lab has a single node).
    pub node: Hostname,
    /// The recipe name (`images/<image>.yaml`).
    pub image: String,
    pub resources: Resources,
    /// Static address; the prefix is `network.cidr`'s.
    pub address: Ipv4Addr,
    pub roles: Roles,
    /// The lab's `metrics:` section (every guest runs the node exporter).
    pub metrics: Option<super::metrics::Metrics>,
}

/// CPU, memory and disk.
#[derive(Debug, Clone)]
pub struct Resources {
    pub cores: Cores,
    /// At least 16 MiB and a whole number of MiB.
    pub memory: Size,
    /// At least 1 GiB and a whole number of GiB.
    pub disk: Size,
}

/// The services a guest runs; absent = not on this guest.
#[derive(Debug, Clone, Default)]
pub struct Roles {
    pub object_store: Option<ObjectStore>,
    pub spark: Option<Spark>,
    /// Prometheus scraping the lab.
    pub monitoring: Option<super::monitoring::Monitoring>,
}

/// Which S3 server implementation the object-store role configures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// MinIO at /usr/local/bin/minio.
    Minio,
}

impl Flavor {
    pub fn as_str(self) -> &'static str {
        match self {
            Flavor::Minio => "minio",
        }
    }
    /// Where the image must install the server binary.
    pub fn binary_path(self) -> &'static str {
        match self {
            Flavor::Minio => "/usr/local/bin/minio",
        }
    }
}

/// The object-store role. Guests sharing a `pool` name form one distributed
/// deployment (MinIO erasure coding: guests x drives_per_guest >= 4).
#[derive(Debug, Clone)]
pub struct ObjectStore {
    pub flavor: Flavor,
    /// Distributed pool this guest belongs to; `None` = standalone.
    pub pool: Option<String>,
    /// Drives on this guest (default 1). With more than one, the drives are
    /// directories `<data_dir>/drive1..N`.
    pub drives_per_guest: u32,
    /// S3 API port (default 9000).
    pub api_port: Port,
    /// Web console port (default 9001).
    pub console_port: Port,
    /// Default /var/lib/minio.
    pub data_dir: String,
    /// Default /var/log/minio.
    pub log_dir: String,
    /// Buckets to create, S3 bucket names.
    pub buckets: Vec<String>,
    /// MINIO_ROOT_USER, by reference.
    pub root_user: SecretRef,
    /// MINIO_ROOT_PASSWORD, by reference.
    pub root_password: SecretRef,
    /// The data directory's own volume (default on; `data_volume: none` = off).
    pub data_volume: Option<super::volume::DataVolume>,
}

/// The Spark role (standalone cluster): a master, a worker, or both.
#[derive(Debug, Clone)]
pub struct Spark {
    pub master: Option<SparkMaster>,
    pub worker: Option<SparkWorker>,
    pub s3: Option<SparkS3>,
    /// `spark.authenticate.secret`, by reference: required with a master; a
    /// worker-only guest takes its master's (and may only repeat it).
    pub auth_secret: Option<SecretRef>,
}

/// A Spark master on this guest.
#[derive(Debug, Clone)]
pub struct SparkMaster {
    /// RPC port (default 7077).
    pub port: Port,
    /// Web UI port (default 8080).
    pub ui_port: Port,
}

/// A Spark worker on this guest.
#[derive(Debug, Clone)]
pub struct SparkWorker {
    /// The guest running the master to join.
    pub master: Hostname,
    /// Cores offered to executors (at most the guest's cores).
    pub cores: Cores,
    /// Memory offered to executors (less than the guest's memory).
    pub memory: Size,
    /// Web UI port (default 8081).
    pub ui_port: Port,
}

/// Spark's S3A connection to an object-store guest.
#[derive(Debug, Clone)]
pub struct SparkS3 {
    /// A guest with the object-store role; its API port is used.
    pub object_store: Hostname,
    /// Spark's own S3 user, which the object store creates with access to
    /// its buckets only (never the root user).
    pub access_key: SecretRef,
    /// That user's secret key.
    pub secret_key: SecretRef,
}

/// A port a guest listens on, with the field that asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPort {
    pub port: Port,
    /// What it is for, e.g. `spark master UI`.
    pub purpose: &'static str,
    /// The dotted field path relative to the guest, e.g. `roles.spark.master.ui_port`
    /// (lab-level for `metrics.port`).
    pub field: &'static str,
    /// Only these sources may connect; empty = the whole network.
    pub from: Vec<Ipv4Addr>,
}

/// SSH, always open on every guest.
pub const SSH_PORT: Port = Port::of(22);

impl Guest {
    /// Every port this guest opens, SSH first, in a stable order.
    pub fn open_ports(&self) -> Vec<OpenPort> {
        let mut v = vec![OpenPort {
            port: SSH_PORT,
            purpose: "ssh",
            field: "ssh",
            from: vec![],
        }];
        if let Some(o) = &self.roles.object_store {
            v.push(OpenPort {
                port: o.api_port,
                purpose: "S3 API",
                field: "roles.object_store.api_port",
                from: vec![],
            });
            v.push(OpenPort {
                port: o.console_port,
                purpose: "object store console",
                field: "roles.object_store.console_port",
                from: vec![],
            });
        }
        if let Some(s) = &self.roles.spark {
            if let Some(m) = &s.master {
                v.push(OpenPort {
                    port: m.port,
                    purpose: "spark master",
                    field: "roles.spark.master.port",
                    from: vec![],
                });
                v.push(OpenPort {
                    port: m.ui_port,
                    purpose: "spark master UI",
                    field: "roles.spark.master.ui_port",
                    from: vec![],
                });
            }
            if let Some(w) = &s.worker {
                v.push(OpenPort {
                    port: w.ui_port,
                    purpose: "spark worker UI",
                    field: "roles.spark.worker.ui_port",
                    from: vec![],
                });
            }
        }
        if let Some(m) = &self.metrics {
            v.push(OpenPort {
                port: m.port,
                purpose: "node exporter",
                field: "metrics.port",
                from: m.allow.clone(),
            });
        }
        // After the lab-wide exporter, so a clash is reported here.
        if let Some(m) = &self.roles.monitoring {
            v.push(OpenPort {
                port: m.port,
                purpose: "prometheus UI",
                field: "roles.monitoring.port",
                from: vec![],
            });
        }
        v
    }

    /// Role names, for display: `object_store`, `spark_master`, `spark_worker`, `monitoring`.
    pub fn role_names(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.roles.object_store.is_some() {
            v.push("object_store");
        }
        if let Some(s) = &self.roles.spark {
            if s.master.is_some() {
                v.push("spark_master");
            }
            if s.worker.is_some() {
                v.push("spark_worker");
            }
        }
        if self.roles.monitoring.is_some() {
            v.push("monitoring");
        }
        v
    }
}

impl Lab {
    pub fn guest(&self, name: &str) -> Option<&Guest> {
        self.guests.iter().find(|g| g.name.as_str() == name)
    }

    pub fn node(&self, name: &str) -> Option<&PveNode> {
        self.proxmox.nodes.iter().find(|n| n.name.as_str() == name)
    }

    /// The guests of the object-store deployment `guest` belongs to, in file
    /// order: its pool's members, or just itself when standalone.
    pub fn object_store_members<'a>(&'a self, guest: &'a Guest) -> Vec<&'a Guest> {
        match guest
            .roles
            .object_store
            .as_ref()
            .and_then(|o| o.pool.as_deref())
        {
            None => vec![guest],
            Some(pool) => self
                .guests
                .iter()
                .filter(|g| {
                    g.roles
                        .object_store
                        .as_ref()
                        .and_then(|o| o.pool.as_deref())
                        == Some(pool)
                })
                .collect(),
        }
    }

    /// The guests whose Spark worker joins the master on `master`.
    pub fn spark_workers_of(&self, master: &str) -> Vec<&Guest> {
        self.guests
            .iter()
            .filter(|g| {
                g.roles
                    .spark
                    .as_ref()
                    .and_then(|s| s.worker.as_ref())
                    .map(|w| w.master.as_str())
                    == Some(master)
            })
            .collect()
    }

    /// The image names the guests use, sorted and deduplicated.
    pub fn images(&self) -> Vec<String> {
        let mut v: Vec<String> = self.guests.iter().map(|g| g.image.clone()).collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Why a pool's guest names do not form one MinIO host expansion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolNameError {
    /// `name` is not `<prefix><number>` with the pool's prefix.
    Name { name: String, prefix: String },
    /// The numbers have gaps.
    NotConsecutive { prefix: String },
}

/// MinIO names a distributed pool's servers with one expansion
/// (`http://minio{1...4}`), so members need one prefix and consecutive
/// numbers: returns `(prefix, first, last)`. The one place this rule lives
/// (validation reports its errors, resolve uses its result).
pub fn pool_expansion(names: &[&str]) -> Result<(String, u64, u64), PoolNameError> {
    let split = |n: &str| {
        let i = n.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (p, d) = n.split_at(i);
        (p.to_string(), d.parse::<u64>().ok())
    };
    let (prefix, _) = split(names.first().copied().unwrap_or(""));
    let mut nums = Vec::new();
    for n in names {
        match split(n) {
            (p, Some(x)) if p == prefix => nums.push(x),
            _ => {
                return Err(PoolNameError::Name {
                    name: n.to_string(),
                    prefix,
                })
            }
        }
    }
    nums.sort_unstable();
    if nums.is_empty() || nums.windows(2).any(|w| w[1] != w[0] + 1) {
        return Err(PoolNameError::NotConsecutive { prefix });
    }
    Ok((prefix, nums[0], nums[nums.len() - 1]))
}
