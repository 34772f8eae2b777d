//! `imgbuild ssh GUEST [CMD...]`: SSH into a guest of the lab on this machine
//! as root, from inside the lab's network namespace, with the lab's key
//! (the private half of the first `ssh.authorized_keys` file that has one).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{anyhow, Result};

use crate::commands::up::LabArgs;
use crate::model::lab::Lab;
use crate::target::local;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub at: LabArgs,

    /// The private key to log in with (default: the lab's key, see above).
    #[arg(short = 'i', long, value_name = "FILE")]
    pub identity: Option<PathBuf>,

    /// The guest.
    pub guest: String,

    /// A command to run instead of a login shell.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// The private key beside the first authorized public key file that has one.
pub fn lab_key(lab: &Lab) -> Result<PathBuf> {
    lab.ssh
        .authorized_keys
        .iter()
        .filter_map(|k| {
            let s = k.path.to_string_lossy();
            s.strip_suffix(".pub").map(PathBuf::from)
        })
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow!(
                "no private key beside the lab's authorized key files ({}); pass -i FILE",
                lab.ssh
                    .authorized_keys
                    .iter()
                    .map(|k| k.path.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// `ip netns exec NS ssh -i KEY root@ADDR` with host-key checking off (the
/// guests are new on every `up`) and batch mode.
pub fn ssh_command(netns: &str, key: &Path, addr: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", netns, "ssh"])
        .args(["-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"])
        .args(["-o", "LogLevel=ERROR", "-o", "IdentitiesOnly=yes"])
        .args(["-o", "ConnectTimeout=10"])
        .arg("-i")
        .arg(key)
        .arg(format!("root@{addr}"));
    c
}

pub fn run(args: Args) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let lab = crate::model::lab::load(&args.at.lab)?;
    let guest = super::logs::find_guest(&lab, &args.at.lab, &args.guest)?;
    let (_, netns) = local::locate(&lab, &args.at.state_dir)?;
    let key = match &args.identity {
        Some(k) => k.clone(),
        None => lab_key(&lab)?,
    };
    let mut c = ssh_command(&netns.name, &key, &guest.address.to_string());
    if !args.command.is_empty() {
        c.arg("--").args(&args.command);
    }
    Err(anyhow!("running ssh: {}", c.exec()))
}
