//! `imgbuild logs GUEST`: what a guest of the lab on this machine says,
//! without logging in by hand: its console log, then the firstboot agent's
//! status.json and journal (a container's read from its root; a VM's over
//! SSH with the lab's key from inside the lab's namespace).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::commands::up::LabArgs;
use crate::model::lab::{Guest, GuestKind, Lab};
use crate::target::local::{self, guest, state::LabDir};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub at: LabArgs,

    /// Lines of the console log to show (0: all).
    #[arg(short = 'n', long, default_value_t = 200)]
    pub lines: usize,

    /// The guest.
    pub guest: String,
}

/// The guest named `name`, or bad input listing the lab's guests.
pub fn find_guest<'a>(lab: &'a Lab, path: &Path, name: &str) -> Result<&'a Guest> {
    lab.guest(name).ok_or_else(|| {
        let names: Vec<_> = lab.guests.iter().map(|g| g.name.as_str()).collect();
        crate::diag::BadInput::whole_file(
            path,
            "guests",
            format!("no guest named {name:?}; the lab has: {}", names.join(", ")),
        )
        .into()
    })
}

pub fn run(args: Args) -> Result<()> {
    let lab = crate::model::lab::load(&args.at.lab)?;
    let g = find_guest(&lab, &args.at.lab, &args.guest)?;
    let labdir = LabDir::new(&args.at.state_dir, &lab.path)?;
    let dir = labdir.guest_dir(g.name.as_str());
    let console = guest::console_log(&dir);
    let text = std::fs::read(&console)
        .with_context(|| format!("{} was not started here (no {})", g.name, console.display()))?;
    let text = String::from_utf8_lossy(&text);
    let shown = if args.lines == 0 {
        text.to_string()
    } else {
        guest::tail(&text, args.lines)
    };
    println!("===== {}: console ({})\n{shown}", g.name, console.display());
    match g.kind {
        GuestKind::Lxc => {
            let root = dir.join("rootfs");
            let status = std::fs::read_to_string(root.join("var/lib/imgbuild/status.json"))
                .unwrap_or_else(|e| format!("(no status.json yet: {e})"));
            println!("===== {}: firstboot status.json\n{status}", g.name);
            let out = Command::new("journalctl")
                .arg("-D")
                .arg(root.join("var/log/journal"))
                .args(["--no-pager", "-o", "short-precise", "-b", "all"])
                .args(["-u", imgbuild_seed::UNIT_NAME, "-t", "imgbuild-firstboot"])
                .output();
            let journal = match out {
                Ok(o) => format!(
                    "{}{}",
                    String::from_utf8_lossy(&o.stdout),
                    String::from_utf8_lossy(&o.stderr)
                ),
                Err(e) => format!("(journalctl: {e}; install the package systemd)"),
            };
            println!("===== {}: firstboot journal\n{journal}", g.name);
        }
        GuestKind::Vm => {
            let (_, netns) = local::locate(&lab, &args.at.state_dir)?;
            let key = super::ssh::lab_key(&lab)?;
            let out = super::ssh::ssh_command(&netns.name, &key, &g.address.to_string())
                .arg(format!(
                    "cat /var/lib/imgbuild/status.json; echo; echo '===== {} journal'; \
                     journalctl -b --no-pager -o short-precise -u {}",
                    g.name,
                    imgbuild_seed::UNIT_NAME
                ))
                .output()
                .context("running ssh")?;
            println!(
                "===== {}: firstboot status.json (over SSH)\n{}{}",
                g.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    Ok(())
}
