//! What Prometheus scrapes in a lab: every guest's node exporter, the object
//! store's `/minio/v2/metrics/{cluster,node}` and the Spark master's and
//! workers' Prometheus servlets, each labelled by guest, role, vmid and lab.
//! [`file_sd`] renders them as Prometheus' file-based service discovery
//! document (`imgbuild inventory --format prometheus`).

use std::net::Ipv4Addr;

use imgbuild_seed::monitoring::Job;
use serde_json::{json, Value};

use crate::model::lab::Lab;
use crate::model::metrics::ObjectStoreAuth;

/// One scrape target. Its metrics path and role label come from its
/// [`Job`] (the seed contract's, which the monitoring guest renders too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub job: Job,
    pub host: Ipv4Addr,
    pub port: u16,
    pub guest: String,
    pub vmid: u32,
    /// Needs the object store's bearer token.
    pub bearer: bool,
}

impl Target {
    /// `host:port`.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// Every target of the lab, in lab order; empty without a `metrics:` section
/// (then no guest runs an exporter or Spark's servlet).
pub fn targets(lab: &Lab) -> Vec<Target> {
    let Some(m) = &lab.metrics else {
        return vec![];
    };
    let bearer = !matches!(m.object_store, ObjectStoreAuth::Public);
    let mut v = Vec::new();
    for g in &lab.guests {
        let t = |job, port: u16, bearer| Target {
            job,
            host: g.address,
            port,
            guest: g.name.to_string(),
            vmid: g.vmid.get(),
            bearer,
        };
        v.push(t(Job::Node, m.port.get(), false));
        if let Some(os) = &g.roles.object_store {
            let p = os.api_port.get();
            v.push(t(Job::MinioCluster, p, bearer));
            v.push(t(Job::MinioNode, p, bearer));
        }
        if let Some(s) = &g.roles.spark {
            if let Some(ms) = &s.master {
                v.push(t(Job::SparkMaster, ms.ui_port.get(), false));
            }
            if let Some(w) = &s.worker {
                v.push(t(Job::SparkWorker, w.ui_port.get(), false));
            }
        }
    }
    v
}

/// Prometheus' file_sd document: one group per target, with `job` and
/// `__metrics_path__` set (target labels win over the scrape job's), and
/// `auth="bearer"` on the object store's targets when the lab keeps MinIO's
/// bearer auth (keep those in a job with `authorization:`).
pub fn file_sd(lab: &Lab) -> Value {
    let lab_name = lab
        .path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    Value::Array(
        targets(lab)
            .into_iter()
            .map(|t| {
                let mut labels = json!({
                    "job": t.job.as_str(),
                    "__metrics_path__": t.job.path(),
                    "guest": t.guest,
                    "role": t.job.role(),
                    "vmid": t.vmid.to_string(),
                    "lab": lab_name,
                });
                if t.bearer {
                    labels["auth"] = json!("bearer");
                }
                json!({"targets": [t.address()], "labels": labels})
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lab(file: &str) -> Lab {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        crate::model::lab::load(&p).expect("fixture lab loads")
    }

    #[test]
    fn file_sd_lists_every_exporter_with_labels() {
        let l = lab("../tests/fixtures/validate/ok/homelab-metrics.yaml");
        let sd = file_sd(&l);
        let groups = sd.as_array().unwrap();
        let addrs: Vec<(&str, &str, &str)> = groups
            .iter()
            .map(|g| {
                (
                    g["labels"]["job"].as_str().unwrap(),
                    g["targets"][0].as_str().unwrap(),
                    g["labels"]["__metrics_path__"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            addrs,
            [
                ("node", "192.168.1.200:9100", "/metrics"),
                (
                    "minio-cluster",
                    "192.168.1.200:9000",
                    "/minio/v2/metrics/cluster"
                ),
                ("minio-node", "192.168.1.200:9000", "/minio/v2/metrics/node"),
                ("node", "192.168.1.100:9100", "/metrics"),
                (
                    "spark-master",
                    "192.168.1.100:8080",
                    "/metrics/master/prometheus/"
                ),
                ("spark-worker", "192.168.1.100:8081", "/metrics/prometheus/"),
            ]
        );
        assert_eq!(
            groups[1]["labels"],
            json!({"job": "minio-cluster", "__metrics_path__": "/minio/v2/metrics/cluster",
                   "guest": "minio", "role": "object_store", "vmid": "200", "lab": "homelab-metrics"})
        );
        // Without `metrics:` no guest runs an exporter: nothing to scrape.
        assert_eq!(
            file_sd(&lab("../tests/fixtures/validate/ok/homelab.yaml")),
            json!([])
        );
    }

    #[test]
    fn bearer_object_store_targets_are_marked() {
        let mut l = lab("../tests/fixtures/validate/ok/homelab-metrics.yaml");
        l.metrics.as_mut().unwrap().object_store = ObjectStoreAuth::Bearer;
        let sd = file_sd(&l);
        let marked: Vec<&str> = sd
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["labels"]["auth"] == "bearer")
            .map(|g| g["labels"]["job"].as_str().unwrap())
            .collect();
        assert_eq!(marked, ["minio-cluster", "minio-node"]);
    }
}
