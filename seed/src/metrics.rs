//! The `metrics` role of the seed: the Prometheus node exporter the image
//! carries, the port it listens on, and the textfile-collector directory
//! where the agent records its own outcome. Who may scrape it is not said
//! here but in `firewall.open[].from` (the builder puts the lab's monitoring
//! addresses there), so the firewall stays the one place that opens ports.

use serde::{Deserialize, Serialize};

use crate::types::{AbsPath, Port};

/// Where the node exporter's listen port defaults to (Prometheus' registry).
pub const NODE_EXPORTER_PORT: u16 = 9100;
/// Where the image installs the node exporter (payload `install.unpack: /opt/node_exporter`).
pub const NODE_EXPORTER_BINARY: &str = "/opt/node_exporter/node_exporter";
/// The textfile-collector directory (root writes, the exporter reads).
pub const TEXTFILE_DIR: &str = "/var/lib/node_exporter/textfile";
/// The agent's own file in it.
pub const FIRSTBOOT_PROM: &str = "imgbuild_firstboot.prom";

/// The metrics role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// The node exporter on this guest.
    #[serde(default)]
    pub node_exporter: NodeExporter,
    /// Who may read the object store's `/minio/v2/metrics/*` (when this guest
    /// runs one): MinIO's default, a bearer JWT, or anyone on the network.
    #[serde(default)]
    pub object_store_auth: ObjectStoreAuth,
}

/// `MINIO_PROMETHEUS_AUTH_TYPE`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectStoreAuth {
    /// `jwt`: a bearer token signed with an access key's secret
    /// (`mc admin prometheus generate`).
    #[default]
    Bearer,
    /// `public`: no authentication.
    Public,
}

impl ObjectStoreAuth {
    /// The value of `MINIO_PROMETHEUS_AUTH_TYPE`.
    pub fn minio_env(self) -> &'static str {
        match self {
            ObjectStoreAuth::Bearer => "jwt",
            ObjectStoreAuth::Public => "public",
        }
    }
}

/// The Prometheus node exporter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeExporter {
    /// Listen port (9100), on every address (the firewall limits who reaches it).
    #[serde(default = "default_port")]
    pub port: Port,
    /// The baked binary.
    #[serde(default = "default_binary")]
    pub binary: AbsPath,
    /// Textfile-collector directory; the agent writes [`FIRSTBOOT_PROM`] there.
    #[serde(default = "default_textfile_dir")]
    pub textfile_dir: AbsPath,
}

impl Default for NodeExporter {
    fn default() -> Self {
        NodeExporter {
            port: default_port(),
            binary: default_binary(),
            textfile_dir: default_textfile_dir(),
        }
    }
}

fn default_port() -> Port {
    Port::of(NODE_EXPORTER_PORT)
}
fn default_binary() -> AbsPath {
    AbsPath::new(NODE_EXPORTER_BINARY).expect("built-in default path is valid")
}
fn default_textfile_dir() -> AbsPath {
    AbsPath::new(TEXTFILE_DIR).expect("built-in default path is valid")
}
