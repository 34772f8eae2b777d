//! `imgbuild status`: the lab's guests on this machine as they are now
//! (running, ready, stopped), with their web UIs. Changes nothing.

use anyhow::Result;

use crate::commands::up::{print_rows, LabArgs};
use crate::target::local;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub at: LabArgs,

    /// Print the guests as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let lab = crate::model::lab::load(&args.at.lab)?;
    let (rows, up) = local::status(&lab, &args.at.state_dir)?;
    if !up && !args.json {
        eprintln!(
            "status: the lab {} is not up on this machine",
            args.at.lab.display()
        );
    }
    print_rows(&rows, args.json)
}
