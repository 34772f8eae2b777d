//! The seed contract: the versioned, validated document the builder writes
//! for every guest and the `firstboot` agent applies, plus what else both
//! sides must agree on (where the seed and the agent live in a guest, the
//! agent's unit, the status report, the role defaults, the cidata reader).
//! Its own small crate so the builder never compiles the agent's D-Bus stack.
//!
//! Every field is validated while deserializing (newtypes in [`types`] plus a
//! few cross-field checks via `try_from`), so a [`Seed`] value is always valid.
//! [`Seed::to_yaml`] is the canonical form: struct fields in declaration order,
//! maps sorted, defaults filled in. [`Seed::instance_id`] is the lowercase hex
//! SHA-256 of exactly the UTF-8 bytes of `to_yaml()`, so for a seed file the
//! builder wrote with `to_yaml()`, `sha256sum seed.yaml` prints the instance id.

mod canonical;
pub mod defaults;
pub mod iso9660;
pub mod metrics;
pub mod monitoring;
mod parse;
pub mod paths;
pub mod status;
pub mod types;
pub mod updates;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

pub use types::{
    AbsPath, AccessKey, BucketName, Comment, Hostname, HttpUrl, InvalidValue, Memory, PolicyName,
    Port, Secret, SingleLine, SparkUrl, SshPublicKey, Timezone, VolumeExpr,
};

/// Where the agent binary lives in every guest.
pub const AGENT_PATH: &str = "/usr/local/sbin/firstboot";
/// The agent's systemd unit name.
pub const UNIT_NAME: &str = "imgbuild-firstboot.service";
/// The text of `/etc/systemd/system/imgbuild-firstboot.service`, baked verbatim.
pub const UNIT_FILE: &str = include_str!("../unit/imgbuild-firstboot.service");
/// The unit's `TimeoutStartSec`: the agent plans its own deadlines inside it.
pub const UNIT_TIMEOUT_START: std::time::Duration = std::time::Duration::from_secs(15 * 60);
/// Where the builder puts a per-guest seed (mode 0600 root:root).
pub const SEED_PATH: &str = "/etc/imgbuild/seed.yaml";
/// Path of the seed inside the NoCloud `cidata` volume.
pub const CIDATA_SEED_PATH: &str = "imgbuild/seed.yaml";

/// The only seed version this agent understands.
pub const SEED_VERSION: u32 = 1;

/// The largest seed document accepted, in bytes (a real one is a few KiB).
pub const MAX_SEED_BYTES: usize = 64 * 1024;
/// The deepest nesting of maps and lists accepted (a real seed has 5).
pub const MAX_SEED_DEPTH: usize = 16;
/// The widest indentation accepted, in columns (bounds block nesting before
/// the parser sees the text).
pub const MAX_SEED_INDENT: usize = 64;
/// The longest host name a guest may have: the kernel's HOST_NAME_MAX.
pub const MAX_HOST_NAME: usize = 64;

/// A seed document that failed to parse or validate. The message names the
/// field path; [`SeedError::location`] gives the place. It never quotes a
/// secret (the seed's secret types do not put their value in errors).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SeedError {
    message: String,
    location: Option<(usize, usize)>,
}

impl SeedError {
    fn new(message: impl Into<String>, location: Option<(usize, usize)>) -> Self {
        SeedError {
            message: message.into(),
            location,
        }
    }

    /// 1-based line and column of the error in the input, when known.
    pub fn location(&self) -> Option<(usize, usize)> {
        self.location
    }
}

/// The document version; only [`SEED_VERSION`] deserializes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Version(u32);

impl Default for Version {
    fn default() -> Self {
        Version(SEED_VERSION)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = types::deserialize_ranged(d, "seed version", 0, u64::from(u32::MAX))?;
        if v != u64::from(SEED_VERSION) {
            return Err(serde::de::Error::custom(format!(
                "version: unsupported seed version {v}: this agent understands version {SEED_VERSION}"
            )));
        }
        Ok(Version(SEED_VERSION))
    }
}

/// One guest's whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    /// Always 1.
    pub version: Version,
    /// The guest's static host name (at most [`MAX_HOST_NAME`] characters).
    #[serde(deserialize_with = "own_host_name")]
    pub hostname: Hostname,
    /// IANA zone, default `Etc/UTC`.
    #[serde(default)]
    pub timezone: Timezone,
    /// Root's SSH access (key-only).
    #[serde(default)]
    pub ssh: Ssh,
    /// Ports opened to the network besides SSH 22 (which the agent always adds).
    #[serde(default)]
    pub firewall: Firewall,
    /// Other guests by name; written to /etc/hosts so services can find each other.
    #[serde(default)]
    pub peers: BTreeMap<Hostname, Ipv4Addr>,
    /// The services this guest runs.
    #[serde(default)]
    pub roles: Roles,
    /// Unattended security updates (the common role); the defaults are
    /// left out of the canonical form.
    #[serde(default, skip_serializing_if = "updates::Updates::is_default")]
    pub updates: updates::Updates,
}

fn own_host_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Hostname, D::Error> {
    let h = Hostname::deserialize(d)?;
    if h.as_str().len() > MAX_HOST_NAME {
        return Err(serde::de::Error::custom(format!(
            "invalid hostname {:?}: a host name is at most {MAX_HOST_NAME} characters (the kernel's limit); use a short name and list longer ones as peers",
            h.as_str()
        )));
    }
    Ok(h)
}

/// SSH settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ssh {
    /// Lines for root's authorized_keys.
    #[serde(default)]
    pub authorized_keys: Vec<SshPublicKey>,
}

/// The guest's firewall (nftables, input policy drop).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "FirewallRaw")]
pub struct Firewall {
    /// Ports to accept, exactly as the builder computed the guest's port matrix.
    #[serde(default)]
    pub open: Vec<OpenPort>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FirewallRaw {
    #[serde(default)]
    open: Vec<OpenPort>,
}

impl TryFrom<FirewallRaw> for Firewall {
    type Error = String;
    fn try_from(raw: FirewallRaw) -> Result<Self, String> {
        let mut seen = BTreeSet::new();
        for p in &raw.open {
            if !seen.insert((p.port, p.proto)) {
                return Err(format!(
                    "firewall.open: port {}/{} is listed twice",
                    p.port,
                    p.proto.as_str()
                ));
            }
        }
        Ok(Firewall { open: raw.open })
    }
}

/// One opened port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenPort {
    /// Port number.
    pub port: Port,
    /// `tcp` (default) or `udp`.
    #[serde(default)]
    pub proto: Proto,
    /// Shown in the nftables ruleset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<Comment>,
    /// Only these source addresses may connect (empty: anyone). Metrics
    /// ports carry the lab's monitoring addresses here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub from: Vec<Ipv4Addr>,
}

/// Transport protocol of an opened port.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP.
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`, as nftables spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// The roles a guest runs; absent = not on this guest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RolesRaw")]
pub struct Roles {
    /// S3-compatible object store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_store: Option<ObjectStore>,
    /// Spark standalone master and/or worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spark: Option<Spark>,
    /// Prometheus node exporter (and the agent's own textfile metrics).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<metrics::Metrics>,
    /// Prometheus scraping the lab, with its alert rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<monitoring::Monitoring>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RolesRaw {
    #[serde(default)]
    object_store: Option<ObjectStore>,
    #[serde(default)]
    spark: Option<Spark>,
    #[serde(default)]
    metrics: Option<metrics::Metrics>,
    #[serde(default)]
    monitoring: Option<monitoring::Monitoring>,
}

impl Roles {
    /// Every directory a service owns (or, for Spark's home, lives in), for
    /// the path policy: `(role field, service, what, directory)`.
    pub fn service_dirs(&self) -> Vec<(&'static str, &'static str, &'static str, String)> {
        let mut v = Vec::new();
        // Spark's first: its directories are fixed by the image, so a clash
        // is reported at the object store's (configurable) field.
        if let Some(sp) = &self.spark {
            let d = |what, path: &str| ("spark", "spark", what, path.to_string());
            v.push(d("home", sp.home.as_str()));
            v.push(d("log_dir", sp.log_dir.as_str()));
            v.push(d("work_dir", &sp.work_dir()));
        }
        if let Some(m) = &self.monitoring {
            v.push((
                "monitoring",
                "prometheus",
                "data_dir",
                m.data_dir.as_str().to_string(),
            ));
        }
        if let Some(os) = &self.object_store {
            let d = |what, path: &str| ("object_store", "object store", what, path.to_string());
            v.push(d("data_dir", os.data_dir.as_str()));
            v.push(d("log_dir", os.log_dir.as_str()));
            match &os.volumes {
                Volumes::Local(dirs) => v.extend(dirs.iter().map(|p| d("volumes", p.as_str()))),
                // A distributed pool's local share (/data1 ... of http://h{1...4}/data{1...2}).
                Volumes::Distributed(expr) => {
                    v.extend(expr.local_dirs().iter().map(|p| d("volumes", p)))
                }
            }
        }
        v
    }
}

impl TryFrom<RolesRaw> for Roles {
    type Error = String;
    fn try_from(r: RolesRaw) -> Result<Self, String> {
        let roles = Roles {
            object_store: r.object_store,
            spark: r.spark,
            metrics: r.metrics,
            monitoring: r.monitoring,
        };
        if let (Some(os), Some(s3)) = (
            &roles.object_store,
            roles.spark.as_ref().and_then(|s| s.s3.as_ref()),
        ) {
            if s3.access_key == os.root_user {
                return Err("roles.spark.s3.access_key: Spark uses its own S3 user, never the object store's root user".into());
            }
        }
        let dirs = roles.service_dirs();
        let all: Vec<paths::ServiceDir<'_>> = dirs
            .iter()
            .map(|(_, service, what, path)| paths::ServiceDir {
                service,
                what,
                path,
            })
            .collect();
        if let Some((i, msg)) = paths::problems(&all).into_iter().next() {
            return Err(format!("roles.{}.{}: {msg}", dirs[i].0, dirs[i].2));
        }
        Ok(roles)
    }
}

/// Which object-store server implementation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// MinIO (`/usr/local/bin/minio`).
    #[default]
    Minio,
}

/// MinIO's volumes: local directories or one distributed-mode expansion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Volumes {
    /// Local directories, e.g. `[/var/lib/minio]`.
    Local(Vec<AbsPath>),
    /// E.g. `http://minio{1...4}/data{1...2}`.
    Distributed(VolumeExpr),
}

// By hand rather than `untagged`, so a bad path or expansion reports its own
// error instead of "did not match any variant".
impl<'de> Deserialize<'de> for Volumes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Volumes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a list of directories or a MinIO expansion like http://minio{1...4}/data",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Volumes, E> {
                VolumeExpr::new(v)
                    .map(Volumes::Distributed)
                    .map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Volumes, A::Error> {
                let mut dirs = Vec::new();
                while let Some(d) = seq.next_element::<AbsPath>()? {
                    dirs.push(d);
                }
                Ok(Volumes::Local(dirs))
            }
        }
        d.deserialize_any(V)
    }
}

/// The object-store role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "ObjectStoreRaw")]
pub struct ObjectStore {
    /// Server implementation.
    pub flavor: Flavor,
    /// MINIO_VOLUMES; defaults to `[data_dir]`.
    pub volumes: Volumes,
    /// S3 API port (9000).
    pub api_port: Port,
    /// Web console port (9001).
    pub console_port: Port,
    /// Data directory, owned by minio-user (/var/lib/minio).
    pub data_dir: AbsPath,
    /// Log directory, owned by minio-user (/var/log/minio).
    pub log_dir: AbsPath,
    /// MINIO_ROOT_USER (also the access key used to create buckets).
    pub root_user: AccessKey,
    /// MINIO_ROOT_PASSWORD.
    pub root_password: Secret,
    /// Buckets to create (idempotently).
    pub buckets: Vec<BucketName>,
    /// Service identities to create or update through the admin API (other
    /// guests' own S3 users, e.g. Spark's), each limited to its buckets.
    /// Only this guest holds the root credentials that can create them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<S3User>,
}

/// One S3 user the object store creates (MinIO: `mc admin user add`, `mc
/// admin policy create` and `attach`), with read/write access to `buckets`
/// only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3User {
    /// The user's access key (never the root user).
    pub access_key: AccessKey,
    /// Its secret key.
    pub secret_key: Secret,
    /// The canned policy created for it and attached to it.
    pub policy: PolicyName,
    /// The only buckets it may list, read, write and delete in.
    pub buckets: Vec<BucketName>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ObjectStoreRaw {
    #[serde(default)]
    flavor: Flavor,
    #[serde(default)]
    volumes: Option<Volumes>,
    #[serde(default = "default_api_port")]
    api_port: Port,
    #[serde(default = "default_console_port")]
    console_port: Port,
    #[serde(default = "default_minio_data")]
    data_dir: AbsPath,
    #[serde(default = "default_minio_log")]
    log_dir: AbsPath,
    root_user: AccessKey,
    root_password: Secret,
    #[serde(default)]
    buckets: Vec<BucketName>,
    #[serde(default)]
    users: Vec<S3User>,
}

fn abs(s: &str) -> AbsPath {
    AbsPath::new(s).expect("built-in default path is valid")
}
fn default_api_port() -> Port {
    Port::of(defaults::MINIO_API_PORT)
}
fn default_console_port() -> Port {
    Port::of(defaults::MINIO_CONSOLE_PORT)
}
fn default_minio_data() -> AbsPath {
    abs(defaults::MINIO_DATA_DIR)
}
fn default_minio_log() -> AbsPath {
    abs(defaults::MINIO_LOG_DIR)
}

impl TryFrom<ObjectStoreRaw> for ObjectStore {
    type Error = String;
    fn try_from(r: ObjectStoreRaw) -> Result<Self, String> {
        if r.api_port == r.console_port {
            return Err(format!(
                "roles.object_store: api_port and console_port are both {}",
                r.api_port
            ));
        }
        let volumes = r
            .volumes
            .unwrap_or_else(|| Volumes::Local(vec![r.data_dir.clone()]));
        if matches!(&volumes, Volumes::Local(v) if v.is_empty()) {
            return Err("roles.object_store.volumes: list at least one directory (or omit it to use data_dir)".into());
        }
        let distinct: BTreeSet<_> = r.buckets.iter().collect();
        if distinct.len() != r.buckets.len() {
            return Err("roles.object_store.buckets: a bucket is listed twice".into());
        }
        let mut keys = BTreeSet::new();
        let mut policies = BTreeSet::new();
        for (i, u) in r.users.iter().enumerate() {
            if u.access_key == r.root_user {
                return Err(format!(
                    "roles.object_store.users[{i}].access_key: a service user may not be the root user"
                ));
            }
            if !keys.insert(&u.access_key) {
                // No value: access keys come from secret references.
                return Err(format!(
                    "roles.object_store.users[{i}].access_key: this user is listed twice"
                ));
            }
            if !policies.insert(&u.policy) {
                return Err(format!(
                    "roles.object_store.users[{i}].policy: {:?} is listed twice",
                    u.policy.as_str()
                ));
            }
            if u.buckets.is_empty() {
                return Err(format!(
                    "roles.object_store.users[{i}].buckets: list at least one bucket"
                ));
            }
        }
        Ok(ObjectStore {
            flavor: r.flavor,
            volumes,
            api_port: r.api_port,
            console_port: r.console_port,
            data_dir: r.data_dir,
            log_dir: r.log_dir,
            root_user: r.root_user,
            root_password: r.root_password,
            buckets: r.buckets,
            users: r.users,
        })
    }
}

/// The Spark role (standalone cluster).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "SparkRaw")]
pub struct Spark {
    /// SPARK_HOME (/opt/spark).
    pub home: AbsPath,
    /// JAVA_HOME (/opt/java).
    pub java_home: AbsPath,
    /// SPARK_LOG_DIR (/opt/spark/logs).
    pub log_dir: AbsPath,
    /// Run a master here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<SparkMaster>,
    /// Run a worker here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<SparkWorker>,
    /// With a local master: readiness waits until this many workers are ALIVE
    /// (default 1 when a master runs here, 0 = only wait for the master's UI).
    pub expect_workers: u32,
    /// S3A settings for spark-defaults.conf.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<SparkS3>,
    /// `spark.authenticate.secret`: the cluster's shared secret (master,
    /// workers and every submitting client); authentication is always on.
    pub auth_secret: Secret,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SparkRaw {
    #[serde(default = "default_spark_home")]
    home: AbsPath,
    #[serde(default = "default_java_home")]
    java_home: AbsPath,
    #[serde(default = "default_spark_logs")]
    log_dir: AbsPath,
    #[serde(default)]
    master: Option<SparkMaster>,
    #[serde(default)]
    worker: Option<SparkWorker>,
    #[serde(default)]
    expect_workers: Option<u32>,
    #[serde(default)]
    s3: Option<SparkS3>,
    auth_secret: Secret,
}

fn default_spark_home() -> AbsPath {
    abs(defaults::SPARK_HOME)
}
fn default_java_home() -> AbsPath {
    abs(defaults::JAVA_HOME)
}
fn default_spark_logs() -> AbsPath {
    abs(defaults::SPARK_LOG_DIR)
}

impl TryFrom<SparkRaw> for Spark {
    type Error = String;
    fn try_from(r: SparkRaw) -> Result<Self, String> {
        if r.master.is_none() && r.worker.is_none() {
            return Err("roles.spark: configure a master, a worker, or both".into());
        }
        if let (Some(m), Some(w)) = (&r.master, &r.worker) {
            if m.port == w.ui_port || m.ui_port == w.ui_port {
                return Err(format!(
                    "roles.spark: worker ui_port {} clashes with the master's ports",
                    w.ui_port
                ));
            }
        }
        if let Some(m) = &r.master {
            if m.port == m.ui_port {
                return Err(format!(
                    "roles.spark.master: port and ui_port are both {}",
                    m.port
                ));
            }
        }
        let expect_workers = match (r.expect_workers, &r.master) {
            (Some(n), Some(_)) => n,
            (Some(n), None) if n > 0 => {
                return Err(
                    "roles.spark.expect_workers needs a local master to check against".into(),
                )
            }
            (_, Some(_)) => 1,
            (_, None) => 0,
        };
        Ok(Spark {
            home: r.home,
            java_home: r.java_home,
            log_dir: r.log_dir,
            master: r.master,
            worker: r.worker,
            expect_workers,
            s3: r.s3,
            auth_secret: r.auth_secret,
        })
    }
}

impl Spark {
    /// SPARK_WORKER_DIR: always `<home>/work`.
    pub fn work_dir(&self) -> String {
        format!("{}/work", self.home.as_str().trim_end_matches('/'))
    }
}

/// A Spark standalone master on this guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparkMaster {
    /// Address the master binds and advertises (this guest's name or IP).
    pub host: Hostname,
    /// RPC port (7077).
    #[serde(default = "default_master_port")]
    pub port: Port,
    /// Web UI port (8080).
    #[serde(default = "default_master_ui")]
    pub ui_port: Port,
}

fn default_master_port() -> Port {
    Port::of(defaults::SPARK_MASTER_PORT)
}
fn default_master_ui() -> Port {
    Port::of(defaults::SPARK_MASTER_UI_PORT)
}
fn default_worker_ui() -> Port {
    Port::of(defaults::SPARK_WORKER_UI_PORT)
}

/// A Spark standalone worker on this guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparkWorker {
    /// The master to join, `spark://host:7077`.
    pub master_url: SparkUrl,
    /// Cores offered to executors (>= 1).
    pub cores: Cores,
    /// Memory offered to executors, e.g. `4g`.
    pub memory: Memory,
    /// Web UI port (8081).
    #[serde(default = "default_worker_ui")]
    pub ui_port: Port,
}

/// A core count of at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Cores(u32);

impl Cores {
    /// Refuses 0.
    pub fn new(n: u32) -> Result<Self, InvalidValue> {
        if n == 0 {
            return Err(InvalidValue {
                what: "core count",
                shown: Some("0".into()),
                reason: "must be at least 1".into(),
            });
        }
        Ok(Cores(n))
    }
    /// The count.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl<'de> Deserialize<'de> for Cores {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Cores(
            types::deserialize_ranged(d, "core count", 1, 4096)? as u32
        ))
    }
}

/// Spark's S3A connection to the object store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparkS3 {
    /// `http://host:9000`.
    pub endpoint: HttpUrl,
    /// fs.s3a.access.key.
    pub access_key: AccessKey,
    /// fs.s3a.secret.key.
    pub secret_key: Secret,
    /// fs.s3a.path.style.access (default true; MinIO wants it).
    #[serde(default = "yes")]
    pub path_style: bool,
}

fn yes() -> bool {
    true
}

impl Seed {
    /// Parses and validates a seed document. Errors carry the field path and,
    /// through [`SeedError::location`], the line and column.
    ///
    /// Size and nesting are bounded before the parser runs, duplicate keys
    /// are refused at every level, anchors, aliases and tags are refused, so
    /// no document makes this take more than linear time and memory.
    pub fn from_yaml(text: &str) -> Result<Seed, SeedError> {
        parse::check_shape(text)?;
        let node = parse::load(text)?;
        parse::check_depth(&node)?;
        parse::from_node(&node)
    }

    /// The canonical YAML form: deterministic for equal seeds.
    pub fn to_yaml(&self) -> String {
        canonical::to_string(self).expect("every value of a valid seed has a canonical form")
    }

    /// Lowercase hex SHA-256 of the UTF-8 bytes of [`Seed::to_yaml`].
    pub fn instance_id(&self) -> String {
        hex::encode(Sha256::digest(self.to_yaml().as_bytes()))
    }
}

#[cfg(test)]
mod tests;
