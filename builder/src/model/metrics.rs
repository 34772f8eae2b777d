//! The lab's `metrics:` section: every guest runs the Prometheus node
//! exporter (baked into the images) on `port`, reachable only from the
//! monitoring addresses in `allow` (host addresses, never a subnet) and from
//! the lab's guests with the `monitoring` role (added to `allow` at load).
//!
//! ```yaml
//! metrics:
//!   port: 9100                 # node exporter, default 9100
//!   allow: [192.168.1.50]      # who else may scrape (optional with a monitoring guest)
//!   object_store:              # MinIO's /minio/v2/metrics/{cluster,node} (on its API port)
//!     auth: bearer             # bearer (MinIO's default JWT) | public (anyone on the lab network)
//!     token: env:MINIO_PROMETHEUS_TOKEN   # bearer: `mc admin prometheus generate`'s JWT, for scrapers
//! ```

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use imgbuild_seed::metrics::NODE_EXPORTER_PORT;

use super::types::{parse_ipv4, Ipv4Cidr, Port, SecretRef};
use super::yaml::{Ctx, Field};

/// Metrics on every guest of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    /// The node exporter's port.
    pub port: Port,
    /// The only sources that may reach metrics ports: `allow` in file
    /// order, then the monitoring guests' addresses not listed there.
    pub allow: Vec<Ipv4Addr>,
    /// How the object store's metrics are read.
    pub object_store: ObjectStoreAuth,
}

/// The object store's metrics auth (`MINIO_PROMETHEUS_AUTH_TYPE`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ObjectStoreAuth {
    /// A bearer JWT (MinIO's default); the token, when the lab gives it, is
    /// for scrapers (inventory, the monitoring guest).
    #[default]
    Bearer,
    /// Bearer, with the token by reference.
    BearerToken(SecretRef),
    /// Anyone who reaches the API port.
    Public,
}

/// Parses the `metrics:` mapping, reporting every problem with its location.
pub(crate) fn parse(ctx: &mut Ctx, f: Field<'_>) -> Option<Metrics> {
    let m = ctx.map(f, &["port", "allow", "object_store"])?;
    let base = ctx_base(ctx);
    let object_store = match m.opt("object_store") {
        None => Some(ObjectStoreAuth::default()),
        Some(f) => object_store(ctx, f, &base),
    };
    let port = match m.opt("port") {
        Some(f) => ctx.scalar(&f, str::parse),
        None => Some(Port::of(NODE_EXPORTER_PORT)),
    };
    // Absent is fine when a guest has the monitoring role (checked in `check`).
    let allow = match m.opt("allow") {
        None => Some(Vec::new()),
        Some(f) => {
            let items = ctx.seq(&f)?;
            if items.is_empty() {
                ctx.err(
                    &f.path,
                    "list at least one monitoring address, e.g. [192.168.1.50] (metrics ports are never open to everyone)",
                );
                return None;
            }
            let mut seen = BTreeSet::new();
            let mut out = Vec::new();
            let mut ok = true;
            for i in &items {
                match ctx.scalar(i, parse_allow) {
                    Some(a) if !seen.insert(a) => {
                        ctx.err(&i.path, format!("{a} is listed twice"));
                        ok = false;
                    }
                    Some(a) => out.push(a),
                    None => ok = false,
                }
            }
            ok.then_some(out)
        }
    };
    Some(Metrics {
        port: port?,
        allow: allow?,
        object_store: object_store?,
    })
}

fn ctx_base(ctx: &Ctx) -> std::path::PathBuf {
    ctx.file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."))
        .to_path_buf()
}

fn object_store(ctx: &mut Ctx, f: Field<'_>, base: &std::path::Path) -> Option<ObjectStoreAuth> {
    let path = f.path.clone();
    let m = ctx.map(f, &["auth", "token"])?;
    let public = m
        .req(ctx, "auth", "`bearer` (MinIO's default) or `public`")
        .and_then(|f| {
            ctx.scalar(&f, |s| match s {
                "bearer" => Ok(false),
                "public" => Ok(true),
                _ => Err(format!(
                    "`{s}` is not an object-store metrics auth: expected `bearer` or `public`"
                )),
            })
        })?;
    let token = match m.opt("token") {
        Some(f) => Some(super::lab_parse::secret(ctx, &f, base)?),
        None => None,
    };
    match (public, token) {
        (true, Some(_)) => {
            ctx.err(
                &format!("{path}.token"),
                "a token only goes with `auth: bearer` (public metrics need none): remove it",
            );
            None
        }
        (true, None) => Some(ObjectStoreAuth::Public),
        (false, Some(t)) => Some(ObjectStoreAuth::BearerToken(t)),
        (false, None) => Some(ObjectStoreAuth::Bearer),
    }
}

fn parse_allow(s: &str) -> Result<Ipv4Addr, String> {
    if s.contains('/') {
        return Err(format!(
            "`{s}`: list single monitoring host addresses, not a subnet (metrics are never open to a whole network)"
        ));
    }
    let a = parse_ipv4(s)?;
    if a.is_unspecified() || a.is_broadcast() || a.is_multicast() || a.is_loopback() {
        return Err(format!(
            "`{s}` is not a host that can scrape a guest: give the monitoring host's address"
        ));
    }
    Ok(a)
}

/// Adds the monitoring guests' addresses to `allow` (those not listed yet).
pub(crate) fn add_monitors(m: &mut Metrics, monitors: &[Ipv4Addr]) {
    for a in monitors {
        if !m.allow.contains(a) {
            m.allow.push(*a);
        }
    }
}

/// Checks that need the network: someone may scrape, and no address
/// `allow` lists is the lab subnet's network or broadcast address (the
/// monitoring guests' addresses are checked as guest addresses).
pub(crate) fn check(m: &Metrics, monitors: &[Ipv4Addr], net: Ipv4Cidr, ctx: &mut Ctx) {
    if m.allow.is_empty() {
        ctx.err(
            "metrics.allow",
            "missing field `allow`: expected the monitoring addresses that may scrape metrics, e.g. [192.168.1.50], or a guest with the `monitoring` role",
        );
    }
    for (i, a) in m.allow.iter().enumerate() {
        if net.contains(*a) && !net.is_host(*a) && !monitors.contains(a) {
            ctx.err(
                &format!("metrics.allow[{i}]"),
                format!("{a} is the network or broadcast address of {net}: give a host address"),
            );
        }
    }
}
