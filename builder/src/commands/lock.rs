//! `imgbuild lock`.

use std::path::Path;

use anyhow::{bail, Result};

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args, _cache: &Path) -> Result<()> {
    bail!("`imgbuild lock` is not implemented yet")
}
