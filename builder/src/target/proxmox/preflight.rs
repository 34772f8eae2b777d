//! Preflight: every problem that would make deploy fail half-way, found
//! before any change and reported together, each with what to change.

use std::collections::BTreeSet;

use super::cluster::Cluster;
use crate::model::lab::GuestKind;
use crate::resolve::Topology;

/// Privileges deploy needs on each guest's `/vms/{vmid}`.
pub const VM_PRIVS: &[&str] = &[
    "VM.Allocate",
    "VM.Audit",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.PowerMgmt",
    "VM.Snapshot",
];

/// Privileges deploy needs on each storage it uses (`/storage/{id}`).
pub const STORAGE_PRIVS: &[&str] = &[
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
];

/// The first PVE release whose storages take `import` content (qcow2 uploads
/// attached with `import-from`).
pub const IMPORT_SINCE: (u32, u32) = (8, 4);

/// Checks `cluster` against what the lab needs. Empty = go.
pub fn check(c: &Cluster, topo: &Topology, lab_tag_name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let has_vm = topo.guests.iter().any(|g| g.kind == GuestKind::Vm);
    let (maj, min) = c.version.major_minor();
    if has_vm && (maj, min) < IMPORT_SINCE {
        problems.push(format!(
            "Proxmox VE {} cannot import qcow2 disk images: uploading VM images as `import` content and attaching them with `import-from` needs PVE 8.4 or later. Upgrade the cluster (apt full-upgrade to 8.4+), or remove the VM guests from the lab",
            c.version.version
        ));
    }
    let used: BTreeSet<&str> = topo.guests.iter().map(|g| g.node.as_str()).collect();
    for n in &used {
        match c.nodes.get(*n) {
            None => problems.push(format!(
                "node {n} (proxmox.nodes) is not in the cluster; it has: {}",
                c.nodes.keys().cloned().collect::<Vec<_>>().join(", ")
            )),
            Some(false) => problems.push(format!("node {n} is offline")),
            Some(true) => {}
        }
    }
    // Bridges and storages, once per node.
    let mut seen = BTreeSet::new();
    for g in &topo.guests {
        let Some(v) = c.views.get(&g.node) else {
            continue;
        };
        if seen.insert((g.node.clone(), "bridge".to_string(), String::new()))
            && !v.bridges.contains(&topo.bridge)
        {
            problems.push(format!(
                "bridge {} (network.bridge) does not exist on node {}; it has: {} (create it under System > Network, or name an existing one)",
                topo.bridge,
                g.node,
                if v.bridges.is_empty() { "none".into() } else { v.bridges.iter().cloned().collect::<Vec<_>>().join(", ") }
            ));
        }
        let mut needs: Vec<(&str, &str, &str)> = Vec::new(); // (storage, content, field)
        match g.kind {
            GuestKind::Vm => {
                needs.push((&g.storage.images, "images", "images"));
                needs.push((&g.storage.iso, "iso", "iso"));
                if (maj, min) >= IMPORT_SINCE {
                    needs.push((&g.storage.import, "import", "import"));
                }
            }
            GuestKind::Lxc => {
                needs.push((&g.storage.images, "rootdir", "images"));
                needs.push((&g.storage.vztmpl, "vztmpl", "vztmpl"));
            }
        }
        for (sid, content, field) in needs {
            if !seen.insert((g.node.clone(), sid.to_string(), content.to_string())) {
                continue;
            }
            match v.storages.get(sid) {
                None => problems.push(format!(
                    "storage {sid} (proxmox.nodes[{}].storage.{field}) does not exist on node {} (or the token cannot see it: it needs Datastore.Audit on /storage/{sid}); it has: {}",
                    g.node, g.node,
                    v.storages.keys().cloned().collect::<Vec<_>>().join(", ")
                )),
                Some(s) if !s.enabled => problems.push(format!(
                    "storage {sid} on node {} is disabled: enable it with `pvesm set {sid} --disable 0`",
                    g.node
                )),
                Some(s) if !s.contents().contains(content) => {
                    let mut want = s.contents();
                    want.insert(content.to_string());
                    problems.push(format!(
                        "storage {sid} on node {} does not carry `{content}` content (it has: {}): add it with `pvesm set {sid} --content {}` (or Datacenter > Storage > {sid} > Content)",
                        g.node,
                        if s.content.is_empty() { "none" } else { &s.content },
                        want.into_iter().collect::<Vec<_>>().join(",")
                    ));
                }
                Some(s) if !s.active => problems.push(format!(
                    "storage {sid} on node {} is not active (not mounted or not reachable)",
                    g.node
                )),
                Some(_) => {}
            }
        }
    }
    // VMIDs: free or this lab's.
    for g in &topo.guests {
        if let Some(r) = c.guests.iter().find(|r| r.vmid == g.vmid) {
            if !r.is_ours(lab_tag_name) {
                problems.push(format!(
                    "vmid {} (guests.{}.vmid) is taken by {} {} on node {}, which is not this lab's: choose a free vmid, or remove that guest",
                    g.vmid,
                    g.name,
                    r.kind,
                    r.name.as_deref().unwrap_or("(unnamed)"),
                    r.node
                ));
            }
        }
    }
    // Privileges.
    let mut missing: Vec<String> = Vec::new();
    let mut require = |path: String, privs: &[&str]| {
        let lack: Vec<&str> = privs.iter().copied().filter(|p| !c.has(&path, p)).collect();
        if !lack.is_empty() {
            missing.push(format!("{} on {path}", lack.join(", ")));
        }
    };
    // Each guest's vmid, and the holder that keeps its data volume across upgrades.
    let vmids = topo.guests.iter().flat_map(|g| {
        std::iter::once(g.vmid).chain(g.data.as_ref().map(|_| super::volumes::holder_vmid(g.vmid)))
    });
    for vmid in vmids {
        require(format!("/vms/{vmid}"), VM_PRIVS);
    }
    let mut storages = BTreeSet::new();
    for g in &topo.guests {
        storages.insert(g.storage.images.clone());
        match g.kind {
            GuestKind::Vm => {
                storages.insert(g.storage.iso.clone());
                storages.insert(g.storage.import.clone());
            }
            GuestKind::Lxc => {
                storages.insert(g.storage.vztmpl.clone());
            }
        }
    }
    for s in storages {
        require(format!("/storage/{s}"), STORAGE_PRIVS);
    }
    if (maj, min) >= (8, 0) {
        require(
            format!("/sdn/zones/localnetwork/{}", topo.bridge),
            &["SDN.Use"],
        );
    }
    if !missing.is_empty() {
        problems.push(format!(
            "the API token lacks privileges deploy needs: {} (README: \"A token for imgbuild\" has the pveum commands)",
            missing.join("; ")
        ));
    }
    problems
}
