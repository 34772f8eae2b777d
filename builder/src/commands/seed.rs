//! `imgbuild seed`: one guest's seed, delivered the way its kind receives it:
//! the YAML document itself, a NoCloud `cidata` ISO (VMs), or a copy of a baked
//! template with the seed inside (containers). Every output is 0600: seeds
//! carry the guest's credentials. `deploy` uses the same functions.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::bake::personalize;
use crate::cidata;
use crate::model::lab;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The seed document (/etc/imgbuild/seed.yaml in the guest).
    Yaml,
    /// A NoCloud `cidata` ISO: meta-data, user-data, network-config and imgbuild/seed.yaml.
    Cidata,
    /// A copy of --template with the seed added at /etc/imgbuild/seed.yaml.
    Template,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The lab file.
    #[arg(long, value_name = "FILE", default_value = "lab/homelab.yaml")]
    pub lab: PathBuf,

    /// The guest whose seed to write.
    #[arg(long, value_name = "NAME")]
    pub guest: String,

    /// What to write.
    #[arg(long, value_enum, default_value_t = Format::Yaml)]
    pub format: Format,

    /// The baked LXC template to personalize (with --format template).
    #[arg(long, value_name = "FILE", required_if_eq("format", "template"))]
    pub template: Option<PathBuf>,

    /// Output file (written atomically, mode 0600). Seeds hold secrets, so
    /// they are never printed.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,

    /// With --format cidata: the VM's NIC MAC address (e.g. 52:54:00:12:34:56).
    /// network-config then matches the NIC by it, as Proxmox's own cloud-init
    /// does; without it, by the name glob `e*`, which only netplan honours
    /// (cloud-init's networkd renderer uses the entry's id as the name).
    #[arg(long, value_name = "MAC", value_parser = parse_mac)]
    pub mac: Option<String>,
}

/// A MAC address: six two-digit hex groups separated by colons.
fn parse_mac(s: &str) -> std::result::Result<String, String> {
    let groups: Vec<&str> = s.split(':').collect();
    if groups.len() == 6
        && groups
            .iter()
            .all(|g| g.len() == 2 && g.chars().all(|c| c.is_ascii_hexdigit()))
    {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(format!(
            "{s:?} is no MAC address (want six hex pairs like 52:54:00:12:34:56)"
        ))
    }
}

pub fn run(args: Args) -> Result<()> {
    let lab = lab::load(&args.lab)?;
    let Some(guest) = lab.guest(&args.guest) else {
        let names: Vec<_> = lab.guests.iter().map(|g| g.name.as_str()).collect();
        return Err(crate::diag::BadInput::whole_file(
            &args.lab,
            "guests",
            format!(
                "no guest named {:?}; the lab has: {}",
                args.guest,
                names.join(", ")
            ),
        )
        .into());
    };
    let seed = crate::seed::for_guest(&lab, &args.guest)?;
    let yaml = seed.to_yaml();
    match args.format {
        Format::Yaml => crate::fsutil::write_atomic(&args.out, yaml.as_bytes(), 0o600)?,
        Format::Cidata => {
            let files = cidata::for_guest(&lab, guest, &seed, args.mac.as_deref());
            cidata::write_iso(&files, &args.out)?;
        }
        Format::Template => {
            let Some(template) = &args.template else {
                bail!("--format template needs --template FILE");
            };
            personalize::personalize(template, yaml.as_bytes(), &args.out)?;
        }
    }
    eprintln!(
        "seed for {} (instance {}) written to {}",
        args.guest,
        &seed.instance_id()[..12],
        args.out.display()
    );
    println!("{}", args.out.display());
    Ok(())
}
