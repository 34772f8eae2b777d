//! What the cluster looks like, read once per run with GETs only (issued
//! concurrently): version, nodes, bridges and storages of the nodes the lab
//! uses, every guest, the token's permissions, and the contents of the
//! storages the lab uploads to. Preflight and the plan both read this.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Result;
use futures_util::future::try_join_all;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::api::{Api, ApiError};
use super::params::Params;
use super::plan::Volume;
use super::state::{self, Resource};
use crate::resolve::Topology;

/// PVE writes booleans as 1/0 (sometimes as strings).
pub fn pve_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = Option::<Value>::deserialize(d)?;
    Ok(match v {
        Some(Value::Bool(b)) => b,
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0) != 0,
        Some(Value::String(s)) => matches!(s.as_str(), "1" | "true" | "yes" | "on"),
        _ => false,
    })
}

#[derive(Debug, Clone, Deserialize)]
pub struct Version {
    pub version: String,
    #[serde(default)]
    pub release: String,
}

impl Version {
    /// (major, minor) from `release` (`8.4`) or `version` (`8.4.1`).
    pub fn major_minor(&self) -> (u32, u32) {
        let src = if self.release.is_empty() {
            &self.version
        } else {
            &self.release
        };
        let mut it = src
            .split(['.', '-', '/'])
            .map(|p| p.parse::<u32>().unwrap_or(0));
        (it.next().unwrap_or(0), it.next().unwrap_or(0))
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct NodeInfo {
    pub node: String,
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Iface {
    pub iface: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StorageInfo {
    pub storage: String,
    #[serde(default)]
    pub content: String,
    #[serde(default, deserialize_with = "pve_bool")]
    pub enabled: bool,
    #[serde(default, deserialize_with = "pve_bool")]
    pub active: bool,
    #[serde(default, deserialize_with = "pve_bool")]
    pub shared: bool,
    #[serde(default, rename = "type")]
    pub kind: String,
}

impl StorageInfo {
    pub fn contents(&self) -> BTreeSet<String> {
        self.content
            .split(',')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
struct ContentItem {
    volid: String,
    #[serde(default)]
    size: u64,
}

/// One node the lab uses, as the cluster reports it.
#[derive(Debug, Clone, Default)]
pub struct NodeView {
    pub online: bool,
    pub bridges: BTreeSet<String>,
    pub storages: BTreeMap<String, StorageInfo>,
}

/// The whole read.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub version: Version,
    /// Every node of the cluster: name -> online.
    pub nodes: BTreeMap<String, bool>,
    /// The nodes the lab uses that exist.
    pub views: BTreeMap<String, NodeView>,
    pub guests: Vec<Resource>,
    /// ACL path -> privileges held there.
    pub permissions: BTreeMap<String, BTreeSet<String>>,
    /// This lab's uploaded volumes (seed media, images).
    pub volumes: Vec<Volume>,
}

impl Cluster {
    /// Reads everything. The first call (GET /version) doubles as the
    /// reachability, TLS and token check; its error is returned as is.
    pub async fn read(api: &Api, topo: &Topology) -> Result<Cluster, ApiError> {
        let version: Version = api.get("/version", &Params::new()).await?;
        let used: BTreeSet<String> = topo.guests.iter().map(|g| g.node.clone()).collect();
        let none = Params::new();
        let vms = Params::new().set("type", "vm");
        let nodes_f = api.get::<Vec<NodeInfo>>("/nodes", &none);
        let guests_f = api.get::<Vec<Resource>>("/cluster/resources", &vms);
        let perms_f =
            api.get::<BTreeMap<String, BTreeMap<String, Value>>>("/access/permissions", &none);
        let (nodes, guests, perms) = tokio::try_join!(nodes_f, guests_f, perms_f)?;
        let nodes: BTreeMap<String, bool> = nodes
            .into_iter()
            .map(|n| (n.node, n.status.as_deref() == Some("online")))
            .collect();
        let mut views = BTreeMap::new();
        let reads = used
            .iter()
            .filter(|n| nodes.get(*n) == Some(&true))
            .map(|n| async move {
                let (net_path, sto_path) =
                    (format!("/nodes/{n}/network"), format!("/nodes/{n}/storage"));
                let (bq, none) = (Params::new().set("type", "any_bridge"), Params::new());
                let bridges = api.get::<Vec<Iface>>(&net_path, &bq);
                let storages = api.get::<Vec<StorageInfo>>(&sto_path, &none);
                let (b, s) = tokio::try_join!(bridges, storages)?;
                Ok::<_, ApiError>((n.clone(), b, s))
            });
        for (n, b, s) in try_join_all(reads).await? {
            views.insert(
                n.clone(),
                NodeView {
                    online: true,
                    bridges: b.into_iter().map(|i| i.iface).collect(),
                    storages: s.into_iter().map(|s| (s.storage.clone(), s)).collect(),
                },
            );
        }
        // The lab's volumes on the storages it uploads to (once per node and storage).
        let mut targets: BTreeSet<(String, String)> = BTreeSet::new();
        for g in &topo.guests {
            let Some(v) = views.get(&g.node) else {
                continue;
            };
            for s in [&g.storage.iso, &g.storage.vztmpl, &g.storage.import] {
                if v.storages.get(s).is_some_and(|i| i.enabled && i.active) {
                    targets.insert((g.node.clone(), s.clone()));
                }
            }
        }
        let prefix = state::volume_prefix(&topo.name);
        let lists = targets.into_iter().map(|(n, s)| {
            let prefix = prefix.clone();
            async move {
                let items: Vec<ContentItem> = api
                    .get(&format!("/nodes/{n}/storage/{s}/content"), &Params::new())
                    .await?;
                Ok::<_, ApiError>(
                    items
                        .into_iter()
                        .filter(|i| {
                            i.volid
                                .rsplit('/')
                                .next()
                                .unwrap_or("")
                                .starts_with(&prefix)
                        })
                        .map(|i| Volume {
                            node: n.clone(),
                            storage: s.clone(),
                            volid: i.volid,
                            size: i.size,
                        })
                        .collect::<Vec<_>>(),
                )
            }
        });
        let volumes = try_join_all(lists).await?.into_iter().flatten().collect();
        let permissions = perms
            .into_iter()
            .map(|(path, privs)| {
                let held = privs
                    .into_iter()
                    .filter(|(_, v)| !matches!(v, Value::Null))
                    .map(|(p, _)| p)
                    .collect();
                (path, held)
            })
            .collect();
        Ok(Cluster {
            version,
            nodes,
            views,
            guests,
            permissions,
            volumes,
        })
    }

    /// Whether `privilege` is held on `path` (or inherited from a parent path).
    pub fn has(&self, path: &str, privilege: &str) -> bool {
        let mut p = path.to_string();
        loop {
            if self
                .permissions
                .get(&p)
                .is_some_and(|s| s.contains(privilege))
            {
                return true;
            }
            if p == "/" {
                return false;
            }
            p = match p.rfind('/') {
                Some(0) | None => "/".to_string(),
                Some(i) => p[..i].to_string(),
            };
        }
    }
}
