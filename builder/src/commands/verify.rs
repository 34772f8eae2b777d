//! `imgbuild verify`: the lab's verification step against the local target
//! (from inside the lab's network namespace) or Proxmox (straight from this
//! machine to the lab's addresses). A table by default, `--json` for CI;
//! exit 1 naming every failed check.

use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::commands::up::LabArgs;
use crate::target::local;
use crate::verify::{self, Access};

/// Where the lab's guests run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetKind {
    /// `imgbuild up` on this machine.
    Local,
    /// `imgbuild deploy` on the lab's Proxmox VE (guests reachable from here).
    Proxmox,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub at: LabArgs,

    /// Which target runs the guests.
    #[arg(long, value_enum, default_value_t = TargetKind::Local)]
    pub target: TargetKind,

    /// The private key to log in with (default: beside the lab's first authorized key file).
    #[arg(short = 'i', long, value_name = "FILE")]
    pub identity: Option<PathBuf>,

    /// Print the results as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let lab = crate::model::lab::load(&args.at.lab)?;
    let netns = match args.target {
        TargetKind::Local => Some(local::locate(&lab, &args.at.state_dir)?.1),
        TargetKind::Proxmox => None,
    };
    let key = match &args.identity {
        Some(k) => k.clone(),
        None => super::ssh::lab_key(&lab)?,
    };
    let access = Access { netns, key };
    let json = args.json;
    let results = verify::run(&lab, &access, &mut |c| {
        if !json {
            println!(
                "{:<4} {:<10} {:<36} {:>6.1}s  {}",
                if c.ok { "ok" } else { "FAIL" },
                c.guest,
                c.check,
                c.secs,
                c.detail
            );
        } else {
            eprintln!(
                "verify: {} {}: {}",
                c.guest,
                c.check,
                if c.ok { "ok" } else { "FAILED" }
            );
        }
    });
    let failed: Vec<String> = results
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}: {}", c.guest, c.check, c.detail))
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "ok": failed.is_empty(),
                "checks": results,
            }))?
        );
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} checks failed:\n  {}",
            failed.len(),
            results.len(),
            failed.join("\n  ")
        );
    }
    if !json {
        println!("all {} checks passed", results.len());
    }
    Ok(())
}
