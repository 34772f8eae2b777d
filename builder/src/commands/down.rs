//! `imgbuild down`: stop and remove everything `imgbuild up` created for the
//! lab (guests, forwards, namespace with bridge/TAPs/veths, disks, roots,
//! logs), nothing else. Running it again does nothing.

use anyhow::Result;

use crate::commands::up::LabArgs;
use crate::target::local;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub at: LabArgs,
}

pub fn run(args: Args) -> Result<()> {
    let r = local::down(&args.at.lab, &args.at.state_dir)?;
    if r.netns.is_none() && r.dir.is_none() && r.processes == 0 {
        eprintln!("down: nothing of {} is up here", args.at.lab.display());
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
            .map(|d| format!(", removed {}", d.display()))
            .unwrap_or_default()
    );
    Ok(())
}
