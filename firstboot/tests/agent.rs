//! Drives the real `firstboot` binary and checks its artifacts with real
//! tools: systemd-analyze on the unit, the ELF headers of the static build.

use std::path::{Path, PathBuf};
use std::process::Command;

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_firstboot")
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../seed/tests/fixtures/seeds/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn root_with_seed(text: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("etc/imgbuild")).unwrap();
    std::fs::write(d.path().join("etc/imgbuild/seed.yaml"), text).unwrap();
    d
}

fn run(args: &[&str], root: &Path) -> (i32, String, String) {
    let o = Command::new(bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

#[test]
fn unit_file_passes_systemd_analyze_verify() {
    assert!(firstboot::UNIT_FILE.contains(&format!("ExecStart={}\n", firstboot::AGENT_PATH)));
    assert_eq!(firstboot::UNIT_NAME, "imgbuild-firstboot.service");
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    std::fs::create_dir_all(r.join("usr/local/sbin")).unwrap();
    std::fs::create_dir_all(r.join("etc/systemd/system")).unwrap();
    std::fs::create_dir_all(r.join("usr/lib/systemd")).unwrap();
    std::fs::copy(bin(), r.join(firstboot::AGENT_PATH.trim_start_matches('/'))).unwrap();
    std::fs::write(
        r.join("etc/systemd/system").join(firstboot::UNIT_NAME),
        firstboot::UNIT_FILE,
    )
    .unwrap();
    // The host's own units (multi-user.target, network-online.target, ...) so
    // verify can resolve the dependencies, as in a real guest.
    let cp = Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(r.join("usr/lib/systemd"))
        .status()
        .unwrap();
    assert!(cp.success());
    let o = Command::new("systemd-analyze")
        .arg(format!("--root={}", r.display()))
        .arg("verify")
        .arg(format!("/etc/systemd/system/{}", firstboot::UNIT_NAME))
        .output()
        .expect("systemd-analyze (Debian package systemd) must be installed");
    let stderr = String::from_utf8_lossy(&o.stderr);
    // verify exits 0 on mere parse warnings, so any output is a failure too.
    assert!(
        o.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {stderr}"
    );
}

/// Program headers of an ELF64 little-endian file: (p_type, p_offset, p_filesz).
fn program_headers(elf: &[u8]) -> Vec<(u32, u64, u64)> {
    assert_eq!(&elf[..4], b"\x7fELF");
    assert_eq!(elf[4], 2, "ELF64");
    let u16at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u64at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap());
    let phoff = u64at(0x20) as usize;
    let (phentsize, phnum) = (u16at(0x36), u16at(0x38));
    (0..phnum)
        .map(|i| {
            let h = phoff + i * phentsize;
            (
                u32::from_le_bytes(elf[h..h + 4].try_into().unwrap()),
                u64at(h + 8),
                u64at(h + 32),
            )
        })
        .collect()
}

#[test]
fn static_build_has_no_dynamic_loader() {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("build-static.sh");
    let o = Command::new("sh").arg(&script).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let path = String::from_utf8_lossy(&o.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let elf = std::fs::read(&path).unwrap();
    const PT_DYNAMIC: u32 = 2;
    const PT_INTERP: u32 = 3;
    const DT_NEEDED: u64 = 1;
    let phs = program_headers(&elf);
    assert!(
        !phs.iter().any(|p| p.0 == PT_INTERP),
        "{path} has a PT_INTERP (dynamic loader)"
    );
    // A static-pie keeps a PT_DYNAMIC for self-relocation, but it must need no library.
    if let Some(&(_, off, size)) = phs.iter().find(|p| p.0 == PT_DYNAMIC) {
        let dynamic = &elf[off as usize..(off + size) as usize];
        for e in dynamic.chunks_exact(16) {
            let tag = u64::from_le_bytes(e[..8].try_into().unwrap());
            assert_ne!(tag, DT_NEEDED, "{path} needs a shared library");
        }
    }
    // And it runs.
    let o = Command::new(&path).arg("--help").output().unwrap();
    assert!(o.status.success());
    eprintln!("static agent: {path}, {} bytes", elf.len());
}

#[test]
fn check_and_plan_modes() {
    let d = root_with_seed(&fixture("minio.yaml"));
    let (code, out, _) = run(&["--plan"], d.path());
    assert_eq!(code, 0);
    let id = out
        .lines()
        .next()
        .unwrap()
        .strip_prefix("instance_id ")
        .unwrap()
        .to_string();
    assert_eq!(
        id,
        firstboot::Seed::from_yaml(&fixture("minio.yaml"))
            .unwrap()
            .instance_id()
    );
    assert!(out.contains("=== file /etc/systemd/system/minio.service"));
    assert!(
        !out.contains("change-me-please"),
        "plan output leaks a secret"
    );

    assert_eq!(run(&["--check"], d.path()).0, 0, "not applied yet: run");
    std::fs::create_dir_all(d.path().join("var/lib/imgbuild")).unwrap();
    std::fs::write(
        d.path().join("var/lib/imgbuild/applied-instance"),
        format!("{id}\n"),
    )
    .unwrap();
    assert_eq!(run(&["--check"], d.path()).0, 1, "applied: skip");
    let (code, _, err) = run(&[], d.path());
    assert_eq!(code, 0, "same instance: nothing to do: {err}");
    std::fs::write(
        d.path().join("etc/imgbuild/seed.yaml"),
        fixture("minio.yaml").replace("spark-logs", "other"),
    )
    .unwrap();
    assert_eq!(run(&["--check"], d.path()).0, 0, "changed seed: run again");

    let empty = tempfile::tempdir().unwrap();
    assert_eq!(run(&["--check"], empty.path()).0, 1, "no seed: skip");
}

#[test]
fn bad_seed_exits_2_with_position_and_records_status() {
    let d = root_with_seed("version: 1\nhostname: ok\nroles:\n  object_store:\n    root_user: admin\n    root_password: short\n");
    assert_eq!(
        run(&["--check"], d.path()).0,
        0,
        "a bad seed still runs, to record why"
    );
    let (code, _, err) = run(&[], d.path());
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("seed.yaml:6:20: roles.object_store.root_password"),
        "{err}"
    );
    assert!(err.contains("step `seed` failed"), "{err}");
    let st: serde_json::Value = serde_json::from_slice(
        &std::fs::read(d.path().join("var/lib/imgbuild/status.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(st["state"], "failed");
    assert_eq!(st["failed_step"], "seed");
    assert!(st["steps"][0]["error"]
        .as_str()
        .unwrap()
        .contains("root_password"));
}

/// A scratch guest root with the account databases shadow-utils needs.
fn guest_root(seed: &str) -> tempfile::TempDir {
    let d = root_with_seed(seed);
    let etc = d.path().join("etc");
    std::fs::write(etc.join("passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\n").unwrap();
    std::fs::write(etc.join("shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
    std::fs::write(etc.join("gshadow"), "root:*::\n").unwrap();
    d
}

fn status_json(root: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(root.join("var/lib/imgbuild/status.json")).unwrap())
        .unwrap()
}

#[test]
fn another_root_is_prepared_without_touching_the_host() {
    let d = guest_root(&fixture("minio.yaml"));
    let hostname_before = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    // A system bus that does not exist: any D-Bus use would fail the run.
    let o = Command::new(bin())
        .arg("--root")
        .arg(d.path())
        .env(
            "DBUS_SYSTEM_BUS_ADDRESS",
            "unix:path=/nonexistent/imgbuild-test-bus",
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(
        err.contains("nothing on this host was started or changed"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        hostname_before
    );
    let r = d.path();
    assert!(r.join("etc/systemd/system/minio.service").exists());
    assert!(r.join("etc/default/minio").exists());
    assert_eq!(
        std::fs::read_to_string(r.join("etc/hostname")).unwrap(),
        "minio\n"
    );
    assert!(!r.join("var/lib/imgbuild/applied-instance").exists());
    let st = status_json(r);
    assert_eq!(st["state"], "prepared", "{st:#}");
    let skipped: Vec<&str> = st["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["state"] == "skipped")
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for step in [
        "hostname",
        "daemon-reload",
        "enable",
        "start:minio.service",
        "check:minio-live",
        "marker",
    ] {
        assert!(skipped.contains(&step), "{step} not skipped: {skipped:?}");
    }
    // The seed's instance is not recorded as applied: the guest still runs it.
    assert_eq!(run(&["--check"], r).0, 0);
}

#[test]
fn crafted_seeds_exit_2_and_are_recorded_as_failed() {
    let bomb = fixture("minio.yaml").replace(
        "flavor: minio",
        "flavor: minio\n    volumes: \"/d{1...100000}/e{1...100000}\"",
    );
    let deep = format!("version: 1\nhostname: a\npeers: {}\n", "[".repeat(100_000));
    let memory = fixture("devlab.yaml").replace("memory: 6g", "memory: \"4\u{e9}\"");
    let dup = "version: 1\nhostname: a\nhostname: b\n".to_string();
    for (name, text, want) in [
        (
            "brace bomb",
            bomb.into_bytes(),
            "expands to 10000000000 endpoints",
        ),
        ("100k [", deep.into_bytes(), "larger than 65536 bytes"),
        ("memory 4é", memory.into_bytes(), "memory size"),
        (
            "duplicate key",
            dup.into_bytes(),
            "duplicate key `hostname`",
        ),
        (
            "not UTF-8",
            b"version: 1\nhostname: \xff\n".to_vec(),
            "not UTF-8",
        ),
    ] {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc/imgbuild")).unwrap();
        std::fs::write(d.path().join("etc/imgbuild/seed.yaml"), &text).unwrap();
        let t = std::time::Instant::now();
        let (code, _, err) = run(&[], d.path());
        assert_eq!(code, 2, "{name}: {err}");
        assert!(err.contains(want), "{name}: {err}");
        // Not a measurement: expanding the bomb (10^10 endpoints) would run
        // for many minutes or exhaust memory; refusing it takes milliseconds.
        // The bound is loose so a loaded CI machine never trips it.
        assert!(t.elapsed().as_secs() < 60, "{name}: {:?}", t.elapsed());
        let st = status_json(d.path());
        assert_eq!(st["state"], "failed", "{name}");
        assert!(
            st["reason"].as_str().unwrap().contains(want),
            "{name}: {st:#}"
        );
    }
}

#[test]
fn sigterm_is_recorded_as_interrupted() {
    use std::os::unix::process::CommandExt;
    // With the metrics role, and its textfile directory already there (as
    // on a guest rebooted mid-run): the node exporter's file says failed too.
    let d = guest_root(&fixture("minio.yaml").replace("roles:\n", "roles:\n  metrics: {}\n"));
    let textfile = d.path().join("var/lib/node_exporter/textfile");
    std::fs::create_dir_all(&textfile).unwrap();
    // A groupadd that hangs, so the run is inside its `accounts` step.
    let fake = tempfile::tempdir().unwrap();
    let script = fake.path().join("groupadd");
    std::fs::write(&script, "#!/bin/sh\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap()
    );
    let mut child = Command::new(bin())
        .arg("--root")
        .arg(d.path())
        .env("PATH", path)
        .process_group(0)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let running = |st: &serde_json::Value| {
        st["steps"].as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["name"] == "accounts" && s["state"] == "running")
        })
    };
    let t = std::time::Instant::now();
    loop {
        let p = d.path().join("var/lib/imgbuild/status.json");
        if p.exists() && running(&status_json(d.path())) {
            break;
        }
        assert!(
            t.elapsed().as_secs() < 120,
            "the agent never reached `accounts` within 120 s: {}",
            std::fs::read_to_string(d.path().join("var/lib/imgbuild/status.json"))
                .unwrap_or_else(|e| format!("no status.json ({e})"))
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let code = child.wait().unwrap().code();
    // The hanging groupadd is in the agent's process group.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .status();
    assert_eq!(code, Some(128 + 15));
    let st = status_json(d.path());
    assert_eq!(st["state"], "failed", "{st:#}");
    assert_eq!(st["failed_step"], "accounts");
    assert!(
        st["reason"].as_str().unwrap().starts_with("interrupted"),
        "{st:#}"
    );
    let acc = st["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "accounts")
        .unwrap();
    assert_eq!(acc["state"], "failed");
    let prom = std::fs::read_to_string(textfile.join("imgbuild_firstboot.prom")).unwrap();
    assert!(
        prom.contains("imgbuild_firstboot_failed 1\n")
            && prom.contains("imgbuild_firstboot_state{state=\"running\"} 0\n"),
        "{prom}"
    );
}

/// Issue 9 item 8: every unit the agent writes, for every role and shape,
/// rated by systemd's own scorer.
#[test]
fn every_service_unit_scores_at_most_4_under_systemd_analyze_security() {
    let worker_only = fixture("devlab.yaml")
        .replace("    master: { host: devlab }\n", "")
        .replace(
            "  devlab: 192.168.1.100\n",
            "  devlab: 192.168.1.100\n  master: 192.168.1.1\n",
        );
    let distributed = fixture("minio.yaml").replace(
        "flavor: minio",
        "flavor: minio\n    volumes: http://minio{1...4}/data{1...2}",
    );
    let mut seen = Vec::new();
    for text in [
        fixture("minio.yaml"),
        fixture("devlab.yaml"),
        worker_only,
        distributed,
        fixture("monitoring.yaml"),
    ] {
        let seed = firstboot::Seed::from_yaml(&text).unwrap();
        let plan = firstboot::plan::build(&seed, "");
        for f in plan
            .files
            .iter()
            .filter(|f| firstboot::plan::Plan::is_unit_file(&f.path))
        {
            let d = tempfile::tempdir().unwrap();
            let unit = d.path().join(f.path.trim_start_matches('/'));
            std::fs::create_dir_all(unit.parent().unwrap()).unwrap();
            std::fs::write(&unit, &f.content).unwrap();
            let o = Command::new("systemd-analyze")
                .args(["security", "--offline=true"])
                .arg(format!("--root={}", d.path().display()))
                .arg(&f.path)
                .output()
                .expect("systemd-analyze (Debian package systemd) must be installed");
            let out = String::from_utf8_lossy(&o.stdout);
            let line = out
                .lines()
                .find(|l| l.contains("Overall exposure level"))
                .unwrap_or_else(|| {
                    panic!(
                        "{}: no score: {out}{}",
                        f.path,
                        String::from_utf8_lossy(&o.stderr)
                    )
                });
            let score: f64 = line
                .split(": ")
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
            eprintln!("{}: {score}", f.path);
            assert!(score <= 4.0, "{} scores {score} (> 4.0):\n{out}", f.path);
            seen.push(f.path.clone());
        }
    }
    for unit in [
        "minio.service",
        "spark-master.service",
        "spark-worker.service",
        "node-exporter.service",
        "prometheus.service",
    ] {
        assert!(
            seen.iter().any(|p| p.ends_with(unit)),
            "{unit} not rendered: {seen:?}"
        );
    }
}
