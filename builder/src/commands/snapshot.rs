//! `imgbuild snapshot`: takes a labelled snapshot of this lab's guests and
//! prunes this lab's snapshots of that label beyond `--keep` (the way
//! cv4pve-autosnap's `snap --label daily --keep 7` does); with
//! `--install-timer SCHEDULE` it writes and enables a systemd timer on this
//! machine that runs exactly that.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::deploy::{runtime, ConnArgs};
use crate::diag::BadInput;
use crate::model::lab::{self, Lab};
use crate::resolve::{self, Topology};
use crate::target::proxmox::snapshot::{self, GuestRef};
use crate::target::proxmox::{self, api::Api, params::Params, state::Resource};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Guests to snapshot (default: every guest of the lab that is deployed).
    #[arg(value_name = "GUEST")]
    pub guests: Vec<String>,

    /// The lab file.
    #[arg(long, value_name = "FILE", default_value = "lab/homelab.yaml")]
    pub lab: PathBuf,

    /// Label of the snapshot: `imgbuild-<label>-<UTC time>` (default `manual`,
    /// or the schedule's name with --install-timer, e.g. `daily`).
    #[arg(long, value_name = "LABEL")]
    pub label: Option<String>,

    /// Keep this many of this lab's snapshots with the label (per guest);
    /// older ones are deleted. Others' snapshots are never touched.
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,

    /// Instead of snapshotting now: install a systemd timer (OnCalendar=
    /// SCHEDULE, e.g. `daily`, `*-*-* 03:00`) that runs this command.
    #[arg(long, value_name = "SCHEDULE")]
    pub install_timer: Option<String>,

    /// With --install-timer: a user unit (~/.config/systemd/user, systemctl --user).
    #[arg(long, requires = "install_timer")]
    pub user: bool,

    /// With --install-timer: write the units here instead of the systemd directory.
    #[arg(long, value_name = "DIR", requires = "install_timer")]
    pub unit_dir: Option<PathBuf>,

    /// With --install-timer: write the units only (no daemon-reload, no enable).
    #[arg(long, requires = "install_timer")]
    pub no_enable: bool,

    /// Print what was taken and pruned as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub conn: ConnArgs,
}

pub fn run(args: Args) -> Result<()> {
    let lab = lab::load(&args.lab)?;
    let topo = resolve::resolve(&lab);
    if let Some(schedule) = &args.install_timer {
        return install_timer(&args, &lab, &topo, schedule);
    }
    let label = args.label.clone().unwrap_or_else(|| "manual".into());
    if let Err(m) = snapshot::check_label(&label) {
        return Err(BadInput::whole_file("--label", "label", m).into());
    }
    check_names(&lab, &args.guests)?;
    let ep = proxmox::endpoint(&lab, args.conn.insecure_skip_tls_verify)?;
    runtime()?.block_on(async {
        let api = Api::new(&ep)?;
        let found = deployed(&api, &topo, &args.guests).await?;
        let mut report = Vec::new();
        let mut errors = Vec::new();
        let why = match args.keep {
            Some(k) => format!("{label} snapshot (keep {k})"),
            None => format!("{label} snapshot"),
        };
        for g in &found {
            match snapshot::take_and_prune(&api, &topo.name, g, &label, &why, args.keep).await {
                Ok((taken, pruned)) => {
                    eprintln!("{}: snapshot {taken} taken", g.name);
                    for p in &pruned {
                        eprintln!("{}: snapshot {p} deleted (beyond --keep)", g.name);
                    }
                    report.push(serde_json::json!({"guest": g.name, "vmid": g.vmid, "taken": taken, "pruned": pruned}));
                }
                Err(e) => errors.push(format!("{}: {e:#}", g.name)),
            }
        }
        if args.json {
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &serde_json::json!({"snapshots": report, "errors": errors})
                )?
            );
        }
        if !errors.is_empty() {
            bail!("snapshot failed:\n  - {}", errors.join("\n  - "));
        }
        Ok(())
    })
}

/// Every name must be a guest of the lab (bad input otherwise).
pub(crate) fn check_names(lab: &Lab, names: &[String]) -> Result<()> {
    for n in names {
        if lab.guest(n).is_none() {
            let have: Vec<&str> = lab.guests.iter().map(|g| g.name.as_str()).collect();
            return Err(BadInput::whole_file(
                &lab.path,
                "guests",
                format!("no guest {n:?} in the lab; it has: {}", have.join(", ")),
            )
            .into());
        }
    }
    Ok(())
}

/// This lab's deployed guests among `names` (all of the lab's when empty),
/// as Proxmox reports them now. A named guest that is not deployed (or is
/// not this lab's) is an error.
pub(crate) async fn deployed(
    api: &Api,
    topo: &Topology,
    names: &[String],
) -> Result<Vec<GuestRef>> {
    let all: Vec<Resource> = api
        .get("/cluster/resources", &Params::new().set("type", "vm"))
        .await
        .context("listing the cluster's guests")?;
    let mut out = Vec::new();
    for spec in &topo.guests {
        if !names.is_empty() && !names.contains(&spec.name) {
            continue;
        }
        match all.iter().find(|r| r.vmid == spec.vmid) {
            Some(r) if r.is_ours(&topo.name) => out.push(GuestRef::new(
                spec,
                &r.node,
                r.kind().unwrap_or(spec.kind),
                r.vmid,
            )),
            Some(_) if !names.is_empty() => bail!(
                "vmid {} is not lab {}'s guest {}; not touching it",
                spec.vmid,
                topo.name,
                spec.name
            ),
            None if !names.is_empty() => bail!(
                "{} (vmid {}) is not deployed; run `imgbuild deploy` first",
                spec.name,
                spec.vmid
            ),
            _ => {}
        }
    }
    Ok(out)
}

/// The unit files of a snapshot timer: (name stem, service, timer).
pub fn render_units(
    exe: &Path,
    lab_file: &Path,
    lab: &str,
    label: &str,
    keep: Option<usize>,
    schedule: &str,
    env_file: &str,
) -> (String, String, String) {
    let stem = format!("imgbuild-snapshot-{lab}-{label}");
    let keep_arg = keep.map(|k| format!(" --keep {k}")).unwrap_or_default();
    let keep_text = keep.map(|k| format!(", keep {k}")).unwrap_or_default();
    let service = format!(
        "# Written by `imgbuild snapshot --install-timer`; rewrite it the same way.\n\
         [Unit]\n\
         Description=imgbuild: {label} snapshots of lab {lab}{keep_text}\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         # IMGBUILD_PVE_TOKEN=... here (mode 0600) when the lab reads its token from the environment.\n\
         EnvironmentFile=-{env_file}\n\
         ExecStart=\"{}\" snapshot --lab \"{}\" --label {label}{keep_arg}\n\
         NoNewPrivileges=yes\n\
         PrivateTmp=yes\n",
        exe.display(),
        lab_file.display(),
    );
    let timer = format!(
        "# Written by `imgbuild snapshot --install-timer`.\n\
         [Unit]\n\
         Description=imgbuild: {label} snapshots of lab {lab} ({schedule})\n\
         \n\
         [Timer]\n\
         OnCalendar={schedule}\n\
         Persistent=true\n\
         RandomizedDelaySec=5min\n\
         \n\
         [Install]\n\
         WantedBy=timers.target\n"
    );
    (stem, service, timer)
}

fn install_timer(args: &Args, lab: &Lab, topo: &Topology, schedule: &str) -> Result<()> {
    if schedule.trim().is_empty()
        || schedule
            .chars()
            .any(|c| c.is_control() || c == '"' || c == '\\' || c == '%')
    {
        return Err(BadInput::whole_file(
            "--install-timer",
            "schedule",
            "a systemd calendar expression on one line, e.g. daily, weekly, \"*-*-* 03:00\"",
        )
        .into());
    }
    let label = match &args.label {
        Some(l) => l.clone(),
        None if snapshot::check_label(schedule).is_ok() => schedule.to_string(),
        None => "scheduled".into(),
    };
    if let Err(m) = snapshot::check_label(&label) {
        return Err(BadInput::whole_file("--label", "label", m).into());
    }
    let exe = std::env::current_exe().context("finding the imgbuild executable")?;
    let lab_file = std::fs::canonicalize(&args.lab)
        .with_context(|| format!("resolving {}", args.lab.display()))?;
    let (dir, env_file) = match (&args.unit_dir, args.user) {
        (Some(d), true) => (d.clone(), format!("%h/.config/imgbuild/{}.env", topo.name)),
        (Some(d), false) => (d.clone(), format!("/etc/imgbuild/{}.env", topo.name)),
        (None, true) => {
            let home = std::env::var_os("HOME").context("HOME is not set")?;
            (
                PathBuf::from(home).join(".config/systemd/user"),
                format!("%h/.config/imgbuild/{}.env", topo.name),
            )
        }
        (None, false) => (
            PathBuf::from("/etc/systemd/system"),
            format!("/etc/imgbuild/{}.env", topo.name),
        ),
    };
    let (stem, service, timer) = render_units(
        &exe, &lab_file, &topo.name, &label, args.keep, schedule, &env_file,
    );
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let svc_path = dir.join(format!("{stem}.service"));
    let tmr_path = dir.join(format!("{stem}.timer"));
    crate::fsutil::write_atomic(&svc_path, service.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", svc_path.display()))?;
    crate::fsutil::write_atomic(&tmr_path, timer.as_bytes(), 0o644)
        .with_context(|| format!("writing {}", tmr_path.display()))?;
    eprintln!("wrote {} and {}", svc_path.display(), tmr_path.display());
    if !args.no_enable {
        let scope: &[&str] = if args.user { &["--user"] } else { &[] };
        for step in [
            vec!["daemon-reload"],
            vec!["enable", "--now", &format!("{stem}.timer")],
        ] {
            let st = Command::new("systemctl")
                .args(scope)
                .args(&step)
                .status()
                .context("running systemctl")?;
            if !st.success() {
                bail!(
                    "systemctl {} {} failed ({st}); the unit files are written",
                    scope.join(" "),
                    step.join(" ")
                );
            }
        }
        eprintln!("enabled {stem}.timer (systemctl list-timers shows its next run)");
    }
    if lab.proxmox.token.to_string().starts_with("env:") {
        eprintln!(
            "note: the lab reads its API token from the environment: put IMGBUILD_PVE_TOKEN=... into {env_file} (mode 0600)"
        );
    }
    println!(
        "{}\n{}\n# without systemd, a cron line does the same:\n# 0 3 * * * \"{}\" snapshot --lab \"{}\" --label {label}{}",
        svc_path.display(),
        tmr_path.display(),
        exe.display(),
        lab_file.display(),
        args.keep.map(|k| format!(" --keep {k}")).unwrap_or_default()
    );
    Ok(())
}
