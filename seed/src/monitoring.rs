//! The `monitoring` role of the seed: Prometheus on this guest, scraping the
//! targets the builder derived from the lab (every guest's node exporter and
//! service metrics), with the lab's retention, scrape interval and alert
//! hold time. The agent renders prometheus.yml and the alert rules from it.
//! The scrape jobs, their metrics paths and role labels live here, so the
//! builder's target list, the agent's rendering and the services' own
//! readiness checks name the same paths.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::types::{AbsPath, Hostname, Port};

/// Prometheus' default port (web UI, API, its own metrics).
pub const PROMETHEUS_PORT: u16 = 9090;
/// Where the image installs Prometheus (payload `install.unpack: /opt/prometheus`).
pub const PROMETHEUS_HOME: &str = "/opt/prometheus";
/// The TSDB directory, the only place Prometheus writes.
pub const PROMETHEUS_DATA_DIR: &str = "/var/lib/prometheus";

/// The monitoring role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Monitoring {
    /// Prometheus' listen port (9090).
    #[serde(default = "default_port")]
    pub port: Port,
    /// The unpacked release (`prometheus`, `promtool`).
    #[serde(default = "default_home")]
    pub home: AbsPath,
    /// The TSDB (`--storage.tsdb.path`).
    #[serde(default = "default_data_dir")]
    pub data_dir: AbsPath,
    /// `--storage.tsdb.retention.time`.
    pub retention: PromDuration,
    /// How often every target is scraped and the rules evaluated.
    pub scrape_interval: PromDuration,
    /// How long a condition holds before its alert fires (`for:`).
    pub alert_for: PromDuration,
    /// The `lab` label on every target.
    pub lab: Hostname,
    /// What to scrape, in lab order.
    pub targets: Vec<ScrapeTarget>,
    /// Mount points whose file systems alert above 85% full: `/` and the
    /// lab's data directories.
    pub filesystems: Vec<AbsPath>,
    /// Spark masters by guest, with the number of workers the lab joins to
    /// each: fewer ALIVE is a lost worker.
    #[serde(default)]
    pub spark_masters: BTreeMap<Hostname, u32>,
    /// The object store's metrics bearer token, for targets with `bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_store_token: Option<BearerToken>,
}

fn default_port() -> Port {
    Port::of(PROMETHEUS_PORT)
}
fn default_home() -> AbsPath {
    AbsPath::new(PROMETHEUS_HOME).expect("built-in default path is valid")
}
fn default_data_dir() -> AbsPath {
    AbsPath::new(PROMETHEUS_DATA_DIR).expect("built-in default path is valid")
}

/// One endpoint to scrape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeTarget {
    pub job: Job,
    /// The guest's address.
    pub host: Ipv4Addr,
    pub port: Port,
    /// The guest's name (`guest` label).
    pub guest: Hostname,
    /// The guest's Proxmox id (`vmid` label).
    pub vmid: u32,
    /// Needs the object store's bearer token.
    #[serde(default)]
    pub bearer: bool,
}

/// A scrape job: what kind of exporter a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Job {
    /// The Prometheus node exporter.
    Node,
    /// MinIO's cluster metrics (v2).
    MinioCluster,
    /// MinIO's node metrics (v2).
    MinioNode,
    /// A Spark master's PrometheusServlet.
    SparkMaster,
    /// A Spark worker's PrometheusServlet.
    SparkWorker,
}

impl Job {
    /// Every job, in the order scrape configs are written.
    pub const ALL: [Job; 5] = [
        Job::Node,
        Job::MinioCluster,
        Job::MinioNode,
        Job::SparkMaster,
        Job::SparkWorker,
    ];

    /// The `job` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Job::Node => "node",
            Job::MinioCluster => "minio-cluster",
            Job::MinioNode => "minio-node",
            Job::SparkMaster => "spark-master",
            Job::SparkWorker => "spark-worker",
        }
    }

    /// The metrics path. Spark's with the slash: its Jetty redirects the
    /// bare path (302), which Prometheus does not follow.
    pub fn path(self) -> &'static str {
        match self {
            Job::Node => "/metrics",
            Job::MinioCluster => "/minio/v2/metrics/cluster",
            Job::MinioNode => "/minio/v2/metrics/node",
            Job::SparkMaster => "/metrics/master/prometheus/",
            Job::SparkWorker => "/metrics/prometheus/",
        }
    }

    /// The `role` label: the role the exporter belongs to.
    pub fn role(self) -> &'static str {
        match self {
            Job::Node => "node",
            Job::MinioCluster | Job::MinioNode => "object_store",
            Job::SparkMaster => "spark_master",
            Job::SparkWorker => "spark_worker",
        }
    }
}

/// A bearer token (MinIO's metrics JWT: base64url parts joined by `.`).
/// `Debug` prints `***`; the value is only reachable through [`BearerToken::expose`].
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct BearerToken(String);

impl BearerToken {
    /// 16 to 4096 of `A-Z a-z 0-9 - _ . ~ + / =`; the error never shows the value.
    pub fn new(s: impl Into<String>) -> Result<Self, crate::InvalidValue> {
        let s = s.into();
        let ok = (16..=4096).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~+/=".contains(&b));
        if !ok {
            return Err(crate::InvalidValue {
                what: "bearer token",
                shown: None,
                reason: "must be 16 to 4096 characters of A-Z a-z 0-9 - _ . ~ + / = (a JWT, e.g. from `mc admin prometheus generate`)".into(),
            });
        }
        Ok(BearerToken(s))
    }

    /// The token itself, for the root-only file Prometheus reads.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl<'de> Deserialize<'de> for BearerToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        BearerToken::new(s).map_err(serde::de::Error::custom)
    }
}

/// A Prometheus duration: one or more `<number><unit>` groups with units
/// `y w d h m s ms` in that order, each at most once (`15d`, `1h30m`, `500ms`).
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PromDuration(String);

impl PromDuration {
    /// Parses `s`; the error says what the format is.
    pub fn new(s: &str) -> Result<Self, String> {
        Self::millis_of(s).map(|_| PromDuration(s.to_string()))
    }

    /// The length in milliseconds.
    pub fn millis(&self) -> u64 {
        Self::millis_of(&self.0).expect("validated at construction")
    }

    /// As written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn millis_of(s: &str) -> Result<u64, String> {
        const UNITS: [(&str, u64); 7] = [
            ("y", 365 * 86_400_000),
            ("w", 7 * 86_400_000),
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
            ("ms", 1),
        ];
        let bad = || {
            format!(
                "`{s}` is not a Prometheus duration: a number and a unit (ms, s, m, h, d, w, y), e.g. 15s, 15d or 1h30m"
            )
        };
        if s.is_empty() || s.len() > 32 {
            return Err(bad());
        }
        let mut rest = s;
        let mut total: u64 = 0;
        let mut next_unit = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 12 {
                return Err(bad());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit = &rest[..letters];
            rest = &rest[letters..];
            let i = UNITS[next_unit..]
                .iter()
                .position(|(u, _)| *u == unit)
                .ok_or_else(bad)?
                + next_unit;
            next_unit = i + 1;
            total = n
                .checked_mul(UNITS[i].1)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(bad)?;
        }
        Ok(total)
    }
}

impl fmt::Debug for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for PromDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for PromDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        PromDuration::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (s, ms) in [
            ("15d", 15 * 86_400_000),
            ("1h30m", 5_400_000),
            ("500ms", 500),
            ("2s", 2000),
            ("1y2w", 365 * 86_400_000 + 14 * 86_400_000),
            ("0s", 0),
        ] {
            assert_eq!(PromDuration::new(s).unwrap().millis(), ms, "{s}");
        }
        for bad in [
            "",
            "15",
            "d",
            "15 d",
            "1m1h",
            "1s1s",
            "1.5h",
            "-1s",
            "15D",
            "1sm",
            "99999999999999d",
        ] {
            assert!(PromDuration::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn jobs_name_paths_and_roles() {
        assert_eq!(Job::SparkMaster.path(), "/metrics/master/prometheus/");
        assert_eq!(Job::MinioNode.role(), "object_store");
        for j in Job::ALL {
            assert_eq!(
                serde_yaml::to_string(&j).unwrap(),
                format!("{}\n", j.as_str())
            );
        }
    }
}
