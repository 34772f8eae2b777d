//! `firstboot`: the agent. A thin main over the library: parse arguments, find
//! and parse the seed, apply it, print the error chain, exit 0/1/2.
//!
//! Usage: `firstboot [--root DIR] [--seed FILE] [--check | --plan]`
//! - no flag: apply the seed unless its instance id already succeeded; with
//!   `--root DIR` other than `/`, only write accounts and files under DIR
//!   (no D-Bus, host name, units or checks: the host is never touched);
//! - `--check`: for `ExecCondition=`: exit 0 when there is work to do, 1 when
//!   the current seed was already applied or there is no seed (unit skipped);
//! - `--plan`: print the plan (secret-bearing files elided) to stdout.

use anyhow::{bail, Context, Result};
use firstboot::{accounts, apply, discover, plan, status, systemd, Seed};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

enum Mode {
    Apply,
    Check,
    Plan,
}

struct Args {
    root: PathBuf,
    seed: Option<PathBuf>,
    mode: Mode,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        root: PathBuf::from("/"),
        seed: None,
        mode: Mode::Apply,
    };
    let mut it = std::env::args_os().skip(1);
    while let Some(arg) = it.next() {
        match arg.to_str() {
            Some("--check") => a.mode = Mode::Check,
            Some("--plan") => a.mode = Mode::Plan,
            Some("--root") => a.root = it.next().context("--root needs a directory")?.into(),
            Some("--seed") => a.seed = Some(it.next().context("--seed needs a file")?.into()),
            Some("--help" | "-h") => {
                println!("usage: firstboot [--root DIR] [--seed FILE] [--check | --plan]");
                std::process::exit(0);
            }
            _ => bail!("unknown argument {arg:?} (try --help)"),
        }
    }
    Ok(a)
}

fn init_logging() {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter =
        EnvFilter::try_from_env("FIRSTBOOT_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // journald timestamps every line itself.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

/// Reads the seed's bytes (bounded): `--seed FILE`, else discovery under the root.
fn read_seed(args: &Args) -> Result<Option<(String, Vec<u8>)>> {
    if let Some(p) = &args.seed {
        let data = discover::read_bounded(p).with_context(|| format!("reading {}", p.display()))?;
        return Ok(Some((p.display().to_string(), data)));
    }
    Ok(discover::find_seed(&args.root)?.map(|(src, data)| (src.to_string(), data)))
}

fn parse_seed(source: &str, data: &[u8]) -> Result<Seed> {
    let text = std::str::from_utf8(data).map_err(|e| {
        anyhow::anyhow!(
            "{source}: the seed is not UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        )
    })?;
    Seed::from_yaml(text).map_err(|e| match e.location() {
        Some((line, col)) => anyhow::anyhow!("{source}:{line}:{col}: {e}"),
        None => anyhow::anyhow!("{source}: {e}"),
    })
}

/// A panic (a bug: no seed should cause one) is recorded in status.json as
/// a failure before the process ends, so the run is never left `running`.
fn record_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        status::interrupt(&format!("the agent panicked: {info}"), false);
        default(info);
    }));
}

/// SIGTERM (systemd stopping the unit or its start timeout), SIGINT and
/// SIGHUP end the run as `failed: interrupted ...` in status.json.
fn record_signals() -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("installing signal handlers")?;
    std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            let name = match sig {
                SIGTERM => "SIGTERM",
                SIGINT => "SIGINT",
                _ => "SIGHUP",
            };
            let reason = format!("interrupted: the agent received {name}");
            status::interrupt(&reason, true);
            tracing::error!("{reason}");
            std::process::exit(128 + sig);
        }
    });
    Ok(())
}

/// The last resort behind the per-step deadlines: if a call hangs past the
/// run's budget, record that and exit before systemd's timeout kills us.
fn watchdog() {
    std::thread::spawn(|| {
        std::thread::sleep(apply::RUN_BUDGET + Duration::from_secs(60));
        let reason = format!(
            "the run's deadline passed ({}s) while a step was still waiting",
            apply::RUN_BUDGET.as_secs()
        );
        status::interrupt(&reason, true);
        tracing::error!("{reason}");
        std::process::exit(1);
    });
}

fn main() -> ExitCode {
    init_logging();
    record_panics();
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    match args.mode {
        Mode::Check => check(&args),
        Mode::Plan => plan_only(&args),
        Mode::Apply => run(&args),
    }
}

fn check(args: &Args) -> ExitCode {
    match read_seed(args) {
        Ok(None) => {
            tracing::info!("no seed found: nothing to do");
            ExitCode::from(1)
        }
        // A seed that does not parse still runs, so status.json records why.
        Ok(Some((src, text))) => match parse_seed(&src, &text) {
            Ok(seed) => match firstboot::should_run(&args.root, &seed) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => {
                    tracing::info!(instance_id = %seed.instance_id(), "seed already applied: nothing to do");
                    ExitCode::from(1)
                }
                Err(e) => {
                    tracing::warn!("cannot read the applied marker, running anyway: {e:#}");
                    ExitCode::SUCCESS
                }
            },
            Err(_) => ExitCode::SUCCESS,
        },
        Err(e) => {
            tracing::warn!("{e:#}");
            ExitCode::SUCCESS
        }
    }
}

fn plan_only(args: &Args) -> ExitCode {
    let result = (|| -> Result<Option<String>> {
        let Some((src, text)) = read_seed(args)? else {
            return Ok(None);
        };
        let seed = parse_seed(&src, &text)?;
        let hosts = std::fs::read_to_string(firstboot::fsutil::under(&args.root, "/etc/hosts"))
            .unwrap_or_default();
        Ok(Some(format!(
            "instance_id {}\n{}",
            seed.instance_id(),
            plan::build(&seed, &hosts).render(false)
        )))
    })();
    match result {
        Ok(Some(p)) => {
            print!("{p}");
            ExitCode::SUCCESS
        }
        Ok(None) => {
            eprintln!("error: no seed found");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn record_failure(root: &Path, step: &str, source: Option<String>, e: &anyhow::Error) {
    let r = firstboot::status::Recorder::new(root, None, source, &[step.into()])
        .and_then(|mut r| r.fail(step, e));
    if let Err(e) = r {
        tracing::error!("cannot write status: {e:#}");
    }
}

fn run(args: &Args) -> ExitCode {
    if let Err(e) = record_signals() {
        tracing::warn!("{e:#}");
    }
    let (src, text) = match read_seed(args) {
        Ok(Some(s)) => s,
        Ok(None) => {
            let e = anyhow::anyhow!(
                "no seed: neither {} nor a cidata volume with {}",
                firstboot::SEED_PATH,
                firstboot::CIDATA_SEED_PATH
            );
            record_failure(&args.root, "seed", None, &e);
            eprintln!("error: step `seed` failed: {e:#}");
            return ExitCode::from(2);
        }
        Err(e) => {
            record_failure(&args.root, "seed", None, &e);
            eprintln!("error: step `seed` failed: {e:#}");
            return ExitCode::from(1);
        }
    };
    let seed = match parse_seed(&src, &text) {
        Ok(s) => s,
        Err(e) => {
            record_failure(&args.root, "seed", Some(src), &e);
            eprintln!("error: step `seed` failed: {e:#}");
            return ExitCode::from(2);
        }
    };
    match firstboot::should_run(&args.root, &seed) {
        Ok(false) => {
            tracing::info!(instance_id = %seed.instance_id(), "seed already applied: nothing to do");
            return ExitCode::SUCCESS;
        }
        Ok(true) => {}
        Err(e) => tracing::warn!("cannot read the applied marker, applying: {e:#}"),
    }
    if args.root != Path::new("/") {
        return prepare(args, &seed, &src);
    }
    watchdog();
    // A VM's object-store data disk: formatted if blank, mounted at the data dir.
    if let Err(e) = firstboot::volumes::prepare_for_seed(&args.root, &seed) {
        record_failure(&args.root, "data-volume", Some(src), &e);
        eprintln!("error: step `data-volume` failed: {e:#}");
        return ExitCode::from(1);
    }
    let mut sd = match systemd::DbusSystemd::connect() {
        Ok(s) => s,
        Err(e) => {
            record_failure(&args.root, "dbus", Some(src), &e);
            eprintln!("error: step `dbus` failed: {e:#}");
            return ExitCode::from(1);
        }
    };
    match apply::apply(&args.root, &seed, &src, &mut sd, &mut accounts::Shadow) {
        Ok(out) => {
            tracing::info!(changed = out.changed.len(), restarted = ?out.restarted, "firstboot finished");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// `--root DIR`: accounts and files under DIR only.
fn prepare(args: &Args, seed: &Seed, src: &str) -> ExitCode {
    let root = args.root.display();
    tracing::info!(
        "--root {root}: writing accounts and files under {root} only; no D-Bus, host name, units or checks"
    );
    let host = apply::Host::Offline;
    match apply::apply_on(&args.root, seed, src, host, &mut accounts::Shadow) {
        Ok(out) => {
            eprintln!(
                "prepared {root}: {} paths written under it; nothing on this host was started or changed \
                 (the guest enables and starts its services when it boots)",
                out.changed.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
