//! One module per subcommand: its clap `Args` and its `run`.

pub mod bake;
pub mod deploy;
pub mod destroy;
pub mod down;
pub mod fetch;
pub mod inventory;
pub mod lock;
pub mod logs;
pub mod plan;
pub mod pve_guest;
pub mod restore;
pub mod rollback;
pub mod seed;
pub mod snapshot;
pub mod snapshots;
pub mod ssh;
pub mod status;
pub mod up;
pub mod validate;
pub mod verify;

use anyhow::Result;
use clap::CommandFactory;

use crate::cli::{Cli, Command};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    let cache = cli.cache_dir();
    match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Plan(args) => plan::run(args),
        Command::Lock(args) => lock::run(args, &cache),
        Command::Fetch(args) => fetch::run(args, &cache),
        Command::Bake(args) => bake::run(args, &cache),
        Command::Seed(args) => seed::run(args),
        Command::Deploy(args) => deploy::run(args),
        Command::Destroy(args) => destroy::run(args),
        Command::Snapshot(args) => snapshot::run(args),
        Command::Snapshots(args) => snapshots::run(args),
        Command::Rollback(args) => rollback::run(args),
        Command::Restore(args) => restore::run(args),
        Command::Up(args) => up::run(args, &cache),
        Command::Status(args) => status::run(args),
        Command::Logs(args) => logs::run(args),
        Command::Ssh(args) => ssh::run(args),
        Command::Down(args) => down::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Inventory(args) => inventory::run(args),
        Command::PveGuest(args) => pve_guest::run(args),
        Command::LocalForward(args) => crate::target::local::forward::serve(args),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "imgbuild",
                &mut std::io::stdout(),
            );
            Ok(())
        }
    }
}
