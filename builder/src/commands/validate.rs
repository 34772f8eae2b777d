//! `imgbuild validate`.

use anyhow::{bail, Result};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    bail!("`imgbuild validate` is not implemented yet")
}
