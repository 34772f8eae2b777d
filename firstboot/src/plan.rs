//! The plan: everything a seed asks for, rendered before anything is written.
//!
//! Building a plan reads nothing but the seed and the current /etc/hosts (to
//! keep lines that are not ours), so it is a pure function that golden tests
//! pin down. The engine in `apply` then carries it out.

use crate::roles;
use crate::seed::{Secret, Seed};
use std::fmt::Write as _;
use std::time::Duration;

/// A system account to create (group of the same name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// User and group name.
    pub name: String,
    /// Home directory (not created).
    pub home: String,
}

/// A directory with its mode and owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dir {
    /// Absolute guest path.
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// Owning user.
    pub user: String,
    /// Owning group.
    pub group: String,
}

/// A file with its content, mode and owner.
#[derive(Clone, PartialEq, Eq)]
pub struct File {
    /// Absolute guest path.
    pub path: String,
    /// Full content.
    pub content: String,
    /// Permission bits.
    pub mode: u32,
    /// Owning user.
    pub user: String,
    /// Owning group.
    pub group: String,
    /// Units to restart when this file changes.
    pub restarts: Vec<String>,
    /// Holds a secret: never logged, 0640/0600 only.
    pub secret: bool,
}

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("File")
            .field("path", &self.path)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("owner", &format_args!("{}:{}", self.user, self.group))
            .field("bytes", &self.content.len())
            .finish()
    }
}

/// A symlink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Absolute guest path of the link.
    pub path: String,
    /// Link target.
    pub target: String,
    /// Units to restart when it changes.
    pub restarts: Vec<String>,
}

/// A unit to enable and start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// Unit name (`minio.service`).
    pub name: String,
    /// Longest wait for its start job.
    pub timeout: Duration,
}

/// A readiness check, run after all units started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// GET `http://host:port/path` until it answers 200.
    Http {
        /// Step name.
        name: String,
        /// Host (resolved through the guest's /etc/hosts).
        host: String,
        /// Port.
        port: u16,
        /// Path.
        path: String,
        /// Give up after this long.
        deadline: Duration,
    },
    /// Create buckets through the S3 API (SigV4, path style).
    Buckets {
        /// S3 API port on 127.0.0.1.
        port: u16,
        /// Access key.
        access_key: String,
        /// Secret key.
        secret_key: Secret,
        /// Buckets to create.
        buckets: Vec<String>,
        /// Give up after this long.
        deadline: Duration,
    },
    /// Create or update service users through the admin API, each with a
    /// canned policy limited to its buckets (signed as the root user).
    S3Users {
        /// S3 API port on 127.0.0.1.
        port: u16,
        /// Root access key.
        access_key: String,
        /// Root secret key.
        secret_key: Secret,
        /// The users.
        users: Vec<imgbuild_seed::S3User>,
        /// Give up after this long.
        deadline: Duration,
    },
    /// The Spark master's `/json/` lists at least `workers` ALIVE workers.
    SparkWorkers {
        /// Master UI host.
        host: String,
        /// Master UI port.
        port: u16,
        /// How many ALIVE workers to wait for.
        workers: u32,
        /// Give up after this long.
        deadline: Duration,
    },
}

impl Check {
    /// The step name in status.json.
    pub fn name(&self) -> String {
        match self {
            Check::Http { name, .. } => format!("check:{name}"),
            Check::Buckets { .. } => "check:buckets".into(),
            Check::S3Users { .. } => "check:s3-users".into(),
            Check::SparkWorkers { .. } => "check:spark-workers".into(),
        }
    }
}

/// Everything to do for one seed, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Accounts to create first (files may be owned by them).
    pub accounts: Vec<Account>,
    /// Directories.
    pub dirs: Vec<Dir>,
    /// Files.
    pub files: Vec<File>,
    /// Symlinks.
    pub links: Vec<Link>,
    /// Generate missing SSH host keys (`ssh-keygen -A`) before starting ssh.
    pub ssh_host_keys: bool,
    /// Zone that must exist under /usr/share/zoneinfo.
    pub timezone: Option<String>,
    /// Static host name to set through hostnamed.
    pub hostname: Option<String>,
    /// Units to enable and start, in order.
    pub units: Vec<Unit>,
    /// Readiness checks, in order.
    pub checks: Vec<Check>,
}

impl Plan {
    /// Adds a root-owned file.
    pub fn file(&mut self, path: &str, mode: u32, content: String, restarts: &[&str]) {
        self.owned_file(path, mode, "root", "root", content, restarts, false);
    }

    /// Adds a file with an explicit owner.
    #[allow(clippy::too_many_arguments)]
    pub fn owned_file(
        &mut self,
        path: &str,
        mode: u32,
        user: &str,
        group: &str,
        content: String,
        restarts: &[&str],
        secret: bool,
    ) {
        self.files.push(File {
            path: path.into(),
            content,
            mode,
            user: user.into(),
            group: group.into(),
            restarts: restarts.iter().map(|s| s.to_string()).collect(),
            secret,
        });
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str, mode: u32, user: &str, group: &str) {
        self.dirs.push(Dir {
            path: path.into(),
            mode,
            user: user.into(),
            group: group.into(),
        });
    }

    /// Adds a unit to enable and start.
    pub fn unit(&mut self, name: &str, timeout: Duration) {
        self.units.push(Unit {
            name: name.into(),
            timeout,
        });
    }

    /// Whether a path is a systemd unit file (changes need a daemon-reload).
    pub fn is_unit_file(path: &str) -> bool {
        path.starts_with("/etc/systemd/system/") && !path.contains(".wants/")
    }

    /// A stable text rendering of the whole plan (golden tests, `--plan`).
    /// Secret-bearing file bodies are included only when `secrets` is true.
    pub fn render(&self, secrets: bool) -> String {
        let mut o = String::new();
        for a in &self.accounts {
            let _ = writeln!(o, "account {} home={}", a.name, a.home);
        }
        for d in &self.dirs {
            let _ = writeln!(o, "dir {} {:04o} {}:{}", d.path, d.mode, d.user, d.group);
        }
        for l in &self.links {
            let _ = writeln!(
                o,
                "link {} -> {} restarts=[{}]",
                l.path,
                l.target,
                l.restarts.join(",")
            );
        }
        let _ = writeln!(o, "ssh-host-keys {}", self.ssh_host_keys);
        let _ = writeln!(o, "timezone {:?}", self.timezone);
        let _ = writeln!(o, "hostname {:?}", self.hostname);
        for u in &self.units {
            let _ = writeln!(o, "unit {} timeout={}s", u.name, u.timeout.as_secs());
        }
        for c in &self.checks {
            let _ = match c {
                Check::Http {
                    host,
                    port,
                    path,
                    deadline,
                    ..
                } => {
                    writeln!(
                        o,
                        "{} GET http://{host}:{port}{path} within {}s",
                        c.name(),
                        deadline.as_secs()
                    )
                }
                Check::Buckets {
                    port,
                    access_key,
                    buckets,
                    deadline,
                    ..
                } => writeln!(
                    o,
                    "{} PUT 127.0.0.1:{port} as {access_key}: {} within {}s",
                    c.name(),
                    buckets.join(","),
                    deadline.as_secs()
                ),
                Check::S3Users {
                    port,
                    access_key,
                    users,
                    deadline,
                    ..
                } => writeln!(
                    o,
                    "{} admin API 127.0.0.1:{port} as {access_key}: {} within {}s",
                    c.name(),
                    users
                        .iter()
                        .map(|u| format!(
                            "{} policy {} on {}",
                            u.access_key,
                            u.policy,
                            u.buckets
                                .iter()
                                .map(|b| b.as_str())
                                .collect::<Vec<_>>()
                                .join(",")
                        ))
                        .collect::<Vec<_>>()
                        .join("; "),
                    deadline.as_secs()
                ),
                Check::SparkWorkers {
                    host,
                    port,
                    workers,
                    deadline,
                } => writeln!(
                    o,
                    "{} http://{host}:{port}/json/ >= {workers} ALIVE within {}s",
                    c.name(),
                    deadline.as_secs()
                ),
            };
        }
        for f in &self.files {
            let _ = writeln!(
                o,
                "\n=== file {} {:04o} {}:{} restarts=[{}]",
                f.path,
                f.mode,
                f.user,
                f.group,
                f.restarts.join(",")
            );
            if f.secret && !secrets {
                o.push_str("(holds a secret: not shown)\n");
            } else {
                o.push_str(&f.content);
            }
        }
        o
    }
}

/// Builds the plan for `seed`. `current_hosts` is the guest's /etc/hosts as
/// it is now (empty if missing); lines outside imgbuild's block are kept.
pub fn build(seed: &Seed, current_hosts: &str) -> Plan {
    let mut plan = Plan::default();
    roles::common::plan(seed, current_hosts, &mut plan);
    if let Some(os) = &seed.roles.object_store {
        roles::minio::plan(os, &mut plan);
    }
    if let Some(spark) = &seed.roles.spark {
        roles::spark::plan(spark, &mut plan);
    }
    if let Some(m) = &seed.roles.metrics {
        roles::metrics::plan(m, &mut plan);
        roles::metrics::services(seed, m, &mut plan);
    }
    if let Some(m) = &seed.roles.monitoring {
        roles::monitoring::plan(m, &mut plan);
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden(name: &str, actual: &str) {
        let path = format!("{}/tests/fixtures/plans/{name}", env!("CARGO_MANIFEST_DIR"));
        if std::env::var_os("FIRSTBOOT_UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(std::path::Path::new(&path).parent().unwrap()).unwrap();
            std::fs::write(&path, actual).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!("{path}: {e} (run with FIRSTBOOT_UPDATE_GOLDEN=1 to create it)")
        });
        assert!(
            want == actual,
            "plan differs from {path}; rerun with FIRSTBOOT_UPDATE_GOLDEN=1 and review the diff"
        );
    }

    fn seed(name: &str) -> Seed {
        let p = format!(
            "{}/../seed/tests/fixtures/seeds/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        Seed::from_yaml(&std::fs::read_to_string(p).unwrap()).unwrap()
    }

    #[test]
    fn golden_minio() {
        golden("minio.txt", &build(&seed("minio.yaml"), "").render(true));
    }

    #[test]
    fn golden_devlab() {
        let hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
        golden(
            "devlab.txt",
            &build(&seed("devlab.yaml"), hosts).render(true),
        );
    }

    #[test]
    fn golden_monitoring() {
        golden(
            "monitoring.txt",
            &build(&seed("monitoring.yaml"), "").render(false),
        );
    }

    #[test]
    fn rendering_hides_secrets_unless_asked() {
        let text = build(&seed("minio.yaml"), "").render(false);
        assert!(!text.contains("change-me-please"), "{text}");
        assert!(!format!("{:?}", build(&seed("minio.yaml"), "")).contains("change-me-please"));
    }

    #[test]
    fn distributed_minio_volumes() {
        let mut s = seed("minio.yaml");
        let os = s.roles.object_store.as_mut().unwrap();
        os.volumes = crate::seed::Volumes::Distributed(
            crate::seed::VolumeExpr::new("http://minio{1...4}/data{1...2}").unwrap(),
        );
        let p = build(&s, "");
        let env = p
            .files
            .iter()
            .find(|f| f.path == "/etc/default/minio")
            .unwrap();
        assert!(
            env.content
                .contains("MINIO_VOLUMES=\"http://minio{1...4}/data{1...2}\""),
            "{}",
            env.content
        );
        // This node's share of the expansion is created and owned by minio-user.
        let dirs: Vec<&str> = p
            .dirs
            .iter()
            .map(|d| d.path.as_str())
            .filter(|d| d.starts_with("/data"))
            .collect();
        assert_eq!(dirs, vec!["/data1", "/data2"]);
    }
}
