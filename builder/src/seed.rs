//! From the lab to one guest's seed document: the only place the lab's
//! resolved topology ([`crate::resolve`]) is turned into what a guest's
//! `firstboot` agent applies, built with the seed contract's typed
//! constructors. Secrets are resolved here (and only here), so callers must
//! write the result to 0600 files and never log it.

use anyhow::{anyhow, Context, Result};
use imgbuild_seed as sd;
use imgbuild_seed::Seed;

use crate::model::lab::{Guest, Lab};
use crate::model::types::{SecretRef, Size};
use crate::resolve::{GuestSpec, StoreVolumes};

/// Builds the seed of guest `name`, resolving its secret references.
pub fn for_guest(lab: &Lab, name: &str) -> Result<Seed> {
    let guest = lab
        .guest(name)
        .ok_or_else(|| anyhow!("guest {name:?} is not in {}", lab.path.display()))?;
    let topo = crate::resolve::resolve(lab);
    let spec = topo.guest(name).expect("resolve covers every guest");
    let seed = build(lab, guest, spec)?;
    // The agent's own parser is the contract: what we built must pass it as
    // the agent will read it (cross-field rules included).
    Seed::from_yaml(&seed.to_yaml()).map_err(|e| {
        // The error text may quote a field value; secrets are validated as
        // opaque strings by the agent's types, whose errors never echo them.
        anyhow!(
            "the seed for guest {name} is invalid: {}",
            crate::redact::scrub(&e.to_string())
        )
    })
}

/// A typed value, or an error naming the lab field it came from.
fn typed<T>(r: Result<T, sd::InvalidValue>, guest: &str, field: &str) -> Result<T> {
    r.map_err(|e| {
        anyhow!(
            "guest {guest}: {field}: {}",
            crate::redact::scrub(&e.to_string())
        )
    })
}

fn secret(r: &SecretRef, guest: &str, field: &str) -> Result<String> {
    r.resolve()
        .with_context(|| format!("guest {guest}: {field}"))
}

fn build(lab: &Lab, guest: &Guest, spec: &GuestSpec) -> Result<Seed> {
    let who = spec.name.as_str();
    let mut open = Vec::new();
    for p in &spec.ports {
        if p.port.get() == 22 {
            continue; // the agent always opens SSH itself
        }
        open.push(sd::OpenPort {
            port: typed(sd::Port::new(p.port.get()), who, p.field)?,
            proto: sd::Proto::Tcp,
            comment: Some(typed(sd::Comment::new(p.purpose), who, p.field)?),
            from: p.from.clone(),
        });
    }
    let mut peers = std::collections::BTreeMap::new();
    for (n, a) in &spec.peers {
        peers.insert(typed(sd::Hostname::new(n.as_str()), who, "guests")?, *a);
    }
    let mut keys = Vec::new();
    for k in lab.ssh.public_keys() {
        keys.push(typed(sd::SshPublicKey::new(k), who, "ssh.authorized_keys")?);
    }
    Ok(Seed {
        version: sd::Version::default(),
        hostname: typed(sd::Hostname::new(who), who, "guests")?,
        timezone: sd::Timezone::default(),
        ssh: sd::Ssh {
            authorized_keys: keys,
        },
        firewall: sd::Firewall { open },
        peers,
        roles: sd::Roles {
            object_store: object_store(guest, spec)?,
            spark: spark(guest, spec)?,
            metrics: metrics(guest, who)?,
            monitoring: monitoring(lab, guest, who)?,
        },
        updates: sd::updates::Updates {
            security: lab.updates.security,
            reboot_at: lab.updates.automatic_reboot.clone(),
        },
    })
}

/// The metrics role: the node exporter on the lab's port, and the object
/// store's metrics auth (the firewall entry comes with the guest's ports).
fn metrics(guest: &Guest, who: &str) -> Result<Option<sd::metrics::Metrics>> {
    let Some(m) = &guest.metrics else {
        return Ok(None);
    };
    let object_store_auth = match m.object_store {
        crate::model::metrics::ObjectStoreAuth::Public => sd::metrics::ObjectStoreAuth::Public,
        _ => sd::metrics::ObjectStoreAuth::Bearer,
    };
    Ok(Some(sd::metrics::Metrics {
        node_exporter: sd::metrics::NodeExporter {
            port: typed(sd::Port::new(m.port.get()), who, "metrics.port")?,
            ..Default::default()
        },
        object_store_auth,
    }))
}

/// The monitoring role: Prometheus with the lab's targets
/// ([`crate::scrape::targets`]), the file systems and Spark masters its
/// alert rules watch, and MinIO's bearer token when the lab uses one.
fn monitoring(lab: &Lab, guest: &Guest, who: &str) -> Result<Option<sd::monitoring::Monitoring>> {
    use crate::model::metrics::ObjectStoreAuth;
    let (Some(mo), Some(metrics)) = (&guest.roles.monitoring, &lab.metrics) else {
        return Ok(None);
    };
    let f = "roles.monitoring";
    let mut targets = Vec::new();
    for t in crate::scrape::targets(lab) {
        targets.push(sd::monitoring::ScrapeTarget {
            job: t.job,
            host: t.host,
            port: typed(sd::Port::new(t.port), who, f)?,
            guest: typed(sd::Hostname::new(t.guest.as_str()), who, "guests")?,
            vmid: t.vmid,
            bearer: t.bearer,
        });
    }
    let mut filesystems = vec![typed(sd::AbsPath::new("/"), who, f)?];
    for g in &lab.guests {
        if let Some(os) = &g.roles.object_store {
            let p = typed(sd::AbsPath::new(os.data_dir.as_str()), who, f)?;
            if !filesystems.contains(&p) {
                filesystems.push(p);
            }
        }
    }
    let mut spark_masters = std::collections::BTreeMap::new();
    for g in &lab.guests {
        if g.roles.spark.as_ref().is_some_and(|s| s.master.is_some()) {
            spark_masters.insert(
                typed(sd::Hostname::new(g.name.as_str()), who, "guests")?,
                lab.spark_workers_of(g.name.as_str()).len() as u32,
            );
        }
    }
    let object_store_token = match &metrics.object_store {
        ObjectStoreAuth::BearerToken(r) => Some(typed(
            sd::monitoring::BearerToken::new(secret(r, who, "metrics.object_store.token")?),
            who,
            "metrics.object_store.token",
        )?),
        _ => None,
    };
    Ok(Some(sd::monitoring::Monitoring {
        port: typed(sd::Port::new(mo.port.get()), who, "roles.monitoring.port")?,
        home: typed(sd::AbsPath::new(sd::monitoring::PROMETHEUS_HOME), who, f)?,
        data_dir: typed(
            sd::AbsPath::new(sd::monitoring::PROMETHEUS_DATA_DIR),
            who,
            f,
        )?,
        retention: mo.retention.clone(),
        scrape_interval: mo.scrape_interval.clone(),
        alert_for: mo.alert_for.clone(),
        lab: typed(
            sd::Hostname::new(crate::resolve::lab_name(lab)),
            who,
            "(lab file name)",
        )?,
        targets,
        filesystems,
        spark_masters,
        object_store_token,
    }))
}

fn object_store(guest: &Guest, spec: &GuestSpec) -> Result<Option<sd::ObjectStore>> {
    let (Some(os), Some(vols)) = (&guest.roles.object_store, &spec.object_store_volumes) else {
        return Ok(None);
    };
    let who = spec.name.as_str();
    let f = |x: &str| format!("roles.object_store.{x}");
    let volumes = match vols {
        StoreVolumes::Local(dirs) => sd::Volumes::Local(
            dirs.iter()
                .map(|d| typed(sd::AbsPath::new(d.as_str()), who, &f("data_dir")))
                .collect::<Result<_>>()?,
        ),
        StoreVolumes::Distributed(e) => {
            sd::Volumes::Distributed(typed(sd::VolumeExpr::new(e.as_str()), who, &f("pool"))?)
        }
    };
    Ok(Some(sd::ObjectStore {
        flavor: sd::Flavor::Minio,
        volumes,
        api_port: typed(sd::Port::new(os.api_port.get()), who, &f("api_port"))?,
        console_port: typed(
            sd::Port::new(os.console_port.get()),
            who,
            &f("console_port"),
        )?,
        data_dir: typed(sd::AbsPath::new(os.data_dir.as_str()), who, &f("data_dir"))?,
        log_dir: typed(sd::AbsPath::new(os.log_dir.as_str()), who, &f("log_dir"))?,
        root_user: typed(
            sd::AccessKey::new(secret(&os.root_user, who, &f("root_user"))?),
            who,
            &f("root_user"),
        )?,
        root_password: typed(
            sd::Secret::new(secret(&os.root_password, who, &f("root_password"))?),
            who,
            &f("root_password"),
        )?,
        buckets: os
            .buckets
            .iter()
            .map(|b| typed(sd::BucketName::new(b.as_str()), who, &f("buckets")))
            .collect::<Result<_>>()?,
        users: spec
            .s3_users
            .iter()
            .map(|u| s3_user(u, who))
            .collect::<Result<_>>()?,
    }))
}

/// A service user for the object store's seed; its credentials are named
/// by the Spark guests that use it, so errors point there.
fn s3_user(u: &crate::resolve::S3User, who: &str) -> Result<sd::S3User> {
    let at = |x: &str| format!("guest {}: roles.spark.s3.{x}", u.guests[0]);
    Ok(sd::S3User {
        access_key: typed(
            sd::AccessKey::new(secret(
                &u.access_key,
                &u.guests[0],
                "roles.spark.s3.access_key",
            )?),
            who,
            &at("access_key"),
        )?,
        secret_key: typed(
            sd::Secret::new(secret(
                &u.secret_key,
                &u.guests[0],
                "roles.spark.s3.secret_key",
            )?),
            who,
            &at("secret_key"),
        )?,
        policy: typed(
            sd::PolicyName::new(u.policy.as_str()),
            who,
            &at("object_store"),
        )?,
        buckets: u
            .buckets
            .iter()
            .map(|b| {
                typed(
                    sd::BucketName::new(b.as_str()),
                    who,
                    "roles.object_store.buckets",
                )
            })
            .collect::<Result<_>>()?,
    })
}

fn spark(guest: &Guest, spec: &GuestSpec) -> Result<Option<sd::Spark>> {
    let Some(sp) = &guest.roles.spark else {
        return Ok(None);
    };
    let who = spec.name.as_str();
    let master = match (&sp.master, &spec.spark_master) {
        (Some(m), Some(link)) => Some(sd::SparkMaster {
            // The address, not the name: see resolve::MasterLink.
            host: typed(
                sd::Hostname::new(link.host.to_string()),
                who,
                "roles.spark.master",
            )?,
            port: typed(sd::Port::new(m.port.get()), who, "roles.spark.master.port")?,
            ui_port: typed(
                sd::Port::new(m.ui_port.get()),
                who,
                "roles.spark.master.ui_port",
            )?,
        }),
        _ => None,
    };
    let worker = match (&sp.worker, &spec.spark_master_url) {
        (Some(w), Some(url)) => Some(sd::SparkWorker {
            master_url: typed(
                sd::SparkUrl::new(url.as_str()),
                who,
                "roles.spark.worker.master",
            )?,
            cores: typed(
                sd::Cores::new(w.cores.get()),
                who,
                "roles.spark.worker.cores",
            )?,
            memory: typed(
                sd::Memory::new(spark_memory(w.memory)),
                who,
                "roles.spark.worker.memory",
            )?,
            ui_port: typed(
                sd::Port::new(w.ui_port.get()),
                who,
                "roles.spark.worker.ui_port",
            )?,
        }),
        _ => None,
    };
    if let Some(link) = &spec.s3 {
        // Different references may still hold the same values.
        let mine = secret(&link.access_key, who, "roles.spark.s3.access_key")?;
        let root = secret(&link.store_root.0, who, "roles.spark.s3.object_store")?;
        let mine_secret = secret(&link.secret_key, who, "roles.spark.s3.secret_key")?;
        let root_secret = secret(&link.store_root.1, who, "roles.spark.s3.object_store")?;
        if mine == root || mine_secret == root_secret {
            return Err(anyhow!(
                "guest {who}: roles.spark.s3: `{}` / `{}` hold the object store's root credentials: Spark gets its own S3 user (other values), which the object store creates with access to its buckets only",
                link.access_key,
                link.secret_key
            ));
        }
    }
    let s3 = match &spec.s3 {
        Some(link) => Some(sd::SparkS3 {
            endpoint: typed(
                sd::HttpUrl::new(link.endpoint.as_str()),
                who,
                "roles.spark.s3.object_store",
            )?,
            access_key: typed(
                sd::AccessKey::new(secret(&link.access_key, who, "roles.spark.s3.access_key")?),
                who,
                "roles.spark.s3.access_key",
            )?,
            secret_key: typed(
                sd::Secret::new(secret(&link.secret_key, who, "roles.spark.s3.secret_key")?),
                who,
                "roles.spark.s3.secret_key",
            )?,
            path_style: true,
        }),
        None => None,
    };
    let auth = spec
        .spark_auth
        .as_ref()
        .ok_or_else(|| anyhow!("guest {who}: roles.spark.auth_secret is missing"))?;
    let auth_secret = typed(
        sd::Secret::new(secret(auth, who, "roles.spark.auth_secret")?),
        who,
        "roles.spark.auth_secret",
    )?;
    let abs = |p: &str| typed(sd::AbsPath::new(p), who, "roles.spark");
    Ok(Some(sd::Spark {
        home: abs(sd::defaults::SPARK_HOME)?,
        java_home: abs(sd::defaults::JAVA_HOME)?,
        log_dir: abs(sd::defaults::SPARK_LOG_DIR)?,
        expect_workers: spec.spark_master.as_ref().map_or(0, |m| m.expect_workers),
        master,
        worker,
        s3,
        auth_secret,
    }))
}

/// Spark's memory notation: whole GiB as `Ng`, else MiB as `Nm`.
fn spark_memory(size: Size) -> String {
    if size.bytes() % (1 << 30) == 0 {
        format!("{}g", size.gib())
    } else {
        format!("{}m", size.mib())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn lab() -> Lab {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/seed/lab.yaml");
        crate::model::lab::load(&p).expect("fixture lab loads")
    }

    #[test]
    fn object_store_guest_seed() {
        let s = for_guest(&lab(), "minio").unwrap();
        assert_eq!(s.hostname.as_str(), "minio");
        let os = s.roles.object_store.as_ref().unwrap();
        assert_eq!(os.root_user.as_str(), "labadmin");
        assert_eq!(os.root_password.expose(), "correct-horse-battery");
        let buckets: Vec<_> = os.buckets.iter().map(|b| b.as_str()).collect();
        assert_eq!(buckets, ["warehouse", "spark-events"]);
        let ports: Vec<u16> = s.firewall.open.iter().map(|p| p.port.get()).collect();
        assert_eq!(ports, [9000, 9001]);
        assert!(s.roles.spark.is_none());
        assert_eq!(s.ssh.authorized_keys.len(), 1);
        assert_eq!(s.peers.len(), 2);
    }

    #[test]
    fn spark_guest_seed_points_at_addresses() {
        let s = for_guest(&lab(), "devlab").unwrap();
        let sp = s.roles.spark.as_ref().unwrap();
        assert_eq!(sp.master.as_ref().unwrap().host.as_str(), "192.168.1.100");
        let w = sp.worker.as_ref().unwrap();
        assert_eq!(w.master_url.to_string(), "spark://192.168.1.100:7077");
        assert_eq!(sp.expect_workers, 1);
        let s3 = sp.s3.as_ref().unwrap();
        assert_eq!(s3.endpoint.to_string(), "http://192.168.1.200:9000");
        assert_eq!(s3.access_key.as_str(), "spark");
        assert_eq!(s3.secret_key.expose(), "spark-s3-secret-key");
        assert_eq!(sp.auth_secret.expose(), "spark-cluster-secret");
        let ports: Vec<u16> = s.firewall.open.iter().map(|p| p.port.get()).collect();
        assert_eq!(ports, [7077, 8080, 8081]);
    }

    /// The root credentials never leave the object-store guest: a Spark-only
    /// guest's seed holds Spark's own user and secrets, nothing of root's.
    #[test]
    fn spark_only_seed_holds_no_root_credentials() {
        let s = for_guest(&lab(), "devlab").unwrap();
        assert!(s.roles.object_store.is_none());
        let text = s.to_yaml();
        for root in ["labadmin", "correct-horse-battery"] {
            assert!(
                !text.contains(root),
                "devlab's seed holds {root:?}:\n{text}"
            );
        }
        assert!(text.contains("spark-s3-secret-key") && text.contains("spark-cluster-secret"));
    }

    /// The object store's seed lists Spark's user with its policy and the
    /// store's buckets; the store creates it.
    #[test]
    fn object_store_seed_lists_the_spark_user() {
        let s = for_guest(&lab(), "minio").unwrap();
        let users = &s.roles.object_store.as_ref().unwrap().users;
        assert_eq!(users.len(), 1);
        let u = &users[0];
        assert_eq!(u.access_key.as_str(), "spark");
        assert_eq!(u.secret_key.expose(), "spark-s3-secret-key");
        assert_eq!(u.policy.as_str(), "imgbuild-spark-devlab");
        let b: Vec<_> = u.buckets.iter().map(|b| b.as_str()).collect();
        assert_eq!(b, ["warehouse", "spark-events"]);
    }

    /// Other references holding the root values are refused, without
    /// quoting them.
    #[test]
    fn spark_user_with_root_values_is_refused() {
        let mut l = lab();
        let dev = l
            .guests
            .iter_mut()
            .find(|g| g.name.as_str() == "devlab")
            .unwrap();
        let s3 = dev.roles.spark.as_mut().unwrap().s3.as_mut().unwrap();
        s3.access_key = SecretRef::File(l.path.parent().unwrap().join("root_user"));
        let e = format!("{:#}", for_guest(&l, "devlab").unwrap_err());
        assert!(e.contains("root credentials"), "{e}");
        assert!(
            !e.contains("labadmin") && !e.contains("correct-horse"),
            "{e}"
        );
    }

    /// Workers on other guests take their master's secret; guests sharing
    /// one S3 user give the object store one entry.
    #[test]
    fn scaleout_workers_share_the_master_secret_and_one_user() {
        std::env::set_var("MINIO_ROOT_USER", "scaleadmin");
        std::env::set_var("MINIO_ROOT_PASSWORD", "scale-root-password");
        std::env::set_var("SPARK_S3_ACCESS_KEY", "spark");
        std::env::set_var("SPARK_S3_SECRET_KEY", "spark-s3-secret-key");
        std::env::set_var("SPARK_AUTH_SECRET", "spark-cluster-secret");
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let text = std::fs::read_to_string(repo.join("lab/scaleout.yaml")).unwrap();
        let key = repo.join("tests/fixtures/seed/admin.pub");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("scaleout.yaml");
        std::fs::write(
            &p,
            text.replace("~/.ssh/id_ed25519.pub", key.to_str().unwrap()),
        )
        .unwrap();
        let l = crate::model::lab::load(&p).expect("scaleout lab loads");
        let w = for_guest(&l, "spark-worker2").unwrap();
        assert_eq!(
            w.roles.spark.as_ref().unwrap().auth_secret.expose(),
            "spark-cluster-secret"
        );
        // Every pool member creates the user (idempotently): any of them may be
        // the first up, and MinIO's IAM is cluster-wide.
        for m in ["minio1", "minio4"] {
            let users = for_guest(&l, m).unwrap().roles.object_store.unwrap().users;
            assert_eq!(users.len(), 1, "{m}");
            assert_eq!(users[0].policy.as_str(), "imgbuild-spark-spark-master");
        }
    }

    /// Across guests: one S3 user has one secret, and a worker uses its
    /// master's cluster secret; both errors name the field and the place.
    #[test]
    fn scaleout_mismatched_spark_secrets_are_located() {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let key = repo.join("tests/fixtures/seed/admin.pub");
        let text = std::fs::read_to_string(repo.join("lab/scaleout.yaml"))
            .unwrap()
            .replace("~/.ssh/id_ed25519.pub", key.to_str().unwrap())
            .replacen(
                "s3: {object_store: minio2, access_key: env:SPARK_S3_ACCESS_KEY, secret_key: env:SPARK_S3_SECRET_KEY}",
                "s3: {object_store: minio2, access_key: env:SPARK_S3_ACCESS_KEY, secret_key: env:OTHER_SECRET}",
                1,
            )
            .replacen(
                "        worker: {master: spark-master, cores: 7, memory: 28GiB}\n        s3: {object_store: minio1,",
                "        worker: {master: spark-master, cores: 7, memory: 28GiB}\n        auth_secret: env:WORKER_OWN_SECRET\n        s3: {object_store: minio1,",
                1,
            );
        let e = format!(
            "{:#}",
            crate::model::lab::from_text(Path::new("scaleout.yaml"), &text).unwrap_err()
        );
        assert!(
            e.contains("guests.spark-worker2.roles.spark.s3.secret_key: `env:OTHER_SECRET` differs from the secret_key guest `spark-master` gives"),
            "{e}"
        );
        assert!(
            e.contains("guests.spark-worker1.roles.spark.auth_secret: `env:WORKER_OWN_SECRET` differs from the secret of this worker's master `spark-master`"),
            "{e}"
        );
        assert!(e.contains("scaleout.yaml:"), "{e}");
    }

    #[test]
    fn seed_is_deterministic_and_unknown_guest_fails() {
        let l = lab();
        assert_eq!(
            for_guest(&l, "minio").unwrap().instance_id(),
            for_guest(&l, "minio").unwrap().instance_id()
        );
        let e = for_guest(&l, "nope").unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }

    /// Each open port of a seed's firewall with the sources it is open to.
    fn open_ports(s: &Seed) -> Vec<(u16, Vec<String>)> {
        s.firewall
            .open
            .iter()
            .map(|p| (p.port.get(), p.from.iter().map(|a| a.to_string()).collect()))
            .collect()
    }

    #[test]
    fn metrics_port_only_from_the_monitoring_addresses() {
        let mut l = lab();
        let m = crate::model::metrics::Metrics {
            port: crate::model::types::Port::of(9100),
            allow: vec!["192.168.1.50".parse().unwrap()],
            object_store: crate::model::metrics::ObjectStoreAuth::Public,
        };
        for g in &mut l.guests {
            g.metrics = Some(m.clone());
        }
        let s = for_guest(&l, "minio").unwrap();
        let open = open_ports(&s);
        assert_eq!(
            open,
            [
                (9000, vec![]),
                (9001, vec![]),
                (9100, vec!["192.168.1.50".to_string()])
            ]
        );
        let ne = &s.roles.metrics.as_ref().unwrap().node_exporter;
        assert_eq!(ne.port.get(), 9100);
        assert_eq!(
            s.roles.metrics.as_ref().unwrap().object_store_auth,
            imgbuild_seed::metrics::ObjectStoreAuth::Public
        );
        // A lab without `metrics:` gives the same seed (and instance id) as before.
        assert!(for_guest(&lab(), "minio").unwrap().roles.metrics.is_none());
    }

    #[test]
    fn monitoring_guest_seed_lists_the_lab_targets() {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/validate/ok/homelab-monitoring.yaml");
        let l = crate::model::lab::load(&p).expect("fixture lab loads");
        let s = for_guest(&l, "mon").unwrap();
        let m = s.roles.monitoring.as_ref().expect("the monitoring role");
        let t: Vec<(&str, String, &str)> = m
            .targets
            .iter()
            .map(|t| {
                (
                    t.job.as_str(),
                    format!("{}:{}", t.host, t.port),
                    t.guest.as_str(),
                )
            })
            .collect();
        assert_eq!(
            t,
            [
                ("node", "192.168.1.200:9100".into(), "minio"),
                ("minio-cluster", "192.168.1.200:9000".into(), "minio"),
                ("minio-node", "192.168.1.200:9000".into(), "minio"),
                ("node", "192.168.1.100:9100".into(), "devlab"),
                ("spark-master", "192.168.1.100:8080".into(), "devlab"),
                ("spark-worker", "192.168.1.100:8081".into(), "devlab"),
                ("node", "192.168.1.50:9100".into(), "mon"),
            ]
        );
        assert_eq!(
            (
                m.retention.as_str(),
                m.scrape_interval.as_str(),
                m.alert_for.as_str()
            ),
            ("30d", "30s", "5m")
        );
        assert_eq!(m.lab.as_str(), "homelab-monitoring");
        let fs: Vec<&str> = m.filesystems.iter().map(|f| f.as_str()).collect();
        assert_eq!(fs, ["/", "/var/lib/minio"]);
        let masters: Vec<(&str, u32)> = m
            .spark_masters
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        assert_eq!(masters, [("devlab", 1)]);
        assert!(m.object_store_token.is_none());
        // The node exporter is open to the monitoring guest only; Prometheus to the network.
        let open = open_ports(&s);
        assert_eq!(
            open,
            [(9100, vec!["192.168.1.50".to_string()]), (9090, vec![])]
        );
    }

    #[test]
    fn monitoring_guest_gets_the_object_stores_bearer_token_by_reference() {
        use crate::model::metrics::ObjectStoreAuth;
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/validate/ok/homelab-monitoring.yaml");
        let mut l = crate::model::lab::load(&p).expect("fixture lab loads");
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        let jwt = "eyJhbGciOiJIUzUxMiJ9.eyJzdWIiOiJtb25pdG9yIn0.c2lnbmF0dXJl";
        std::fs::write(&token, format!("{jwt}\n")).unwrap();
        l.metrics.as_mut().unwrap().object_store =
            ObjectStoreAuth::BearerToken(SecretRef::File(token.clone()));
        let s = for_guest(&l, "mon").unwrap();
        let m = s.roles.monitoring.as_ref().unwrap();
        assert_eq!(m.object_store_token.as_ref().unwrap().expose(), jwt);
        let bearer: Vec<&str> = m
            .targets
            .iter()
            .filter(|t| t.bearer)
            .map(|t| t.job.as_str())
            .collect();
        assert_eq!(bearer, ["minio-cluster", "minio-node"]);
        // Only the monitoring guest carries it.
        assert!(!for_guest(&l, "devlab")
            .map(|s| s.to_yaml().contains(jwt))
            .unwrap_or(false));
        // A token that is no JWT is refused naming the field, never echoed.
        std::fs::write(&token, "not a token at all\n").unwrap();
        let e = format!("{:#}", for_guest(&l, "mon").unwrap_err());
        assert!(e.contains("metrics.object_store.token"), "{e}");
        assert!(!e.contains("not a token"), "{e}");
    }

    #[test]
    fn spark_memory_notation() {
        assert_eq!(spark_memory(Size::from_bytes(6 << 30)), "6g");
        assert_eq!(spark_memory(Size::from_bytes(1536 << 20)), "1536m");
    }
}
