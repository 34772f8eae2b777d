//! From the lab to one guest's seed document: the only place the lab's
//! topology is turned into what a guest's `firstboot` agent applies. Secrets
//! are resolved here (and only here), so callers must write the result to
//! 0600 files and never log it.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use imgbuild_seed::Seed;
use serde_json::{json, Map, Value};

use crate::model::lab::{Guest, Lab};
use crate::model::types::Size;

/// Builds the seed of guest `name`, resolving its secret references.
pub fn for_guest(lab: &Lab, name: &str) -> Result<Seed> {
    let guest = lab
        .guest(name)
        .ok_or_else(|| anyhow!("guest {name:?} is not in {}", lab.path.display()))?;
    let doc = document(lab, guest)?;
    // The agent's own parser is the contract: whatever we render must pass it.
    let yaml = serde_yaml::to_string(&doc).context("rendering seed document")?;
    Seed::from_yaml(&yaml).map_err(|e| {
        // The error text may quote a field value; secrets are validated as
        // opaque strings by the agent's types, whose errors never echo them.
        anyhow!(
            "the seed for guest {name} is invalid: {}",
            crate::redact::scrub(&e.to_string())
        )
    })
}

fn document(lab: &Lab, guest: &Guest) -> Result<Value> {
    let peers: BTreeMap<String, String> = lab
        .guests
        .iter()
        .map(|g| (g.name.as_str().to_string(), g.address.to_string()))
        .collect();
    let open: Vec<Value> = guest
        .open_ports()
        .into_iter()
        .filter(|p| p.port.get() != 22) // the agent always opens SSH itself
        .map(|p| json!({"port": p.port.get(), "comment": p.purpose}))
        .collect();
    let mut roles = Map::new();
    if let Some(os) = &guest.roles.object_store {
        roles.insert("object_store".into(), object_store(lab, guest, os)?);
    }
    if let Some(spark) = &guest.roles.spark {
        roles.insert("spark".into(), spark_role(lab, guest, spark)?);
    }
    Ok(json!({
        "version": imgbuild_seed::SEED_VERSION,
        "hostname": guest.name.as_str(),
        "ssh": {"authorized_keys": lab.ssh.public_keys()},
        "firewall": {"open": open},
        "peers": peers,
        "roles": roles,
    }))
}

fn object_store(lab: &Lab, guest: &Guest, os: &crate::model::lab::ObjectStore) -> Result<Value> {
    let drives: Vec<String> = if os.drives_per_guest <= 1 {
        vec![os.data_dir.clone()]
    } else {
        (1..=os.drives_per_guest)
            .map(|i| format!("{}/drive{i}", os.data_dir))
            .collect()
    };
    let volumes = match &os.pool {
        None => json!(drives),
        Some(pool) => json!(distributed_volumes(lab, guest, pool, os)?),
    };
    let user = os.root_user.resolve().with_context(|| {
        format!(
            "guest {}: roles.object_store.root_user",
            guest.name.as_str()
        )
    })?;
    let password = os.root_password.resolve().with_context(|| {
        format!(
            "guest {}: roles.object_store.root_password",
            guest.name.as_str()
        )
    })?;
    Ok(json!({
        "flavor": os.flavor.as_str(),
        "volumes": volumes,
        "api_port": os.api_port.get(),
        "console_port": os.console_port.get(),
        "data_dir": os.data_dir,
        "log_dir": os.log_dir,
        "root_user": user,
        "root_password": password,
        "buckets": os.buckets,
    }))
}

/// MinIO's distributed form `http://minio{1...4}:9000/var/lib/minio/drive{1...2}`:
/// the pool's guests must be named `<prefix><n>` with consecutive numbers,
/// since MinIO expands hosts only by such ranges.
fn distributed_volumes(
    lab: &Lab,
    guest: &Guest,
    pool: &str,
    os: &crate::model::lab::ObjectStore,
) -> Result<String> {
    let members = lab.object_store_members(guest);
    let mut numbered: Vec<(String, u32)> = Vec::new();
    for m in &members {
        let name = m.name.as_str();
        let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            bail!("object-store pool {pool:?}: guest {name} must be named <prefix><number> (e.g. minio1) so MinIO can address the pool as minio{{1...N}}");
        }
        let (prefix, n) = name.split_at(name.len() - digits);
        numbered.push((prefix.to_string(), n.parse().unwrap_or(0)));
    }
    numbered.sort_by_key(|(_, n)| *n);
    let prefix = &numbered[0].0;
    let first = numbered[0].1;
    let last = numbered[numbered.len() - 1].1;
    let consecutive = numbered
        .iter()
        .enumerate()
        .all(|(i, (p, n))| p == prefix && *n == first + i as u32);
    if !consecutive {
        bail!("object-store pool {pool:?}: guests must share one prefix and be numbered consecutively (e.g. minio1..minio4)");
    }
    let drives = if os.drives_per_guest <= 1 {
        os.data_dir.clone()
    } else {
        format!("{}/drive{{1...{}}}", os.data_dir, os.drives_per_guest)
    };
    Ok(format!(
        "http://{prefix}{{{first}...{last}}}:{}{drives}",
        os.api_port.get()
    ))
}

fn spark_role(lab: &Lab, guest: &Guest, spark: &crate::model::lab::Spark) -> Result<Value> {
    let mut v = Map::new();
    if let Some(m) = &spark.master {
        // The address, not the name: Ubuntu maps the own host name to
        // 127.0.1.1, and a master bound there is unreachable from workers.
        v.insert(
            "master".into(),
            json!({"host": guest.address.to_string(), "port": m.port.get(), "ui_port": m.ui_port.get()}),
        );
        let workers = lab.spark_workers_of(guest.name.as_str()).len();
        v.insert("expect_workers".into(), json!(workers));
    }
    if let Some(w) = &spark.worker {
        let master = lab
            .guest(w.master.as_str())
            .ok_or_else(|| anyhow!("spark worker's master {} is not a guest", w.master.as_str()))?;
        let port = master
            .roles
            .spark
            .as_ref()
            .and_then(|s| s.master.as_ref())
            .map(|m| m.port.get())
            .ok_or_else(|| anyhow!("guest {} runs no spark master", w.master.as_str()))?;
        v.insert(
            "worker".into(),
            json!({
                "master_url": format!("spark://{}:{port}", master.address),
                "cores": w.cores.get(),
                "memory": spark_memory(w.memory),
                "ui_port": w.ui_port.get(),
            }),
        );
    }
    if let Some(s3) = &spark.s3 {
        let store = lab.guest(s3.object_store.as_str()).ok_or_else(|| {
            anyhow!(
                "spark s3 object store {} is not a guest",
                s3.object_store.as_str()
            )
        })?;
        let port = store
            .roles
            .object_store
            .as_ref()
            .map(|o| o.api_port.get())
            .ok_or_else(|| anyhow!("guest {} has no object_store role", store.name.as_str()))?;
        let who = guest.name.as_str();
        v.insert(
            "s3".into(),
            json!({
                "endpoint": format!("http://{}:{port}", store.address),
                "access_key": s3.access_key.resolve().with_context(|| format!("guest {who}: roles.spark.s3.access_key"))?,
                "secret_key": s3.secret_key.resolve().with_context(|| format!("guest {who}: roles.spark.s3.secret_key"))?,
                "path_style": true,
            }),
        );
    }
    Ok(Value::Object(v))
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
    use std::path::PathBuf;

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
        assert_eq!(s3.secret_key.expose(), "correct-horse-battery");
        let ports: Vec<u16> = s.firewall.open.iter().map(|p| p.port.get()).collect();
        assert_eq!(ports, [7077, 8080, 8081]);
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

    #[test]
    fn spark_memory_notation() {
        assert_eq!(spark_memory(Size::from_bytes(6 << 30)), "6g");
        assert_eq!(spark_memory(Size::from_bytes(1536 << 20)), "1536m");
    }
}
