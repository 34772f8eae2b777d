//! `imgbuild inventory`: the lab's guests for Ansible, as the old
//! Terraform + Ansible flow generated them: one group per role, each host's
//! address, root as the SSH user and the lab's key. `--format ansible` is a
//! YAML inventory file; `--format json` is Ansible's dynamic-inventory JSON
//! (what `ansible-inventory --list` prints), usable from a script;
//! `--format prometheus` is file-based service discovery for a Prometheus
//! the user already runs (see [`crate::scrape`]).

use std::collections::BTreeMap;

use anyhow::Result;
use serde_json::{json, Map, Value};

use crate::model::lab::Lab;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A YAML inventory file (`ansible-playbook -i FILE`).
    Ansible,
    /// Ansible's dynamic-inventory JSON.
    Json,
    /// Prometheus file_sd targets (`file_sd_configs: [{files: [FILE]}]`).
    Prometheus,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The lab file.
    #[arg(long, value_name = "FILE", default_value = "lab/homelab.yaml")]
    pub lab: std::path::PathBuf,

    #[arg(long, value_enum, default_value_t = Format::Ansible)]
    pub format: Format,
}

/// Role group -> guest names, in lab order.
fn groups(lab: &Lab) -> BTreeMap<&'static str, Vec<String>> {
    let mut g: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    for guest in &lab.guests {
        for r in guest.role_names() {
            g.entry(r).or_default().push(guest.name.as_str().into());
        }
        g.entry(match guest.kind {
            crate::model::lab::GuestKind::Vm => "vms",
            crate::model::lab::GuestKind::Lxc => "containers",
        })
        .or_default()
        .push(guest.name.as_str().into());
    }
    g
}

fn hostvars(lab: &Lab) -> Map<String, Value> {
    lab.guests
        .iter()
        .map(|g| {
            (
                g.name.as_str().to_string(),
                json!({
                    "ansible_host": g.address.to_string(),
                    "imgbuild_kind": g.kind.as_str(),
                    "imgbuild_vmid": g.vmid.get(),
                }),
            )
        })
        .collect()
}

fn all_vars(lab: &Lab) -> Value {
    let mut v = json!({"ansible_user": "root"});
    if let Ok(k) = super::ssh::lab_key(lab) {
        v["ansible_ssh_private_key_file"] = json!(k.display().to_string());
    }
    v
}

/// The YAML inventory's structure.
pub fn ansible(lab: &Lab) -> Value {
    let hosts: Map<String, Value> = hostvars(lab).into_iter().collect();
    let children: Map<String, Value> = groups(lab)
        .into_iter()
        .map(|(g, names)| {
            let h: Map<String, Value> = names.into_iter().map(|n| (n, json!({}))).collect();
            (g.to_string(), json!({"hosts": h}))
        })
        .collect();
    json!({"all": {"vars": all_vars(lab), "hosts": hosts, "children": children}})
}

/// Ansible's dynamic-inventory JSON.
pub fn dynamic(lab: &Lab) -> Value {
    let mut top = Map::new();
    let groups = groups(lab);
    top.insert(
        "all".into(),
        json!({"children": groups.keys().collect::<Vec<_>>(), "vars": all_vars(lab)}),
    );
    for (g, names) in groups {
        top.insert(g.into(), json!({"hosts": names}));
    }
    top.insert("_meta".into(), json!({"hostvars": hostvars(lab)}));
    Value::Object(top)
}

pub fn run(args: Args) -> Result<()> {
    let lab = crate::model::lab::load(&args.lab)?;
    match args.format {
        Format::Ansible => print!(
            "# Ansible inventory of {} (imgbuild inventory)\n{}",
            args.lab.display(),
            serde_yaml::to_string(&ansible(&lab))?
        ),
        Format::Json => println!("{}", serde_json::to_string_pretty(&dynamic(&lab))?),
        Format::Prometheus => {
            if lab.metrics.is_none() {
                anyhow::bail!(
                    "{}: the lab has no `metrics:` section, so no guest runs an exporter; add `metrics: {{allow: [MONITORING-ADDRESS]}}` and redeploy",
                    args.lab.display()
                );
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&crate::scrape::file_sd(&lab))?
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_by_role_and_kind_with_addresses() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/seed/lab.yaml");
        let lab = crate::model::lab::load(&p).unwrap();
        let d = dynamic(&lab);
        assert_eq!(d["object_store"]["hosts"], json!(["minio"]));
        assert_eq!(d["spark_master"]["hosts"], json!(["devlab"]));
        assert_eq!(d["containers"]["hosts"], json!(["minio"]));
        assert_eq!(
            d["_meta"]["hostvars"]["devlab"]["ansible_host"],
            "192.168.1.100"
        );
        assert_eq!(d["all"]["vars"]["ansible_user"], "root");
        let a = ansible(&lab);
        assert_eq!(a["all"]["hosts"]["minio"]["ansible_host"], "192.168.1.200");
        assert!(a["all"]["children"]["spark_worker"]["hosts"]["devlab"].is_object());
    }
}
