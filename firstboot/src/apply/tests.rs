//! Engine tests with the in-memory systemd and accounts on a scratch root.

use super::*;
use crate::accounts::MemAccounts;
use crate::status::{State, StepState};
use crate::systemd::MemSystemd;
use std::time::{Duration, Instant};

const SEED: &str = "version: 1\nhostname: box\nssh:\n  authorized_keys:\n    - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKZ2b0h1c2VyZm9ydGVzdHNvbmx5bm90 me\nfirewall:\n  open: [{port: 8080}]\n";

fn status(root: &Path) -> crate::status::Status {
    serde_json::from_slice(&std::fs::read(root.join("var/lib/imgbuild/status.json")).unwrap())
        .unwrap()
}

#[test]
fn applies_then_second_run_changes_nothing() {
    let d = tempfile::tempdir().unwrap();
    let seed = Seed::from_yaml(SEED).unwrap();
    let mut sd = MemSystemd::default();
    let first = apply(d.path(), &seed, "test", &mut sd, &mut MemAccounts).unwrap();
    assert!(first.changed.contains(&"/etc/nftables.conf".to_string()));
    assert_eq!(first.restarted, vec!["nftables.service", "ssh.service"]);
    assert!(!first.reloaded, "no unit files in the common role");
    assert!(
        d.path().join("etc/ssh/ssh_host_ed25519_key").exists(),
        "real ssh-keygen -A ran"
    );
    let st = status(d.path());
    assert_eq!(st.state, State::Ready);
    assert_eq!(st.instance_id.as_deref(), Some(seed.instance_id().as_str()));
    assert!(st
        .steps
        .iter()
        .all(|s| s.state == StepState::Done && s.duration_ms.is_some()));
    assert_eq!(
        status::applied_instance(d.path()).unwrap(),
        Some(seed.instance_id())
    );
    assert!(d
        .path()
        .join("var/lib/imgbuild/done")
        .join(seed.instance_id())
        .exists());

    let mut sd2 = MemSystemd::default();
    let second = apply(d.path(), &seed, "test", &mut sd2, &mut MemAccounts).unwrap();
    assert_eq!(
        second,
        Outcome::default(),
        "idempotent: nothing changed, nothing restarted"
    );
    assert_eq!(
        sd2.calls,
        vec![
            "hostname box",
            "enable nftables.service,ssh.service,apt-daily.timer,apt-daily-upgrade.timer",
            "start nftables.service",
            "start ssh.service",
            "start apt-daily.timer",
            "start apt-daily-upgrade.timer"
        ]
    );
}

#[test]
fn unit_files_trigger_reload_and_restart_once() {
    let d = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(format!(
        "{}/../seed/tests/fixtures/seeds/minio.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    // No buckets and no local server: stop before the checks by failing minio.
    let seed = Seed::from_yaml(&text).unwrap();
    let mut sd = MemSystemd {
        failing: vec!["minio.service".into()],
        ..Default::default()
    };
    let err = apply(d.path(), &seed, "test", &mut sd, &mut MemAccounts).unwrap_err();
    assert_eq!(err.step, "start:minio.service");
    assert!(err.to_string().contains("start:minio.service"), "{err}");
    assert!(sd.calls.contains(&"reload".to_string()));
    assert!(sd.calls.contains(&"restart minio.service".to_string()));
    let st = status(d.path());
    assert_eq!(st.state, State::Failed);
    assert_eq!(st.failed_step.as_deref(), Some("start:minio.service"));
    let failed = st
        .steps
        .iter()
        .find(|s| s.name == "start:minio.service")
        .unwrap();
    assert_eq!(failed.state, StepState::Failed);
    assert!(failed.error.as_deref().unwrap().contains("failed"));
    assert!(st
        .steps
        .iter()
        .any(|s| s.name == "check:minio-live" && s.state == StepState::Pending));
    assert_eq!(
        status::applied_instance(d.path()).unwrap(),
        None,
        "no marker after a failure"
    );
    let env = d.path().join("etc/default/minio");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&env).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o640);
    assert_eq!(
        meta.gid(),
        crate::accounts::gid(d.path(), "minio-user")
            .unwrap()
            .unwrap()
    );
    assert!(!std::fs::read_to_string(st_path(d.path()))
        .unwrap()
        .contains("change-me-please"));

    // "Power cut" and reboot: files are already in place, so the rerun neither
    // reloads nor restarts; it starts (idempotent) and gets further.
    let mut sd2 = MemSystemd {
        failing: vec!["minio.service".into()],
        ..Default::default()
    };
    let _ = apply(d.path(), &seed, "test", &mut sd2, &mut MemAccounts).unwrap_err();
    assert!(
        !sd2.calls.contains(&"reload".to_string()),
        "{:?}",
        sd2.calls
    );
    assert!(sd2.calls.contains(&"start minio.service".to_string()));
}

fn st_path(root: &Path) -> std::path::PathBuf {
    root.join("var/lib/imgbuild/status.json")
}

#[test]
fn changed_seed_means_a_new_instance() {
    let d = tempfile::tempdir().unwrap();
    let a = Seed::from_yaml(SEED).unwrap();
    let b = Seed::from_yaml(&SEED.replace("8080", "8081")).unwrap();
    apply(
        d.path(),
        &a,
        "test",
        &mut MemSystemd::default(),
        &mut MemAccounts,
    )
    .unwrap();
    assert!(crate::should_run(d.path(), &b).unwrap());
    assert!(!crate::should_run(d.path(), &a).unwrap());
    let out = apply(
        d.path(),
        &b,
        "test",
        &mut MemSystemd::default(),
        &mut MemAccounts,
    )
    .unwrap();
    assert_eq!(out.changed, vec!["/etc/nftables.conf"]);
    assert_eq!(out.restarted, vec!["nftables.service"]);
    assert!(
        crate::should_run(d.path(), &a).unwrap(),
        "A again after B is a deliberate re-run"
    );
}

#[test]
fn restarts_owed_by_a_failed_run_are_made_by_the_next_run_in_the_same_boot() {
    // Found by the e2e test: nftables failed after sshd_config.d was written,
    // the rerun saw the file unchanged, and sshd kept accepting passwords.
    let d = tempfile::tempdir().unwrap();
    let seed = Seed::from_yaml(SEED).unwrap();
    let mut sd = MemSystemd {
        failing: vec!["nftables.service".into()],
        ..Default::default()
    };
    let err = apply(d.path(), &seed, "test", &mut sd, &mut MemAccounts).unwrap_err();
    assert_eq!(err.step, "start:nftables.service");
    assert!(!sd.calls.iter().any(|c| c.contains("start ssh.service")));
    let owed = d.path().join(OWED_PATH.trim_start_matches('/'));
    assert!(std::fs::read_to_string(&owed)
        .unwrap()
        .contains("ssh.service\n"));

    // Same boot: the rerun restarts sshd although its file is unchanged.
    let mut sd2 = MemSystemd::default();
    let out = apply(d.path(), &seed, "test", &mut sd2, &mut MemAccounts).unwrap();
    assert!(out.changed.is_empty(), "{:?}", out.changed);
    assert_eq!(out.restarted, vec!["ssh.service"]);
    assert!(
        sd2.calls.contains(&"start nftables.service".to_string()),
        "{:?}",
        sd2.calls
    );
    assert!(!owed.exists(), "nothing owed after success");

    // After a reboot (/run is empty again) nothing is owed: units start afresh.
    let d = tempfile::tempdir().unwrap();
    let mut sd = MemSystemd {
        failing: vec!["nftables.service".into()],
        ..Default::default()
    };
    let _ = apply(d.path(), &seed, "test", &mut sd, &mut MemAccounts).unwrap_err();
    std::fs::remove_dir_all(d.path().join("run")).unwrap();
    let mut sd2 = MemSystemd::default();
    let out = apply(d.path(), &seed, "test", &mut sd2, &mut MemAccounts).unwrap();
    assert!(out.restarted.is_empty(), "{:?}", sd2.calls);
}

#[test]
fn every_step_ends_by_the_run_deadline_and_the_failure_is_recorded() {
    let d = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(format!(
        "{}/../seed/tests/fixtures/seeds/minio.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
    // Nothing listens on port 1: minio-live would poll for its full 180 s.
    .replace("flavor: minio", "flavor: minio\n    api_port: 1");
    let seed = Seed::from_yaml(&text).unwrap();
    let mut sd = MemSystemd::default();
    let t = Instant::now();
    let host = Host::Live {
        systemd: &mut sd,
        deadline: t + Duration::from_secs(5),
    };
    let err = apply_on(d.path(), &seed, "test", host, &mut MemAccounts).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    // The check, unless a loaded machine spent the 5 s before it (ssh-keygen).
    assert!(
        err.step == "check:minio-live" || t.elapsed() > Duration::from_secs(4),
        "{err}"
    );
    assert!(err.to_string().contains("run's deadline"), "{err}");
    let st = status(d.path());
    assert_eq!(st.state, State::Failed);
    assert!(st.reason.as_deref().unwrap().contains("run's deadline"));

    // A deadline already passed fails the next step without calling systemd.
    let d = tempfile::tempdir().unwrap();
    let mut sd = MemSystemd::default();
    let host = Host::Live {
        systemd: &mut sd,
        deadline: Instant::now(),
    };
    let err = apply_on(d.path(), &seed, "test", host, &mut MemAccounts).unwrap_err();
    assert_eq!(err.step, "hostname");
    assert!(sd.calls.is_empty(), "{:?}", sd.calls);
    assert!(RUN_BUDGET < imgbuild_seed::UNIT_TIMEOUT_START);
}

#[test]
fn offline_writes_files_only_and_says_what_it_skipped() {
    let d = tempfile::tempdir().unwrap();
    let seed = Seed::from_yaml(SEED).unwrap();
    let out = apply_on(d.path(), &seed, "test", Host::Offline, &mut MemAccounts).unwrap();
    assert!(out.changed.contains(&"/etc/nftables.conf".to_string()));
    assert!(d.path().join("etc/nftables.conf").exists());
    assert!(
        !d.path().join("etc/ssh/ssh_host_ed25519_key").exists(),
        "host keys belong to the booted guest, not to a prepared tree"
    );
    let st = status(d.path());
    assert_eq!(st.state, State::Prepared);
    for s in &st.steps {
        let want = if s.name == "accounts" || s.name == "files" {
            StepState::Done
        } else {
            StepState::Skipped
        };
        assert_eq!(s.state, want, "{}", s.name);
    }
    assert_eq!(status::applied_instance(d.path()).unwrap(), None);
    assert!(!d.path().join(OWED_PATH.trim_start_matches('/')).exists());
}

#[test]
fn a_removed_role_is_stopped_disabled_and_its_unit_removed_but_data_stays() {
    let d = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(format!(
        "{}/../seed/tests/fixtures/seeds/minio.yaml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let with = Seed::from_yaml(&text.replace("    buckets: [lake, spark-logs]\n", "")).unwrap();
    let mut sd = MemSystemd::default();
    // Only minio's start matters here; the checks need a server, so stop there.
    sd.failing.push("minio.service".into());
    let _ = apply(d.path(), &with, "test", &mut sd, &mut MemAccounts).unwrap_err();
    assert!(d.path().join("etc/systemd/system/minio.service").exists());
    std::fs::write(d.path().join("var/lib/minio/object"), "data").unwrap();

    let i = text.find("roles:").unwrap();
    let without = Seed::from_yaml(&text[..i]).unwrap();
    let mut sd = MemSystemd::default();
    let out = apply(d.path(), &without, "test", &mut sd, &mut MemAccounts).unwrap();
    assert_eq!(out.removed, ["minio.service"]);
    assert!(out.reloaded);
    let stop = sd.calls.iter().position(|c| c == "stop minio.service");
    let disable = sd.calls.iter().position(|c| c == "disable minio.service");
    let reload = sd.calls.iter().position(|c| c == "reload");
    assert!(
        stop < disable && disable < reload && stop.is_some(),
        "{:?}",
        sd.calls
    );
    assert!(!d.path().join("etc/systemd/system/minio.service").exists());
    assert_eq!(
        std::fs::read_to_string(d.path().join("var/lib/minio/object")).unwrap(),
        "data",
        "data stays"
    );
    let st = status(d.path());
    let step = st
        .steps
        .iter()
        .find(|s| s.name == "remove:minio.service")
        .unwrap();
    assert_eq!(step.state, StepState::Done);
    assert_eq!(st.state, State::Ready);

    // Unit files that are not the agent's are never touched.
    std::fs::write(
        d.path().join("etc/systemd/system/spark-worker.service"),
        "[Unit]\n",
    )
    .unwrap();
    let mut sd = MemSystemd::default();
    let out = apply(d.path(), &without, "test", &mut sd, &mut MemAccounts).unwrap();
    assert!(out.removed.is_empty());
    assert!(
        !sd.calls.iter().any(|c| c.starts_with("stop")),
        "{:?}",
        sd.calls
    );
}
