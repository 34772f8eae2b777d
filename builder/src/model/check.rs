//! Semantic checks on a converted lab: rules that span several fields or
//! guests (uniqueness, subnets, limits, ports, references, cluster shapes),
//! and the lab-against-recipes checks. Each problem is reported at the field
//! that has to change.

use std::collections::{BTreeMap, HashMap};

use super::lab::{Guest, GuestKind, Lab};
use super::lab_parse::quoted;
use super::recipe::{ImageKind, Install, Recipe};
use super::types::{SecretRef, Size};
use super::yaml::{self, Ctx};

/// Smallest memory Proxmox accepts (`memory` minimum 16, in MiB).
pub const MIN_MEMORY: u64 = 16 * Size::MIB;
/// Smallest disk we accept; Proxmox allocates disks in whole GiB.
pub const MIN_DISK: u64 = Size::GIB;
/// MinIO erasure coding needs at least this many drives in a distributed/multi-drive setup.
pub const MIN_ERASURE_DRIVES: u32 = 4;

fn gpath(g: &Guest, rest: &str) -> String {
    format!("guests.{}.{rest}", g.name)
}

/// Every rule that needs only the lab itself.
pub(crate) fn lab(lab: &Lab, ctx: &mut Ctx) {
    let net = lab.network.cidr;
    if let Some(m) = &lab.metrics {
        let monitors = super::monitoring::monitor_addresses(&lab.guests);
        super::metrics::check(m, &monitors, net, ctx);
    }
    if !net.is_host(lab.network.gateway) {
        ctx.err(
            "network.gateway",
            format!(
                "gateway {} is not a host address inside {net}",
                lab.network.gateway
            ),
        );
    }
    let mut vmids: HashMap<u32, &Guest> = HashMap::new();
    let mut addrs: HashMap<std::net::Ipv4Addr, &Guest> = HashMap::new();
    for g in &lab.guests {
        if let Some(first) = vmids.insert(g.vmid.get(), g) {
            ctx.err(
                &gpath(g, "vmid"),
                format!("vmid {} is already used by guest `{}`", g.vmid, first.name),
            );
            vmids.insert(first.vmid.get(), first);
        }
        let a = g.address;
        if !net.contains(a) {
            ctx.err(
                &gpath(g, "address"),
                format!("{a} is outside the lab's network {net}"),
            );
        } else if !net.is_host(a) {
            ctx.err(
                &gpath(g, "address"),
                format!("{a} is the network or broadcast address of {net}: pick a host address"),
            );
        } else if a == lab.network.gateway {
            ctx.err(
                &gpath(g, "address"),
                format!("{a} is the gateway's address"),
            );
        } else if let Some(first) = addrs.insert(a, g) {
            ctx.err(
                &gpath(g, "address"),
                format!("{a} is already the address of guest `{}`", first.name),
            );
            addrs.insert(a, first);
        }
        resources(g, ctx);
        ports(g, ctx);
        spark(lab, g, ctx);
    }
    object_store_pools(lab, ctx);
    spark_s3_users(lab, ctx);
    super::paths::check(lab, ctx);
    super::monitoring::check(lab, ctx);
}

fn resources(g: &Guest, ctx: &mut Ctx) {
    let r = &g.resources;
    if r.memory.bytes() < MIN_MEMORY {
        ctx.err(
            &gpath(g, "resources.memory"),
            format!("{} is below Proxmox's minimum of 16MiB", r.memory),
        );
    } else if r.memory.bytes() % Size::MIB != 0 {
        ctx.err(
            &gpath(g, "resources.memory"),
            format!("{}: Proxmox sets memory in whole MiB", r.memory),
        );
    }
    if r.disk.bytes() < MIN_DISK {
        ctx.err(
            &gpath(g, "resources.disk"),
            format!("{} is below the minimum disk of 1GiB", r.disk),
        );
    } else if r.disk.bytes() % Size::GIB != 0 {
        ctx.err(
            &gpath(g, "resources.disk"),
            format!("{}: Proxmox sizes disks in whole GiB", r.disk),
        );
    }
}

fn ports(g: &Guest, ctx: &mut Ctx) {
    let mut seen: BTreeMap<u16, &str> = BTreeMap::new();
    for p in g.open_ports() {
        if let Some(first) = seen.get(&p.port.get()) {
            let what = if *first == "ssh" {
                "ssh".to_string()
            } else {
                format!("`{first}`")
            };
            // The metrics port is lab-wide: report it there, naming the guest.
            let (path, on) = if p.field.starts_with("metrics.") {
                (p.field.to_string(), format!("guest `{}`", g.name))
            } else {
                (gpath(g, p.field), "this guest".to_string())
            };
            ctx.err(
                &path,
                format!(
                    "port {} is already used by {what} on {on}: pick another port",
                    p.port
                ),
            );
        } else {
            seen.insert(p.port.get(), p.field);
        }
    }
}

fn spark(lab: &Lab, g: &Guest, ctx: &mut Ctx) {
    let Some(s) = &g.roles.spark else { return };
    let names: Vec<&str> = lab.guests.iter().map(|g| g.name.as_str()).collect();
    if let Some(w) = &s.worker {
        let path = gpath(g, "roles.spark.worker.master");
        match lab.guest(w.master.as_str()) {
            None => ctx.err(&path, unknown_guest(w.master.as_str(), &names)),
            Some(m) if m.roles.spark.as_ref().and_then(|s| s.master.as_ref()).is_none() => ctx.err(
                &path,
                format!("guest `{}` runs no Spark master: add `roles.spark.master` there or point at the guest that has one", m.name),
            ),
            Some(_) => {}
        }
        if w.cores > g.resources.cores {
            ctx.err(
                &gpath(g, "roles.spark.worker.cores"),
                format!(
                    "the worker offers {} cores but the guest has {}",
                    w.cores, g.resources.cores
                ),
            );
        }
        if w.memory >= g.resources.memory {
            ctx.err(
                &gpath(g, "roles.spark.worker.memory"),
                format!(
                    "the worker offers {} but the guest has only {}: leave room for the system",
                    w.memory, g.resources.memory
                ),
            );
        }
    }
    if let Some(s3) = &s.s3 {
        let path = gpath(g, "roles.spark.s3.object_store");
        match lab.guest(s3.object_store.as_str()) {
            None => ctx.err(&path, unknown_guest(s3.object_store.as_str(), &names)),
            Some(t) => match &t.roles.object_store {
                None => ctx.err(
                    &path,
                    format!("guest `{}` has no object_store role", t.name),
                ),
                Some(os) => {
                    if os.buckets.is_empty() {
                        ctx.err(
                            &path,
                            format!("guest `{}` declares no buckets: Spark's S3 user may use only the object store's `buckets`; list them there", t.name),
                        );
                    }
                    // The root credentials never leave the object-store guest.
                    for (field, mine, root, what) in [
                        ("access_key", &s3.access_key, &os.root_user, "root_user"),
                        (
                            "secret_key",
                            &s3.secret_key,
                            &os.root_password,
                            "root_password",
                        ),
                    ] {
                        if mine == root {
                            ctx.err(
                                &gpath(g, &format!("roles.spark.s3.{field}")),
                                format!(
                                    "`{mine}` is the object store's {what}: Spark gets its own S3 user, which `{}` creates with access to its buckets only; name other credentials, e.g. `env:SPARK_S3_{}`",
                                    t.name,
                                    field.to_ascii_uppercase()
                                ),
                            );
                        }
                    }
                }
            },
        }
    }
    spark_auth(lab, g, s, ctx);
}

/// `auth_secret`: required where a master runs; a worker-only guest uses
/// its master's and may only repeat it.
fn spark_auth(lab: &Lab, g: &Guest, s: &super::lab::Spark, ctx: &mut Ctx) {
    if s.master.is_some() {
        if s.auth_secret.is_none() {
            ctx.err(
                &gpath(g, "roles.spark"),
                "missing field `auth_secret`: expected the Spark cluster's shared secret (`spark.authenticate.secret`: master, workers and every client that submits jobs need it), a secret reference such as `env:SPARK_AUTH_SECRET`",
            );
        }
        return;
    }
    let master_secret = s
        .worker
        .as_ref()
        .and_then(|w| lab.guest(w.master.as_str()))
        .and_then(|m| Some((m, m.roles.spark.as_ref()?.auth_secret.as_ref()?)));
    if let (Some(mine), Some((m, theirs))) = (&s.auth_secret, master_secret) {
        if mine != theirs {
            ctx.err(
                &gpath(g, "roles.spark.auth_secret"),
                format!(
                    "`{mine}` differs from the secret of this worker's master `{}` (`{theirs}`): a worker uses its master's secret; repeat that reference or leave `auth_secret` out",
                    m.name
                ),
            );
        }
    }
}

/// One S3 user per access key: guests naming the same `access_key` must
/// name the same `secret_key`.
fn spark_s3_users(lab: &Lab, ctx: &mut Ctx) {
    let mut seen: BTreeMap<String, (&Guest, &SecretRef)> = BTreeMap::new();
    for g in &lab.guests {
        let Some(s3) = g.roles.spark.as_ref().and_then(|s| s.s3.as_ref()) else {
            continue;
        };
        match seen.get(&s3.access_key.to_string()) {
            Some((first, secret)) if *secret != &s3.secret_key => ctx.err(
                &gpath(g, "roles.spark.s3.secret_key"),
                format!(
                    "`{}` differs from the secret_key guest `{}` gives for the same access_key `{}`: one S3 user has one secret",
                    s3.secret_key, first.name, s3.access_key
                ),
            ),
            Some(_) => {}
            None => {
                seen.insert(s3.access_key.to_string(), (g, &s3.secret_key));
            }
        }
    }
}

fn unknown_guest(name: &str, names: &[&str]) -> String {
    let mut msg = format!("no guest is named `{name}`");
    match yaml::suggest(name, names) {
        Some(s) => msg.push_str(&format!(": did you mean `{s}`?")),
        None => msg.push_str(&format!(": guests are {}", quoted(names))),
    }
    msg
}

fn object_store_pools(lab: &Lab, ctx: &mut Ctx) {
    let mut pools: BTreeMap<&str, Vec<&Guest>> = BTreeMap::new();
    for g in &lab.guests {
        let Some(o) = &g.roles.object_store else {
            continue;
        };
        match &o.pool {
            Some(p) => pools.entry(p.as_str()).or_default().push(g),
            None if o.drives_per_guest > 1 && o.drives_per_guest < MIN_ERASURE_DRIVES => ctx.err(
                &gpath(g, "roles.object_store.drives_per_guest"),
                format!(
                    "{} drives: a multi-drive object store needs at least {MIN_ERASURE_DRIVES} drives for erasure coding (or use 1)",
                    o.drives_per_guest
                ),
            ),
            None => {}
        }
    }
    for (pool, members) in pools {
        let first = members[0];
        let f = first
            .roles
            .object_store
            .as_ref()
            .expect("pool members have the role");
        let total: u32 = members
            .iter()
            .filter_map(|g| g.roles.object_store.as_ref())
            .map(|o| o.drives_per_guest)
            .sum();
        if (members.len() > 1 || f.drives_per_guest > 1) && total < MIN_ERASURE_DRIVES {
            ctx.err(
                &gpath(first, "roles.object_store.pool"),
                format!(
                    "pool `{pool}` has {total} drive{} ({} guest{} x drives_per_guest): distributed MinIO needs at least {MIN_ERASURE_DRIVES}",
                    if total == 1 { "" } else { "s" },
                    members.len(),
                    if members.len() == 1 { "" } else { "s" },
                ),
            );
        }
        for g in &members[1..] {
            let o = g
                .roles
                .object_store
                .as_ref()
                .expect("pool members have the role");
            let mut differ = |field: &str, same: bool| {
                if !same {
                    ctx.err(
                        &gpath(g, &format!("roles.object_store.{field}")),
                        format!(
                            "every guest in pool `{pool}` must have the same {field} as `{}`",
                            first.name
                        ),
                    );
                }
            };
            differ("flavor", o.flavor == f.flavor);
            differ("drives_per_guest", o.drives_per_guest == f.drives_per_guest);
            differ("api_port", o.api_port == f.api_port);
            differ("data_dir", o.data_dir == f.data_dir);
            differ("root_user", o.root_user == f.root_user);
            differ("root_password", o.root_password == f.root_password);
        }
        if members.len() > 1 {
            pool_names(pool, &members, ctx);
        }
    }
}

/// Reports pool member names MinIO cannot expand ([`super::lab::pool_expansion`]).
fn pool_names(pool: &str, members: &[&Guest], ctx: &mut Ctx) {
    let names: Vec<&str> = members.iter().map(|g| g.name.as_str()).collect();
    match super::lab::pool_expansion(&names) {
        Ok(_) => {}
        Err(super::lab::PoolNameError::Name { name, prefix }) => ctx.err(
            &format!("guests.{name}"),
            format!(
                "guests in pool `{pool}` need names `<prefix><number>` with one prefix (like {prefix}1, {prefix}2, ...) so MinIO can address them as {prefix}{{1...{}}}",
                members.len()
            ),
        ),
        Err(super::lab::PoolNameError::NotConsecutive { prefix }) => {
            let g = members.last().expect("pool has members");
            ctx.err(
                &format!("guests.{}", g.name),
                format!("guests in pool `{pool}` must be numbered consecutively (MinIO expands {prefix}{{N...M}})"),
            );
        }
    }
}

/// Lab guests against the loaded recipes: the image exists, has the guest's
/// kind, and installs what the guest's roles run.
pub(crate) fn images(lab: &Lab, recipes: &[Recipe], ctx: &mut Ctx) {
    let names: Vec<&str> = recipes.iter().map(|r| r.name.as_str()).collect();
    for g in &lab.guests {
        let path = gpath(g, "image");
        let Some(r) = recipes.iter().find(|r| r.name == g.image) else {
            let mut msg = format!("no recipe is named `{}` in the images directory", g.image);
            match yaml::suggest(&g.image, &names) {
                Some(s) => msg.push_str(&format!(": did you mean `{s}`?")),
                None if names.is_empty() => msg.push_str(": it holds no recipes"),
                None => msg.push_str(&format!(": recipes are {}", quoted(&names))),
            }
            ctx.err(&path, msg);
            continue;
        };
        let want = match g.kind {
            GuestKind::Vm => ImageKind::Vm,
            GuestKind::Lxc => ImageKind::Lxc,
        };
        if r.kind != want {
            ctx.err(
                &path,
                format!(
                    "image `{}` is a {} image but the guest is kind `{}`",
                    r.name,
                    r.kind.as_str(),
                    g.kind.as_str()
                ),
            );
            continue;
        }
        let installs = |p: &str| {
            r.payload.iter().any(|i| match &i.install {
                Install::File { path, .. } => path == p,
                Install::Unpack { to, .. } => to == p,
            })
        };
        let mut need = Vec::new();
        if let Some(o) = &g.roles.object_store {
            need.push(("object_store", o.flavor.binary_path()));
        }
        if g.roles.spark.is_some() {
            need.push(("spark", "/opt/spark"));
            need.push(("spark", "/opt/java"));
        }
        if g.roles.monitoring.is_some() {
            need.push(("monitoring", imgbuild_seed::monitoring::PROMETHEUS_HOME));
        }
        for (role, p) in need {
            if !installs(p) {
                ctx.err(
                    &path,
                    format!(
                        "role {role} needs {p} but image `{}` installs nothing there",
                        r.name
                    ),
                );
            }
        }
    }
}
