//! The lab's `metrics:` section: every guest runs the Prometheus node
//! exporter (baked into the images) on `port`, reachable only from the
//! monitoring addresses in `allow` (host addresses, never a subnet).
//!
//! ```yaml
//! metrics:
//!   port: 9100                 # node exporter, default 9100
//!   allow: [192.168.1.50]      # who may scrape: the monitoring host(s)
//! ```

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use imgbuild_seed::metrics::NODE_EXPORTER_PORT;

use super::types::{parse_ipv4, Ipv4Cidr, Port};
use super::yaml::{Ctx, Field};

/// Metrics on every guest of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metrics {
    /// The node exporter's port.
    pub port: Port,
    /// The only sources that may reach metrics ports, in file order.
    pub allow: Vec<Ipv4Addr>,
}

/// Parses the `metrics:` mapping, reporting every problem with its location.
pub(crate) fn parse(ctx: &mut Ctx, f: Field<'_>) -> Option<Metrics> {
    let m = ctx.map(f, &["port", "allow"])?;
    let port = match m.opt("port") {
        Some(f) => ctx.scalar(&f, str::parse),
        None => Some(Port::of(NODE_EXPORTER_PORT)),
    };
    let allow = m
        .req(
            ctx,
            "allow",
            "the monitoring addresses that may scrape metrics, e.g. [192.168.1.50]",
        )
        .and_then(|f| {
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
        });
    Some(Metrics {
        port: port?,
        allow: allow?,
    })
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

/// Checks that need the network: no allowed address may be the lab
/// subnet's network or broadcast address.
pub(crate) fn check(m: &Metrics, net: Ipv4Cidr, ctx: &mut Ctx) {
    for (i, a) in m.allow.iter().enumerate() {
        if net.contains(*a) && !net.is_host(*a) {
            ctx.err(
                &format!("metrics.allow[{i}]"),
                format!("{a} is the network or broadcast address of {net}: give a host address"),
            );
        }
    }
}
