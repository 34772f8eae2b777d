//! `imgbuild validate`: load a lab and the image recipes, check everything,
//! print a one-line summary (or JSON). Bad input exits 2 with every problem.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::json;

use crate::diag::BadInput;
use crate::model;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The lab file to check.
    #[arg(long, value_name = "FILE", default_value = "lab/homelab.yaml")]
    pub lab: PathBuf,

    /// The directory of image recipes (`*.yaml`) that guests' `image:` names refer to.
    #[arg(long, value_name = "DIR", default_value = "images")]
    pub images: PathBuf,

    /// Print the result as JSON on stdout (problems too, as `diagnostics`).
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let loaded = match model::load_all(&args.lab, &args.images) {
        Ok(l) => l,
        Err(e) => {
            if let (true, Some(bad)) = (args.json, e.downcast_ref::<BadInput>()) {
                println!("{}", diagnostics_json(bad));
            }
            return Err(e);
        }
    };
    let lab = &loaded.lab;
    let vms = lab
        .guests
        .iter()
        .filter(|g| g.kind == model::lab::GuestKind::Vm)
        .count();
    let images = lab.images();
    if args.json {
        let v = json!({
            "ok": true,
            "lab": lab.path,
            "nodes": lab.proxmox.nodes.iter().map(|n| n.name.to_string()).collect::<Vec<_>>(),
            "guests": lab.guests.iter().map(|g| g.name.to_string()).collect::<Vec<_>>(),
            "images_used": images,
            "recipes": loaded.recipes.iter().map(|r| json!({"name": r.name, "path": r.path})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        let n = lab.proxmox.nodes.len();
        println!(
            "ok: {}: {} guest{} ({} vm, {} lxc) on {n} node{}; images {}; {} recipe{} in {}",
            lab.path.display(),
            lab.guests.len(),
            plural(lab.guests.len()),
            vms,
            lab.guests.len() - vms,
            plural(n),
            images.join(", "),
            loaded.recipes.len(),
            plural(loaded.recipes.len()),
            args.images.display()
        );
    }
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// `{"ok": false, "diagnostics": [{file, line, column, field, message}]}`.
pub fn diagnostics_json(bad: &BadInput) -> String {
    let d: Vec<_> = bad
        .0
        .iter()
        .map(|d| json!({"file": d.file, "line": d.line, "column": d.column, "field": d.field, "message": d.message}))
        .collect();
    serde_json::to_string_pretty(&json!({"ok": false, "diagnostics": d}))
        .expect("json values serialize")
}
