//! `imgbuild snapshots`: this lab's snapshots on its guests, with label and
//! age (snapshots that are not imgbuild's, or another lab's, are not listed).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;

use super::deploy::{runtime, ConnArgs};
use super::snapshot::{check_names, deployed};
use crate::model::lab;
use crate::resolve;
use crate::target::proxmox::{self, api::Api, snapshot};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Guests to list (default: every deployed guest of the lab).
    #[arg(value_name = "GUEST")]
    pub guests: Vec<String>,

    /// The lab file.
    #[arg(long, value_name = "FILE", default_value = "lab/homelab.yaml")]
    pub lab: PathBuf,

    /// JSON on stdout.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `3d 4h`, `5h 2m`, `40s`.
pub fn age(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else if m > 0 {
        format!("{m}m")
    } else {
        format!("{secs}s")
    }
}

pub fn run(args: Args) -> Result<()> {
    let lab = lab::load(&args.lab)?;
    let topo = resolve::resolve(&lab);
    check_names(&lab, &args.guests)?;
    let ep = proxmox::endpoint(&lab, args.conn.insecure_skip_tls_verify)?;
    runtime()?.block_on(async {
        let api = Api::new(&ep)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut rows = Vec::new();
        for g in deployed(&api, &topo, &args.guests).await? {
            let mut snaps: Vec<_> = snapshot::list(&api, &g)
                .await?
                .into_iter()
                .filter(|s| s.is_ours(&topo.name))
                .collect();
            snaps.sort_by(|a, b| a.name.cmp(&b.name));
            for s in snaps {
                let t = s.snaptime.unwrap_or(0);
                rows.push(serde_json::json!({
                    "guest": g.name, "vmid": g.vmid, "node": g.node,
                    "name": s.name, "label": s.label(), "snaptime": t,
                    "age_secs": now.saturating_sub(t),
                    "description": s.description,
                }));
            }
        }
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({"snapshots": rows}))?
            );
            return Ok(());
        }
        if rows.is_empty() {
            eprintln!(
                "no snapshots of lab {} (take one: imgbuild snapshot --label manual)",
                topo.name
            );
            return Ok(());
        }
        let mut table = vec![["GUEST", "VMID", "LABEL", "AGE", "SNAPSHOT"]
            .map(String::from)
            .to_vec()];
        for r in &rows {
            table.push(vec![
                r["guest"].as_str().unwrap_or("").to_string(),
                r["vmid"].to_string(),
                r["label"].as_str().unwrap_or("").to_string(),
                age(r["age_secs"].as_u64().unwrap_or(0)),
                r["name"].as_str().unwrap_or("").to_string(),
            ]);
        }
        let widths: Vec<usize> = (0..5)
            .map(|i| table.iter().map(|r| r[i].len()).max().unwrap_or(0))
            .collect();
        for r in &table {
            let line: Vec<String> = r
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
                .collect();
            println!("{}", line.join("  ").trim_end());
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages() {
        assert_eq!(super::age(40), "40s");
        assert_eq!(super::age(125), "2m");
        assert_eq!(super::age(3 * 3600 + 120), "3h 2m");
        assert_eq!(super::age(2 * 86_400 + 5 * 3600), "2d 5h");
    }
}
