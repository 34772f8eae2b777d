//! The `monitoring` role of a guest: Prometheus scraping every guest's
//! exporters (see [`crate::scrape`]) with alert rules, a retention and a
//! scrape interval the lab sets. A monitoring guest's address is added to
//! `metrics.allow` (see [`monitor_addresses`]), so the other guests' firewalls
//! open their metrics ports to it.
//!
//! ```yaml
//! roles:
//!   monitoring:
//!     port: 9090              # Prometheus (web UI and API), default 9090
//!     retention: 15d          # --storage.tsdb.retention.time, at least 2h (default 15d)
//!     scrape_interval: 15s    # every target, and rule evaluation (1s..5m, default 15s)
//!     alert_for: 5m           # how long a condition holds before it fires (default 5m)
//! ```

use imgbuild_seed::monitoring::{PromDuration, PROMETHEUS_PORT};

use super::lab::{Guest, Lab};
use super::types::Port;
use super::yaml::{Ctx, Field};

/// The monitoring role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitoring {
    /// Prometheus' port (web UI, API).
    pub port: Port,
    pub retention: PromDuration,
    pub scrape_interval: PromDuration,
    pub alert_for: PromDuration,
}

const HOUR_MS: u64 = 3_600_000;

/// Parses `roles.monitoring` (`monitoring: {}` or a bare `monitoring:` takes
/// every default).
pub(crate) fn parse(ctx: &mut Ctx, f: Option<Field<'_>>) -> Option<Monitoring> {
    let dur = |s: &str| PromDuration::new(s).expect("built-in default is valid");
    let mut out = Monitoring {
        port: Port::of(PROMETHEUS_PORT),
        retention: dur("15d"),
        scrape_interval: dur("15s"),
        alert_for: dur("5m"),
    };
    let Some(f) = f else { return Some(out) };
    let m = ctx.map(f, &["port", "retention", "scrape_interval", "alert_for"])?;
    let port = match m.opt("port") {
        Some(f) => ctx.scalar(&f, str::parse),
        None => Some(out.port),
    };
    let mut ranged = |key: &str, lo: u64, hi: u64, what: &str| -> Option<Option<PromDuration>> {
        let Some(f) = m.opt(key) else {
            return Some(None);
        };
        ctx.scalar(&f, |s| {
            let d = PromDuration::new(s)?;
            if d.millis() < lo || d.millis() > hi {
                return Err(format!("`{s}`: {what}"));
            }
            Ok(d)
        })
        .map(Some)
    };
    let retention = ranged(
        "retention",
        2 * HOUR_MS,
        100 * 365 * 24 * HOUR_MS,
        "keep at least 2h (one TSDB block), e.g. 15d",
    );
    let scrape_interval = ranged(
        "scrape_interval",
        1_000,
        300_000,
        "scrape between every 1s and every 5m (Prometheus marks series stale after 5m), e.g. 15s",
    );
    let alert_for = ranged(
        "alert_for",
        0,
        24 * HOUR_MS,
        "hold an alert at most 24h before it fires, e.g. 5m",
    );
    out.port = port?;
    if let Some(d) = retention? {
        out.retention = d;
    }
    if let Some(d) = scrape_interval? {
        out.scrape_interval = d;
    }
    if let Some(d) = alert_for? {
        out.alert_for = d;
    }
    Some(out)
}

/// The addresses of the lab's monitoring guests, in file order.
pub fn monitor_addresses(guests: &[Guest]) -> Vec<std::net::Ipv4Addr> {
    guests
        .iter()
        .filter(|g| g.roles.monitoring.is_some())
        .map(|g| g.address)
        .collect()
}

/// Rules across the lab: a monitoring guest needs the exporters of
/// `metrics:` and, with MinIO's bearer auth, the token to send.
pub(crate) fn check(lab: &Lab, ctx: &mut Ctx) {
    let monitors: Vec<&Guest> = lab
        .guests
        .iter()
        .filter(|g| g.roles.monitoring.is_some())
        .collect();
    let Some(first) = monitors.first() else {
        return;
    };
    let Some(m) = &lab.metrics else {
        ctx.err(
            &format!("guests.{}.roles.monitoring", first.name),
            "the monitoring role scrapes every guest's node exporter: add a lab `metrics:` section (e.g. `metrics: {port: 9100}`)",
        );
        return;
    };
    let stores = lab.guests.iter().any(|g| g.roles.object_store.is_some());
    if stores && matches!(m.object_store, super::metrics::ObjectStoreAuth::Bearer) {
        ctx.err(
            "metrics.object_store",
            format!(
                "guest `{}` (monitoring) scrapes the object store's metrics, which need MinIO's bearer token: give `object_store: {{auth: bearer, token: env:MINIO_PROMETHEUS_TOKEN}}` or `{{auth: public}}`",
                first.name
            ),
        );
    }
}
