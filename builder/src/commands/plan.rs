//! `imgbuild plan`.

use anyhow::{bail, Result};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> Result<()> {
    bail!("`imgbuild plan` is not implemented yet")
}
