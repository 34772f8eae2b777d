//! End to end, VM: bake the Ubuntu-shaped cloud image with the real payload
//! (`imgbuild lock` + `bake --locked` from the test mirror), write the guest's
//! NoCloud seed with `imgbuild seed --format cidata`, and boot the baked qcow2
//! in QEMU from its own disk (a copy-on-write overlay, so the image stays
//! pristine) with the ISO as a CD-ROM and a virtio NIC on a TAP device inside
//! a network namespace of the test's own (the host side of the lab subnet; no
//! packet leaves it). KVM when it really boots, else TCG (see `e2e/qemu.rs`).
//!
//! Boot 1: cloud-init sets the address and keys, firstboot applies the object
//! store and Spark (master + worker) roles. From the namespace: boto3 lists
//! the seed's buckets and round-trips an object, the master's `/json/` shows
//! the worker ALIVE, SparkPi runs with its driver on the namespace side, SSH
//! takes the key and refuses passwords, status.json says ready.
//! Boot 2 (same disk, a changed seed: one more bucket): firstboot re-applies.
//! Boot 3 (same disk, same seed): firstboot's ExecCondition skips the unit;
//! status.json and the marker stay untouched.
//!
//! Prints bake time, per-boot times (SSH up, firstboot ready, boot settled)
//! and the accelerator used. Everything (QEMU, namespace, tempdir) is cleaned
//! up by drop guards; on failure the serial log tail, status.json and the
//! agent's journal are printed first.

mod e2e;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static T0: OnceLock<Instant> = OnceLock::new();

/// Progress on stderr, stamped with the seconds since the test started.
macro_rules! say {
    ($($arg:tt)*) => {
        eprintln!(
            "e2e-vm [{:>4.0}s] {}",
            T0.get_or_init(Instant::now).elapsed().as_secs_f64(),
            format!($($arg)*)
        )
    };
}

use e2e::qemu::{self, guest_ssh, guest_ssh_ok, Accel, BootSpec, Qemu};
use e2e::{poll, run_ok, Netns, Peers, TestLab};

const GUEST: &str = "vmlab";
const ADDR: &str = "10.78.0.10";
const GATEWAY_CIDR: &str = "10.78.0.1/24";
/// The namespace side of the lab subnet: SparkPi's driver binds here.
const DRIVER_HOST: &str = "10.78.0.1";
const MAC: &str = "52:54:00:78:00:10";
const TAP: &str = "ibvm0";
const BUCKETS: [&str; 2] = ["warehouse", "spark-events"];
const ADDED_BUCKET: &str = "reboot-added";
const MEMORY_MIB: u32 = 3072;

/// TCG + three JVMs is slow: the first ready may take minutes.
const FIRST_READY: Duration = Duration::from_secs(600);
const LATER_READY: Duration = Duration::from_secs(420);

/// One boot of the VM: QEMU plus what diagnostics need. On a panic, prints
/// the serial log tail, status.json and the agent's journal (over SSH when
/// the guest answers, else read off the stopped disk), then kills QEMU.
struct Boot {
    qemu: Option<Qemu>,
    ns: String,
    key: PathBuf,
    disk: PathBuf,
    work: PathBuf,
    n: u32,
}

impl Boot {
    fn ssh(&self, cmd: &str) -> String {
        guest_ssh_ok(&self.ns, ADDR, &self.key, cmd, Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("boot {}: {e}", self.n))
    }

    fn qemu(&mut self) -> &mut Qemu {
        self.qemu.as_mut().expect("QEMU is running")
    }

    /// Powers the guest off over SSH and waits for QEMU to exit.
    fn shutdown(&mut self) -> Duration {
        let t = Instant::now();
        // The connection drops as the guest goes down: the exit status says nothing.
        let _ = guest_ssh(
            &self.ns,
            ADDR,
            &self.key,
            "systemctl poweroff",
            Duration::from_secs(30),
        );
        let n = self.n;
        let q = self.qemu();
        assert!(
            q.wait_exit(Duration::from_secs(180)),
            "boot {n}: the guest did not power off within 180s:\n{}",
            q.serial_tail(30)
        );
        self.qemu = None;
        t.elapsed()
    }
}

impl Drop for Boot {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        if let Some(q) = &self.qemu {
            eprintln!(
                "---- boot {}: serial log tail ({}) ----\n{}",
                self.n,
                q.serial_log.display(),
                q.serial_tail(80)
            );
            eprintln!("---- QEMU stderr ----\n{}", q.stderr());
        }
        let over_ssh = guest_ssh(
            &self.ns,
            ADDR,
            &self.key,
            "cat /var/lib/imgbuild/status.json; journalctl -b --no-pager -n 80 -u imgbuild-firstboot; \
             systemctl --no-pager --failed; cloud-init status --long",
            Duration::from_secs(30),
        );
        match over_ssh {
            Ok(o) if o.ok() => eprintln!("---- status.json + journal (ssh) ----\n{}", o.stdout),
            other => {
                eprintln!(
                    "---- ssh for diagnostics failed: {other:?}; reading the stopped disk ----"
                );
                if let Some(mut q) = self.qemu.take() {
                    q.kill();
                }
                for f in [
                    "/var/lib/imgbuild/status.json",
                    "/var/log/cloud-init-output.log",
                ] {
                    match qemu::read_file_offline(&self.disk, &self.work, f) {
                        Ok(t) => eprintln!("---- {f} (from the disk) ----\n{}", e2e::tail(&t, 60)),
                        Err(e) => eprintln!("---- {f}: {e}"),
                    }
                }
            }
        }
        if let Some(mut q) = self.qemu.take() {
            q.kill();
        }
    }
}

/// Times of one boot, from QEMU's start.
#[derive(Debug, Default)]
struct Times {
    ssh: Duration,
    ready: Duration,
    settled: Duration,
}

/// `instance-id` from the ISO's meta-data, read with isoinfo (a real reader),
/// without the `iid-imgbuild-` prefix: the seed hash status.json records.
fn instance_id(iso: &Path) -> String {
    let o = run_ok(
        std::process::Command::new("isoinfo")
            .args(["-R", "-x", "/meta-data", "-i"])
            .arg(iso),
        None,
        Duration::from_secs(30),
        "isoinfo -x /meta-data",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let line = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("instance-id:"))
        .unwrap_or_else(|| panic!("no instance-id in meta-data:\n{}", o.stdout));
    line.trim()
        .strip_prefix("iid-imgbuild-")
        .unwrap_or_else(|| panic!("instance-id {line:?} lacks the iid-imgbuild- prefix"))
        .to_string()
}

fn status_json(b: &Boot) -> serde_json::Value {
    let text = b.ssh("cat /var/lib/imgbuild/status.json");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("status.json: {e}:\n{text}"))
}

/// Waits for SSH on the guest's address, then for status.json to say ready
/// for `iid`, then for the boot to finish (`is-system-running --wait`), or,
/// with `skip`, only until the agent's `ExecCondition=` has run (the rest of
/// the boot does not matter there, and TCG makes it slow).
fn wait_ready(b: &mut Boot, iid: &str, deadline: Duration, skip: bool) -> Times {
    let n = b.n;
    let started = b.qemu().started;
    let end = started + deadline;
    let left = || end.saturating_duration_since(Instant::now());
    let mut t = Times::default();
    let (ns, key) = (b.ns.clone(), b.key.clone());
    poll(
        &format!("boot {n}: SSH on {ADDR}"),
        left(),
        Duration::from_secs(3),
        |why| {
            if let Some(st) = b.qemu().exited() {
                return Err(format!("QEMU exited ({st})"));
            }
            match guest_ssh(&ns, ADDR, &key, "true", Duration::from_secs(20)) {
                Ok(o) if o.ok() => Ok(Some(())),
                Ok(o) => {
                    *why = o.stderr.trim().to_string();
                    Ok(None)
                }
                Err(e) => {
                    *why = e;
                    Ok(None)
                }
            }
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    t.ssh = started.elapsed();
    poll(
        &format!("boot {n}: status.json ready for instance {}", &iid[..12]),
        left(),
        Duration::from_secs(3),
        |why| {
            let o = guest_ssh(
                &ns,
                ADDR,
                &key,
                "cat /var/lib/imgbuild/status.json",
                Duration::from_secs(20),
            )?;
            if !o.ok() {
                *why = o.stderr.trim().to_string();
                return Ok(None);
            }
            let v: serde_json::Value = match serde_json::from_str(&o.stdout) {
                Ok(v) => v,
                Err(e) => {
                    *why = format!("status.json: {e}");
                    return Ok(None);
                }
            };
            let state = v["state"].as_str().unwrap_or("");
            if v["instance_id"] == iid && state == "failed" {
                return Err(format!("firstboot failed:\n{}", o.stdout));
            }
            *why = format!("instance {} state {state}", v["instance_id"]);
            Ok((v["instance_id"] == iid && state == "ready").then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    t.ready = started.elapsed();
    if skip {
        poll(
            &format!("boot {n}: the agent's ExecCondition ran"),
            left(),
            Duration::from_secs(2),
            |why| {
                let o = guest_ssh_ok(
                    &ns,
                    ADDR,
                    &key,
                    "systemctl show imgbuild-firstboot -p ExecCondition --value",
                    Duration::from_secs(20),
                )?;
                *why = o.trim().to_string();
                Ok(o.contains("code=exited").then_some(o))
            },
        )
        .map(|v| {
            assert!(
                v.contains("status=1"),
                "boot {n}: firstboot --check did not exit 1 (skip): {v}"
            )
        })
        .unwrap_or_else(|e| panic!("{e}"));
        t.settled = started.elapsed();
        return t;
    }
    let secs = left().as_secs().max(10);
    let o = guest_ssh(
        &ns,
        ADDR,
        &key,
        &format!("timeout {secs} systemctl is-system-running --wait"),
        Duration::from_secs(secs + 30),
    )
    .unwrap_or_else(|e| panic!("boot {n}: {e}"));
    t.settled = started.elapsed();
    let state = o.stdout.trim();
    if state != "running" {
        let failed = b.ssh("systemctl --no-pager --failed --plain");
        say!("boot {n}: system state {state:?}; failed units:\n{failed}");
    }
    t
}

/// cloud-init finished without errors and brought up the lab address.
///
/// The one error tolerated is the `locale` module's: the Debian-built test
/// base has no `locales` package, so `update-locale LANG=en_US.UTF-8` fails
/// there (Ubuntu's image has it). Any other error fails the test.
fn check_cloud_init(b: &Boot, serial: &Path) {
    let text = b.ssh("cat /run/cloud-init/result.json");
    let result: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("result.json: {e}:\n{text}"));
    let ds = result["v1"]["datasource"].as_str().unwrap_or("");
    assert!(
        ds.contains("DataSourceNoCloud") && ds.contains("/dev/sr0"),
        "cloud-init's datasource is not the cidata CD-ROM: {text}"
    );
    let errors: Vec<&str> = result["v1"]["errors"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e.as_str()).collect())
        .unwrap_or_default();
    let unexpected: Vec<&&str> = errors
        .iter()
        .filter(|e| !e.starts_with("('locale',"))
        .collect();
    assert!(unexpected.is_empty(), "cloud-init errors: {unexpected:#?}");
    if !errors.is_empty() {
        say!(
"NOTE: tolerated cloud-init error (the test base lacks the locales package): {errors:?}");
    }
    assert!(
        qemu::file_contains(serial, "Cloud-init v.")
            && qemu::file_contains(serial, " finished at "),
        "the serial log does not show cloud-init finishing"
    );
    let addr = b.ssh("ip -4 -o addr show scope global");
    assert!(
        addr.contains(&format!(" {ADDR}/24 ")),
        "guest addresses: {addr}"
    );
    let host = b.ssh("hostname");
    assert_eq!(host.trim(), GUEST);
}

/// `ExecMainStartTimestampMonotonic` of the firstboot unit in this boot (0:
/// its ExecStart never ran, e.g. skipped by ExecCondition).
fn firstboot_main_start(b: &Boot) -> u64 {
    let v = b.ssh("systemctl show imgbuild-firstboot -p ExecMainStartTimestampMonotonic --value");
    v.trim()
        .parse()
        .unwrap_or_else(|e| panic!("ExecMainStartTimestampMonotonic {v:?}: {e}"))
}

fn secs(d: Duration) -> String {
    format!("{:.0}s", d.as_secs_f64())
}

#[test]
fn vm_bake_boot_apply_and_reboot() {
    let t_total = *T0.get_or_init(Instant::now);
    let peers = Peers::require();
    let dir = tempfile::Builder::new()
        .prefix("imgbuild-e2e-vm-")
        .tempdir()
        .unwrap();
    let d = dir.path();

    // Bake.
    let recipe = e2e::test_recipe(&peers, "ubuntu-22.04-vm", d);
    let t = Instant::now();
    let image = e2e::lock_and_bake(&peers, &recipe, &d.join("dist"), Duration::from_secs(900));
    let bake = t.elapsed();
    say!("bake {} ({})", secs(bake), image.display());

    // Seeds: the fixture lab, and a copy with one more bucket (same secrets).
    let lab: TestLab = e2e::test_lab("e2e-vm/lab.yaml", d);
    let text = std::fs::read_to_string(&lab.path).unwrap();
    let from = format!("buckets: [{}]", BUCKETS.join(", "));
    assert!(text.contains(&from), "the fixture lab lists {from}");
    let lab2 = d.join("lab2.yaml");
    std::fs::write(
        &lab2,
        text.replace(
            &from,
            &format!("buckets: [{}, {ADDED_BUCKET}]", BUCKETS.join(", ")),
        ),
    )
    .unwrap();
    let seed = |lab: &Path, out: &str| -> PathBuf {
        let out = d.join(out);
        e2e::imgbuild_ok(
            &peers,
            &[
                "seed",
                "--lab",
                lab.to_str().unwrap(),
                "--guest",
                GUEST,
                "--format",
                "cidata",
                "--mac",
                MAC,
                "--out",
                out.to_str().unwrap(),
            ],
            Duration::from_secs(60),
        );
        out
    };
    let iso1 = seed(&lab.path, "seed1.iso");
    let iso2 = seed(&lab2, "seed2.iso");
    let (iid1, iid2) = (instance_id(&iso1), instance_id(&iso2));
    assert_ne!(iid1, iid2, "a changed seed must change the instance id");

    // The lab network: a TAP device holding the gateway address, inside a
    // namespace of our own.
    let ns = Netns::new("vm");
    qemu::add_tap(&ns.name, TAP, GATEWAY_CIDR);
    let disk = d.join("disk.qcow2");
    qemu::create_overlay(&image, &disk);
    let spec = |iso: &Path, n: u32| BootSpec {
        netns: ns.name.clone(),
        tap: TAP.into(),
        mac: MAC.into(),
        disk: disk.clone(),
        cidata: iso.to_path_buf(),
        serial_log: d.join(format!("serial-{n}.log")),
        memory_mib: MEMORY_MIB,
        cpus: 2,
    };
    let boot = |iso: &Path, n: u32, fresh: bool| -> Boot {
        let s = spec(iso, n);
        let t = Instant::now();
        let q = qemu::boot(&s, fresh.then_some(image.as_path()));
        say!(
            "boot {n} under {} (started after {})",
            q.accel.as_str(),
            secs(q.started - t)
        );
        Boot {
            qemu: Some(q),
            ns: ns.name.clone(),
            key: lab.ssh_key.clone(),
            disk: disk.clone(),
            work: d.to_path_buf(),
            n,
        }
    };

    // Boot 1: first boot with the fixture's seed.
    let mut b = boot(&iso1, 1, true);
    let accel = b.qemu().accel;
    let t1 = wait_ready(&mut b, &iid1, FIRST_READY, false);
    say!(
        "boot 1 ({}): ssh {}, ready {}, settled {}",
        accel.as_str(),
        secs(t1.ssh),
        secs(t1.ready),
        secs(t1.settled)
    );
    check_cloud_init(&b, &d.join("serial-1.log"));
    let st = status_json(&b);
    assert_eq!(st["state"], "ready", "{st}");
    assert_eq!(st["instance_id"], iid1.as_str(), "{st}");
    assert!(
        st["seed_source"]
            .as_str()
            .unwrap_or("")
            .contains("imgbuild/seed.yaml"),
        "the seed came from the cidata ISO: {st}"
    );
    assert!(
        firstboot_main_start(&b) > 0,
        "firstboot's ExecStart ran in boot 1"
    );
    let s3 = format!("{ADDR}:9000");
    let t = Instant::now();
    let listed = e2e::s3_check(Some(&ns), &s3, &lab.s3_user, &lab.s3_password, &BUCKETS)
        .unwrap_or_else(|e| panic!("{e}"));
    say!("S3 ({listed}) in {}", secs(t.elapsed()));
    let master = e2e::spark_check(Some(&ns), &format!("http://{ADDR}:8080"), 1)
        .unwrap_or_else(|e| panic!("{e}"));
    say!(
        "Spark master {} with {} worker(s) ALIVE",
        master["url"],
        master["aliveworkers"]
    );
    let t = Instant::now();
    let pi = e2e::submit_sparkpi(
        &peers,
        Some(&ns),
        &format!("spark://{ADDR}:7077"),
        DRIVER_HOST,
        d,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let sparkpi = t.elapsed();
    say!("SparkPi = {pi} in {}", secs(sparkpi));
    e2e::ssh_checks(Some(&ns), ADDR, &lab.ssh_key).unwrap_or_else(|e| panic!("{e}"));
    // The guest firewall (nftables, policy drop): the seed's ports answer, a
    // port nothing opened is dropped (a timeout, not a refusal).
    for (port, want) in [
        (22, "open"),
        (9000, "open"),
        (9001, "open"),
        (8081, "open"),
        (12345, "timeout"),
    ] {
        let got = e2e::tcp_probe(Some(&ns), ADDR, port).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, want, "TCP {ADDR}:{port}");
    }
    let down1 = b.shutdown();
    say!("boot 1: powered off in {}", secs(down1));
    drop(b);

    // Boot 2: the same disk with a changed seed: firstboot applies it.
    let mut b = boot(&iso2, 2, false);
    let t2 = wait_ready(&mut b, &iid2, LATER_READY, false);
    say!(
        "boot 2: ssh {}, ready {}, settled {}",
        secs(t2.ssh),
        secs(t2.ready),
        secs(t2.settled)
    );
    assert!(
        firstboot_main_start(&b) > 0,
        "firstboot's ExecStart ran in boot 2"
    );
    let mut all = BUCKETS.to_vec();
    all.push(ADDED_BUCKET);
    e2e::s3_check(Some(&ns), &s3, &lab.s3_user, &lab.s3_password, &all)
        .unwrap_or_else(|e| panic!("boot 2: {e}"));
    let applied = b.ssh("cat /var/lib/imgbuild/applied-instance; ls /var/lib/imgbuild/done");
    assert!(
        applied.lines().next() == Some(iid2.as_str()) && applied.contains(&iid1),
        "applied-instance + done/ after boot 2:\n{applied}"
    );
    let stamp = "stat -c '%Y.%y' /var/lib/imgbuild/status.json /var/lib/imgbuild/applied-instance; sha256sum /var/lib/imgbuild/status.json";
    let before = b.ssh(stamp);
    let down2 = b.shutdown();
    say!("boot 2: powered off in {}", secs(down2));
    drop(b);

    // Boot 3: the same seed again: the unit is skipped, nothing is rewritten.
    let mut b = boot(&iso2, 3, false);
    let t3 = wait_ready(&mut b, &iid2, LATER_READY, true);
    say!(
        "boot 3: ssh {}, ready {}, settled {}",
        secs(t3.ssh),
        secs(t3.ready),
        secs(t3.settled)
    );
    assert_eq!(
        firstboot_main_start(&b),
        0,
        "firstboot's ExecStart must not run for an applied seed"
    );
    let journal = b.ssh("journalctl -b --no-pager -u imgbuild-firstboot");
    assert!(
        journal.contains("already applied") && journal.contains("exec-condition"),
        "the agent's journal in boot 3 shows no skip:\n{journal}"
    );
    assert_eq!(
        b.ssh(stamp),
        before,
        "status.json or the marker changed in boot 3"
    );
    // The roles' units come up by themselves, without the agent (Spark's
    // JVMs take minutes to listen under TCG; boots 1 and 2 checked them).
    let active = b.ssh("systemctl is-active minio spark-master spark-worker nftables ssh");
    assert_eq!(
        active.split_whitespace().collect::<Vec<_>>(),
        ["active"; 5],
        "boot 3: the roles' units"
    );
    e2e::s3_check(Some(&ns), &s3, &lab.s3_user, &lab.s3_password, &all)
        .unwrap_or_else(|e| panic!("boot 3: {e}"));
    let down3 = b.shutdown();
    say!("boot 3: powered off in {}", secs(down3));
    drop(b);

    say!(
        "SUMMARY accel {} ({}); bake {}; boot-to-ready (QEMU start -> status.json ready): \
         #1 {} (ssh {}), #2 {} (ssh {}), #3 {} (ssh {}); settled #1 {} #2 {} #3 {}; \
         SparkPi {}; poweroff {} / {} / {}; total {}",
        accel.as_str(),
        match accel {
            Accel::Kvm => "KVM booted".to_string(),
            Accel::Tcg => qemu::kvm_note(),
        },
        secs(bake),
        secs(t1.ready),
        secs(t1.ssh),
        secs(t2.ready),
        secs(t2.ssh),
        secs(t3.ready),
        secs(t3.ssh),
        secs(t1.settled),
        secs(t2.settled),
        secs(t3.settled),
        secs(sparkpi),
        secs(down1),
        secs(down2),
        secs(down3),
        secs(t_total.elapsed()),
    );
}
