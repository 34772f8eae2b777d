//! `imgbuild down`: stop and remove everything `imgbuild up` created for the
//! lab (guests, forwards, namespace with bridge/TAPs/veths, disks, roots,
//! logs), nothing else. The guests' data volumes stay (the next `up` mounts
//! them again) unless `--purge-data`. Running it again does nothing.

use anyhow::Result;

use crate::commands::up::LabArgs;
use crate::target::local;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub at: LabArgs,

    /// Also delete the guests' data volumes (the object store's buckets and
    /// objects). Without it they stay for the next `up`.
    #[arg(long)]
    pub purge_data: bool,
}

pub fn run(args: Args) -> Result<()> {
    let r = local::down(&args.at.lab, &args.at.state_dir, args.purge_data)?;
    let kept = || {
        for (guest, dir) in &r.data_kept {
            eprintln!(
                "down: kept {guest}'s data volume {} (`imgbuild down --purge-data` deletes it)",
                dir.display()
            );
        }
    };
    if r.netns.is_none() && r.dir.is_none() && r.processes == 0 {
        eprintln!("down: nothing of {} is up here", args.at.lab.display());
        kept();
        return Ok(());
    }
    eprintln!(
        "down: stopped {} process(es) of {} guest(s){}{}",
        r.processes,
        r.guests.len(),
        r.netns
            .map(|n| format!(", deleted network namespace {n}"))
            .unwrap_or_default(),
        r.dir
            .map(|d| if r.data_kept.is_empty() {
                format!(", removed {}", d.display())
            } else {
                format!(
                    ", removed everything in {} but its data volumes",
                    d.display()
                )
            })
            .unwrap_or_default()
    );
    kept();
    Ok(())
}
