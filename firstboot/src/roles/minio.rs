//! The object-store role, flavor MinIO: system user, data and log dirs,
//! /etc/default/minio, an upstream-style minio.service, health checks and the
//! seed's buckets.

use super::HEADER;
use crate::plan::{Account, Check, Plan};
use crate::seed::{ObjectStore, Volumes};
use std::time::Duration;

/// The service account, as upstream's unit names it.
pub const USER: &str = "minio-user";
/// Where the baked binary lives.
pub const BINARY: &str = "/usr/local/bin/minio";

/// Adds the object-store role to `plan`.
pub fn plan(os: &ObjectStore, plan: &mut Plan) {
    plan.accounts.push(Account {
        name: USER.into(),
        home: os.data_dir.as_str().into(),
    });
    plan.dir(os.data_dir.as_str(), 0o750, USER, USER);
    // systemd (root) appends MinIO's output to a file here, so the service
    // user may read the directory but never write it: it could swap the log
    // for a symlink and have root append to any file.
    plan.dir(os.log_dir.as_str(), 0o750, "root", USER);
    let mut writable = vec![os.data_dir.as_str().to_string()];
    let (volumes, distributed) = match &os.volumes {
        Volumes::Local(dirs) => {
            for d in dirs {
                if d != &os.data_dir {
                    plan.dir(d.as_str(), 0o750, USER, USER);
                    writable.push(d.as_str().to_string());
                }
            }
            (
                dirs.iter()
                    .map(|d| d.as_str())
                    .collect::<Vec<_>>()
                    .join(" "),
                false,
            )
        }
        Volumes::Distributed(expr) => {
            // This node's share of http://host{1...n}/data{1...m} is /data1../datam.
            for d in expr.local_dirs() {
                plan.dir(&d, 0o750, USER, USER);
                writable.push(d);
            }
            (expr.as_str().to_string(), true)
        }
    };
    let env = format!(
        "{HEADER}\nMINIO_VOLUMES=\"{volumes}\"\nMINIO_OPTS=\"--address :{} --console-address :{}\"\n\
         MINIO_ROOT_USER=\"{}\"\nMINIO_ROOT_PASSWORD=\"{}\"\n",
        os.api_port,
        os.console_port,
        os.root_user,
        os.root_password.expose()
    );
    plan.owned_file(
        "/etc/default/minio",
        0o640,
        "root",
        USER,
        env,
        &["minio.service"],
        true,
    );
    plan.file(
        "/etc/systemd/system/minio.service",
        0o644,
        unit(os, &writable),
        &["minio.service"],
    );
    plan.unit("minio.service", Duration::from_secs(300));

    // Distributed mode is only ready once a quorum of peers is up.
    let ready = Duration::from_secs(if distributed { 600 } else { 180 });
    let port = os.api_port.get();
    let http = |name: &str, path: &str, deadline| Check::Http {
        name: name.into(),
        host: "127.0.0.1".into(),
        port,
        path: path.into(),
        deadline,
    };
    plan.checks.push(http(
        "minio-live",
        "/minio/health/live",
        Duration::from_secs(180),
    ));
    plan.checks
        .push(http("minio-ready", "/minio/health/ready", ready));
    if !os.buckets.is_empty() {
        plan.checks.push(Check::Buckets {
            port,
            access_key: os.root_user.as_str().into(),
            secret_key: os.root_password.clone(),
            buckets: os.buckets.iter().map(|b| b.as_str().to_string()).collect(),
            deadline: Duration::from_secs(120),
        });
    }
    // Always, even with no users: it removes those an earlier seed listed.
    plan.checks.push(Check::S3Users {
        port,
        access_key: os.root_user.as_str().into(),
        secret_key: os.root_password.clone(),
        users: os.users.clone(),
        deadline: Duration::from_secs(120),
    });
}

/// Upstream's minio.service (minio-service/linux-systemd), with bounded
/// timeouts (upstream has TimeoutSec=infinity and SendSIGKILL=no, which would
/// let a stuck server hang first boot), logs appended under log_dir (a
/// directory the service cannot write), and the common sandbox with only
/// its data directories writable.
fn unit(os: &ObjectStore, writable: &[String]) -> String {
    let rw: Vec<&str> = writable.iter().map(|s| s.as_str()).collect();
    format!(
        "{HEADER}\n[Unit]\nDescription=MinIO\nDocumentation=https://min.io/docs/minio/linux/index.html\n\
         Wants=network-online.target\nAfter=network-online.target\nAssertFileIsExecutable={BINARY}\n\n\
         [Service]\nType=notify\nWorkingDirectory=/usr/local\nUser={USER}\nGroup={USER}\n\
         EnvironmentFile=-/etc/default/minio\n\
         ExecStart={BINARY} server $MINIO_OPTS $MINIO_VOLUMES\n\
         Restart=always\nLimitNOFILE=1048576\nTasksMax=infinity\n\
         TimeoutStartSec=300\nTimeoutStopSec=60\n\
         StandardOutput=append:{}/minio.log\nStandardError=inherit\n{}\n\
         [Install]\nWantedBy=multi-user.target\n",
        os.log_dir,
        super::sandbox(&rw, false)
    )
}

/// The local directories of a distributed expansion: the path after
/// `scheme://host[:port]`, with its `{a...b}` ranges expanded.
pub fn local_dirs(expr: &str) -> Vec<String> {
    imgbuild_seed::VolumeExpr::new(expr)
        .map(|e| e.local_dirs())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_local_part() {
        assert_eq!(
            local_dirs("http://minio{1...4}/data{1...2}"),
            vec!["/data1", "/data2"]
        );
        assert_eq!(
            local_dirs("http://minio{1...4}:9000/mnt/d{1...2}/x{3...4}").len(),
            4
        );
        assert_eq!(
            local_dirs("/mnt/disk{1...3}"),
            vec!["/mnt/disk1", "/mnt/disk2", "/mnt/disk3"]
        );
    }
}
