//! `imgbuild plan`: what a lab builds, without touching anything: each guest
//! (kind, vmid, node, size, address, image, roles, open ports), how the
//! services find each other, and the images needed. A table by default, JSON
//! with `--json`.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use crate::model::lab::{Guest, Lab};
use crate::model::{self, Loaded};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The lab file to plan.
    #[arg(long, value_name = "FILE", default_value = "lab/homelab.yaml")]
    pub lab: PathBuf,

    /// The directory of image recipes (`*.yaml`).
    #[arg(long, value_name = "DIR", default_value = "images")]
    pub images: PathBuf,

    /// Print the plan as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let loaded = model::load_all(&args.lab, &args.images)?;
    let plan = Plan::of(&loaded);
    let mirror_pins = crate::lock::mirror_pins_of(&args.images, &loaded)?;
    if args.json {
        let mut v = serde_json::to_value(&plan)?;
        v["mirror_pinned_artifacts"] = serde_json::to_value(&mirror_pins)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", plan.table());
        for p in &mirror_pins {
            println!("warning: {}", p.describe());
        }
    }
    Ok(())
}

/// The plan, as printed with `--json`.
#[derive(Debug, Serialize)]
pub struct Plan {
    pub lab: PathBuf,
    pub proxmox: ProxmoxPlan,
    pub network: NetworkPlan,
    pub guests: Vec<GuestPlan>,
    pub images: Vec<ImagePlan>,
}

#[derive(Debug, Serialize)]
pub struct ProxmoxPlan {
    pub endpoint: String,
    pub nodes: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct NetworkPlan {
    pub bridge: String,
    pub cidr: String,
    pub gateway: String,
    pub dns: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct GuestPlan {
    pub name: String,
    pub kind: &'static str,
    pub vmid: u32,
    pub node: String,
    pub cores: u32,
    pub memory_bytes: u64,
    pub disk_bytes: u64,
    /// `a.b.c.d/prefix`.
    pub address: String,
    pub image: String,
    pub roles: Vec<&'static str>,
    pub ports: Vec<PortPlan>,
    /// How this guest's services reach others, e.g. `spark worker -> spark://devlab:7077`.
    pub links: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct PortPlan {
    pub port: u16,
    pub purpose: &'static str,
    /// The only sources it accepts (metrics ports); absent = the lab network.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ImagePlan {
    pub name: String,
    pub kind: &'static str,
    pub recipe: PathBuf,
    pub base: String,
    /// Payload artifact names; the firstboot agent is always added as well.
    pub payload: Vec<String>,
    pub used_by: Vec<String>,
}

impl Plan {
    pub fn of(loaded: &Loaded) -> Plan {
        let lab = &loaded.lab;
        let topo = crate::resolve::resolve(lab);
        let prefix = lab.network.cidr.prefix();
        let guests = lab
            .guests
            .iter()
            .map(|g| GuestPlan {
                name: g.name.to_string(),
                kind: g.kind.as_str(),
                vmid: g.vmid.get(),
                node: g.node.to_string(),
                cores: g.resources.cores.get(),
                memory_bytes: g.resources.memory.bytes(),
                disk_bytes: g.resources.disk.bytes(),
                address: format!("{}/{prefix}", g.address),
                image: g.image.clone(),
                roles: g.role_names(),
                ports: g
                    .open_ports()
                    .into_iter()
                    .map(|p| PortPlan {
                        port: p.port.get(),
                        purpose: p.purpose,
                        from: p.from.iter().map(|a| a.to_string()).collect(),
                    })
                    .collect(),
                links: links(lab, &topo, g),
            })
            .collect();
        let images = lab
            .images()
            .into_iter()
            .filter_map(|name| loaded.recipe(&name))
            .map(|r| ImagePlan {
                name: r.name.clone(),
                kind: r.kind.as_str(),
                recipe: r.path.clone(),
                base: r.base.artifact.file_name(),
                payload: r.payload.iter().map(|p| p.artifact.name.clone()).collect(),
                used_by: lab
                    .guests
                    .iter()
                    .filter(|g| g.image == r.name)
                    .map(|g| g.name.to_string())
                    .collect(),
            })
            .collect();
        Plan {
            lab: lab.path.clone(),
            proxmox: ProxmoxPlan {
                endpoint: lab.proxmox.endpoint.to_string(),
                nodes: lab
                    .proxmox
                    .nodes
                    .iter()
                    .map(|n| n.name.to_string())
                    .collect(),
            },
            network: NetworkPlan {
                bridge: lab.network.bridge.clone(),
                cidr: lab.network.cidr.to_string(),
                gateway: lab.network.gateway.to_string(),
                dns: lab.network.dns.iter().map(|d| d.to_string()).collect(),
            },
            guests,
            images,
        }
    }

    /// The human form: a guest table, the links between services, the images.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "lab {}: proxmox {} (node{} {}), network {} {} gateway {} dns {}\n",
            self.lab.display(),
            self.proxmox.endpoint,
            if self.proxmox.nodes.len() == 1 {
                ""
            } else {
                "s"
            },
            self.proxmox.nodes.join(", "),
            self.network.bridge,
            self.network.cidr,
            self.network.gateway,
            self.network.dns.join(", ")
        );
        let mut rows = vec![[
            "GUEST", "KIND", "VMID", "NODE", "CORES", "MEMORY", "DISK", "ADDRESS", "IMAGE",
            "ROLES", "PORTS",
        ]
        .map(String::from)
        .to_vec()];
        for g in &self.guests {
            rows.push(vec![
                g.name.clone(),
                g.kind.to_string(),
                g.vmid.to_string(),
                g.node.clone(),
                g.cores.to_string(),
                model::types::Size::from_bytes(g.memory_bytes).to_string(),
                model::types::Size::from_bytes(g.disk_bytes).to_string(),
                g.address.clone(),
                g.image.clone(),
                g.roles.join(","),
                g.ports
                    .iter()
                    .map(|p| {
                        let mark = if p.from.is_empty() { "" } else { "*" };
                        format!("{}{mark}", p.port)
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            ]);
        }
        out.push_str(&columns(&rows));
        // Ports limited to some sources (metrics: the monitoring addresses).
        let mut limited: Vec<String> = self
            .guests
            .iter()
            .flat_map(|g| g.ports.iter())
            .filter(|p| !p.from.is_empty())
            .map(|p| {
                format!(
                    "  {} ({}) only from {}",
                    p.port,
                    p.purpose,
                    p.from.join(", ")
                )
            })
            .collect();
        limited.sort();
        limited.dedup();
        if !limited.is_empty() {
            let _ = writeln!(out, "\nports marked *:\n{}", limited.join("\n"));
        }
        let links: Vec<String> = self
            .guests
            .iter()
            .flat_map(|g| g.links.iter().map(move |l| format!("  {}: {l}", g.name)))
            .collect();
        if !links.is_empty() {
            let _ = writeln!(out, "\nlinks:\n{}", links.join("\n"));
        }
        let mut rows = vec![["IMAGE", "KIND", "BASE", "PAYLOAD", "USED BY"]
            .map(String::from)
            .to_vec()];
        for i in &self.images {
            let mut payload = i.payload.clone();
            payload.push("firstboot".into());
            rows.push(vec![
                i.name.clone(),
                i.kind.to_string(),
                i.base.clone(),
                payload.join(","),
                i.used_by.join(","),
            ]);
        }
        out.push('\n');
        out.push_str(&columns(&rows));
        out
    }
}

/// How `g`'s services reach other guests.
fn links(lab: &Lab, topo: &crate::resolve::Topology, g: &Guest) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(o) = &g.roles.object_store {
        let members = lab.object_store_members(g);
        // Said once, on the pool's first member.
        if o.pool.is_some() && members.first().is_some_and(|m| m.name == g.name) {
            let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
            let drives: u32 = members
                .iter()
                .filter_map(|m| m.roles.object_store.as_ref())
                .map(|o| o.drives_per_guest)
                .sum();
            v.push(format!(
                "object store pool `{}`: {} ({drives} drives)",
                o.pool.as_deref().unwrap_or_default(),
                names.join(", ")
            ));
        }
    }
    let spec = topo
        .guest(g.name.as_str())
        .expect("resolve covers every guest");
    if let Some(s) = &g.roles.spark {
        if let (Some(w), Some(url)) = (&s.worker, &spec.spark_master_url) {
            v.push(format!(
                "spark worker ({} cores, {}) -> {url} ({})",
                w.cores, w.memory, w.master
            ));
        }
        if let Some(m) = &spec.spark_master {
            let n = m.expect_workers;
            v.push(format!(
                "spark master with {n} worker{}",
                if n == 1 { "" } else { "s" }
            ));
        }
        if let (Some(s3), Some(link)) = (&s.s3, &spec.s3) {
            v.push(format!(
                "spark s3a -> {} ({}, as {})",
                link.endpoint, s3.object_store, link.access_key
            ));
        }
    }
    v
}

/// Left-aligned columns separated by two spaces.
fn columns(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = if i + 1 == r.len() { 0 } else { widths[i] }))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}
