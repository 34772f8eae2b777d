//! End to end through the real binary, on a container (issue 8 item 7, and
//! the power cuts of issue 3 item 10), the way a user runs the lab:
//!
//! 1. From a fresh state, `imgbuild up` bakes the LXC template from the test
//!    mirror (dist/ is empty), extracts the personalized template as pct
//!    does, boots it in systemd-nspawn on the lab's bridge inside the lab's
//!    namespace and returns once the guest is ready; `verify --json` passes
//!    every check (SSH key-only, services, UIs, S3 in every bucket, SparkPi,
//!    logs, firewall); `status` shows it ready; the forwarded console and
//!    Spark URLs answer from the host; `up` again changes nothing.
//! 2. A clean poweroff from inside: `status` says stopped; `up` starts it
//!    again on its root and the agent does not run again (status.json
//!    untouched), the services come back by themselves.
//! 3. `down` leaves no namespace, link, process, mount or file of the lab.
//! 4. `up` again after `down`, with the guest killed (SIGKILL to its init:
//!    a power cut) at three points of its first boot: each time `up` names
//!    the guest as gone, `status` reports it stopped, and the next `up`
//!    repairs it; the end state equals the uncut run's (the agent's files
//!    byte for byte, the accounts), an object put before a cut is kept, and
//!    `verify` passes again.
//! 5. A changed seed (one more bucket): `up` recreates the guest from its
//!    image, and `verify` finds the new bucket.
//! 6. Upgrades keep the data volume (issue 10 item 7): objects put, the
//!    image re-baked with one more file, `up` replaces the guest's root and
//!    the same objects come back through S3 from the volume (a directory
//!    outside the root, bind-mounted at the data dir like Proxmox's `mp0`);
//!    a second upgrade is cut during its first boot, after an object was
//!    put, and the next `up` converges with every object intact. `down`
//!    keeps the volume, `down --purge-data` leaves nothing.
//!
//! Needs root and the cached peers from `scripts/peers` (IMGBUILD_TEST_CACHE).

mod e2e;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use e2e::up::UpLab;
use e2e::userns;
use e2e::*;
use imgbuild_seed::status::{State, Status, StepState};

const GUEST: &str = "lab1";
const VMID: u32 = 300;
const ADDR: &str = "10.77.0.10";
const BUCKETS: &[&str] = &["warehouse", "spark-events"];

/// `up` from nothing: bake (minutes on 2 cores) + extract + boot + ready.
const FIRST_UP: Duration = Duration::from_secs(900);
/// `up` of a baked image (a restart, a repair after a cut, a new seed): a
/// first boot starts MinIO and two JVMs, a minute or two alone and several
/// on 2 cores shared with the rest of CI.
const UP: Duration = Duration::from_secs(600);

fn row<'a>(rows: &'a [serde_json::Value], guest: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["guest"] == guest)
        .unwrap_or_else(|| panic!("no row for {guest} in {rows:?}"))
}

fn say(t0: Instant, msg: String) {
    eprintln!("e2e-lxc [{:>4.0}s] {msg}", t0.elapsed().as_secs_f64());
}

#[test]
fn up_verify_status_down_and_power_cuts_on_a_container() {
    let t0 = Instant::now();
    let peers = Peers::require();
    let work = tempfile::Builder::new()
        .prefix("imgbuild-e2e-lxc.")
        .tempdir()
        .unwrap();
    let lab = UpLab::new(&peers, "e2e/lab.yaml", &["ubuntu-22.04-lxc"], work.path());

    // 1. From nothing.
    let t = Instant::now();
    let rows = lab.up(FIRST_UP);
    let r = row(&rows, GUEST);
    assert_eq!(r["state"], "ready", "{r}");
    assert_eq!(r["action"], "created", "{r}");
    say(
        t0,
        format!(
            "up from nothing (bake + extract + boot + ready): {:.1} s; container start -> ready {} s",
            t.elapsed().as_secs_f64(),
            r["ready_secs"]
        ),
    );
    assert!(
        lab.dist.join("ubuntu-22.04-lxc.tar.zst").is_file(),
        "up baked the image into dist/"
    );
    let rootfs = lab.guest_dir(GUEST).join("rootfs");
    let seed = rootfs.join("etc/imgbuild/seed.yaml");
    let meta = fs::metadata(&seed).expect("the personalized template carries the seed");
    // Extracted unprivileged, as pct does: root's file is the host's 100000.
    assert_eq!(
        (meta.mode() & 0o7777, meta.uid(), meta.gid()),
        (0o600, userns::BASE, userns::BASE),
        "{} after pct's extraction",
        seed.display()
    );
    let status = agent_ready(&rootfs);
    unprivileged_checks(&lab, &rootfs, t0);
    let id = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        fs::read(&seed).unwrap(),
    ));
    assert_eq!(status.instance_id.as_deref(), Some(id.as_str()));
    let rss = status.peak_rss_kib.expect("status.json has peak_rss_kib");
    assert!(
        rss <= 64 * 1024,
        "firstboot's peak RSS {rss} KiB is over 64 MiB"
    );
    say(
        t0,
        format!(
            "firstboot peak RSS {rss} KiB; per step: {}",
            step_times(&status)
        ),
    );

    metrics_checks(&lab, &rootfs, &status, t0);
    security_updates_checks(&lab, t0);

    let t = Instant::now();
    let (report, o) = lab.verify(Duration::from_secs(600));
    assert!(
        o.ok() && report["ok"] == true,
        "verify failed:\n{}\n{}",
        serde_json::to_string_pretty(&report).unwrap(),
        tail(&o.stderr, 30)
    );
    let checks: Vec<String> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap().to_string())
        .collect();
    for want in [
        "ssh: only publickey offered",
        "s3: bucket warehouse",
        "s3: bucket spark-events",
        "spark: SparkPi through the master",
        "s3: spark's user (lab1) only in its buckets",
        "firewall: undeclared port dropped",
        "logs: object store",
        "logs: spark",
    ] {
        assert!(
            checks.iter().any(|c| c == want),
            "verify lacks {want:?}: {checks:?}"
        );
    }
    say(
        t0,
        format!(
            "verify: {} checks passed in {:.1} s",
            checks.len(),
            t.elapsed().as_secs_f64()
        ),
    );

    spark_identity_checks(&lab, &rootfs, &status, t0);

    let st = lab.status_ready(&[GUEST]);
    assert_eq!(row(&st, GUEST)["state"], "ready");
    assert_eq!(row(&st, GUEST)["firstboot"], "ready");
    // The web UIs from the host, through the forwards.
    let urls = row(&st, GUEST)["urls"].as_array().unwrap().clone();
    let url = |purpose: &str| -> String {
        urls.iter()
            .find(|u| u["purpose"] == purpose)
            .unwrap_or_else(|| panic!("no {purpose} URL in {urls:?}"))["url"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let console = url("object store console");
    assert!(console.starts_with("http://127.0.0.1:"), "{console}");
    let code = http_code(&console);
    assert!(
        (200..500).contains(&code),
        "GET {console} from the host: HTTP {code}"
    );
    let master = url("spark master UI");
    let json = http_get(None, &format!("{master}json/")).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        json.contains("ALIVE"),
        "{master}json/ from the host: {json}"
    );
    say(
        t0,
        format!("forwards answer from the host: console {console} (HTTP {code}), master {master}"),
    );

    let t = Instant::now();
    let rows = lab.up(UP);
    assert_eq!(row(&rows, GUEST)["action"], "unchanged");
    assert_eq!(row(&rows, GUEST)["state"], "ready");
    say(
        t0,
        format!(
            "up again with nothing changed: {:.1} s, nothing done",
            t.elapsed().as_secs_f64()
        ),
    );

    // 2. A clean poweroff from inside, then up: restarted, firstboot skipped.
    let status_path = rootfs.join("var/lib/imgbuild/status.json");
    let stamp = |p: &Path| {
        (
            fs::read(p).unwrap(),
            fs::metadata(p).unwrap().modified().unwrap(),
        )
    };
    let before = stamp(&status_path);
    let _ = lab.run(
        lab.cmd("ssh").args([GUEST, "systemctl", "poweroff"]),
        SSH_LOGIN,
        "imgbuild ssh lab1 systemctl poweroff",
    );
    // Generous: a shutdown waits for every unit's stop (see SSH_LOGIN).
    e2e::poll(
        "the container powers off",
        Duration::from_secs(300),
        Duration::from_millis(500),
        |why| {
            let st = lab.status();
            *why = row(&st, GUEST)["state"].to_string();
            Ok((row(&st, GUEST)["state"] == "stopped").then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let t = Instant::now();
    let rows = lab.up(UP);
    assert_eq!(row(&rows, GUEST)["action"], "restarted");
    assert_eq!(row(&rows, GUEST)["state"], "ready");
    assert!(
        stamp(&status_path) == before,
        "firstboot ran again on a restart with the seed it applied"
    );
    say(
        t0,
        format!(
            "poweroff + up: restarted, firstboot skipped, ready in {:.1} s",
            t.elapsed().as_secs_f64()
        ),
    );

    let reference = agent_state(&rootfs);

    // 3. down leaves nothing.
    let t = Instant::now();
    lab.down();
    lab.assert_nothing_left(&[VMID]);
    say(
        t0,
        format!("down: {:.1} s, nothing left", t.elapsed().as_secs_f64()),
    );
    let o = lab.down();
    assert!(o.stderr.contains("nothing"), "a second down: {}", o.stderr);

    // 4. up after down, with power cuts during the first boot.
    power_cuts(&lab, &rootfs, &reference, t0);

    // 5. A changed seed (one more bucket): up recreates the guest from the
    // image with the new seed, and verify finds the new bucket.
    let text = fs::read_to_string(&lab.lab.path).unwrap();
    let from = format!("buckets: [{}]", BUCKETS.join(", "));
    assert!(text.contains(&from), "the fixture lab lists {from}");
    fs::write(
        &lab.lab.path,
        text.replace(
            &from,
            &format!("buckets: [{}, added-later]", BUCKETS.join(", ")),
        ),
    )
    .unwrap();
    let t = Instant::now();
    let rows = lab.up(UP);
    assert_eq!(row(&rows, GUEST)["action"], "created", "{rows:?}");
    assert_eq!(row(&rows, GUEST)["state"], "ready", "{rows:?}");
    agent_ready(&rootfs);
    let (report, o) = lab.verify(Duration::from_secs(600));
    assert!(
        o.ok() && report["ok"] == true,
        "verify after the seed change:\n{}",
        serde_json::to_string_pretty(&report).unwrap()
    );
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["check"] == "s3: bucket added-later" && c["ok"] == true),
        "verify did not check the added bucket"
    );
    say(
        t0,
        format!(
            "changed seed: up recreated {GUEST} in {:.1} s; verify passes with the new bucket",
            t.elapsed().as_secs_f64()
        ),
    );

    // 6. Upgrades keep the data volume.
    upgrades_keep_data(&lab, &rootfs, t0);
    lab.down();
    lab.assert_nothing_left(&[VMID]);
    say(
        t0,
        "down --purge-data after the upgrades: nothing left".into(),
    );
}

/// The container runs unprivileged as on Proxmox: from the host, its
/// processes have uids 100000 and up (the object store's its account's,
/// shifted), its root and data volume are owned by shifted ids; inside, it
/// sees its own accounts.
fn unprivileged_checks(lab: &UpLab, rootfs: &Path, t0: Instant) {
    let leader = leader(lab).expect("the container's init");
    let line = userns::assert_unprivileged(leader, rootfs, &["minio-user", "spark"]);
    for user in ["minio-user", "spark", "node-exporter"] {
        let pid = userns::process_of(leader, rootfs, user);
        userns::assert_sandboxed(pid, leader, user);
    }
    let volume = lab.labdir.dir.join("data").join(GUEST).join("volume");
    let m = fs::metadata(&volume).unwrap();
    let minio = userns::host_uid(rootfs, "minio-user");
    assert_eq!(
        m.uid(),
        minio,
        "the data volume on the host: minio-user shifted"
    );
    let o = lab.run(
        lab.cmd("ssh").args([
            GUEST,
            "stat",
            "-c",
            "%U:%G",
            "/var/lib/minio",
            "/etc/passwd",
            "/usr/local/sbin/firstboot",
        ]),
        Duration::from_secs(60),
        "imgbuild ssh lab1 stat",
    );
    assert!(o.ok(), "{}", o.stderr);
    let owners: Vec<&str> = o.stdout.lines().collect();
    assert_eq!(
        owners,
        ["minio-user:minio-user", "root:root", "root:root"],
        "the guest sees its own accounts"
    );
    say(
        t0,
        format!("{line}; the volume is host uid {minio}, minio-user inside; minio, spark and node-exporter sandboxed (own mount namespace, / read-only, no new privileges, no capabilities)"),
    );
}

/// Adds a payload entry to the test recipe: a small checksum file of the
/// mirror installed at `/usr/local/share/imgbuild-e2e-<marker>`,
/// pinned inline. A real change of the image (one more file), so its digest
/// changes and `up` re-bakes it.
fn add_marker_to_recipe(lab: &UpLab, marker: &str) {
    let recipe = lab.images.join("ubuntu-22.04-lxc.yaml");
    // One mirror file per marker: `up` tells a fresh image by its
    // artifacts' URLs and digests, so a second entry with a URL the recipe
    // already has would not make the image stale.
    let (file, base) = match marker {
        "upgrade-1" => (
            "minio.RELEASE.2025-10-15T17-29-55Z.sha256sum",
            "https://dl.min.io/server/minio/release/linux-amd64/archive",
        ),
        _ => (
            "spark-3.5.9-bin-hadoop3.tgz.sha512",
            "https://archive.apache.org/dist/spark/spark-3.5.9",
        ),
    };
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        fs::read(lab.peers.mirror.join(file)).unwrap(),
    ));
    let mut text = fs::read_to_string(&recipe).unwrap();
    text.push_str(&format!(
        "  - name: {}\n    url: {base}/{file}\n    digest: sha256:{digest}\n    install: {{file: /usr/local/share/imgbuild-e2e-{marker}, mode: \"0644\"}}\n",
        marker.replace('-', "_")
    ));
    fs::write(&recipe, text).unwrap();
    // As a user would after editing a recipe: pin it (`up --locked` bakes
    // only what the lock pins).
    imgbuild_ok(
        &lab.peers,
        &[
            "lock",
            "--images",
            lab.images.to_str().unwrap(),
            "--mirror",
            lab.peers.mirror.to_str().unwrap(),
            "--trust-mirror-checksums",
            "-q",
        ],
        Duration::from_secs(120),
    );
}

/// The image digest `up` recorded in the guest's fingerprint is not
/// exposed; the image file's own digest stands for it.
fn image_sha(lab: &UpLab) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        fs::read(lab.dist.join("ubuntu-22.04-lxc.tar.zst")).unwrap(),
    ))
}

fn upgrades_keep_data(lab: &UpLab, rootfs: &Path, t0: Instant) {
    let ns = Netns::existing(&lab.netns_name());
    let addr = format!("{ADDR}:9000");
    let put = |bucket: &str, key: &str, body: &str| {
        s3_put(
            Some(&ns),
            &addr,
            &lab.lab.s3_user,
            &lab.lab.s3_password,
            bucket,
            key,
            body.as_bytes(),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let get = |bucket: &str, key: &str| {
        s3_get(
            Some(&ns),
            &addr,
            &lab.lab.s3_user,
            &lab.lab.s3_password,
            bucket,
            key,
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let big: String = (0..8192)
        .map(|i| format!("line {i:05} of an object kept by upgrades\n"))
        .collect();
    let mut objects: Vec<(&str, String, String)> = vec![
        (
            BUCKETS[0],
            "upgrade/small.txt".into(),
            format!("put before the upgrade, run {}\n", std::process::id()),
        ),
        (BUCKETS[1], "upgrade/big.txt".into(), big),
    ];
    for (b, k, body) in &objects {
        put(b, k, body);
    }
    let volume = lab.labdir.dir.join("data").join(GUEST).join("volume");
    let st = lab.status();
    assert_eq!(
        row(&st, GUEST)["data_volume"],
        volume.to_str().unwrap(),
        "status names the data volume"
    );
    assert!(
        volume.join(BUCKETS[0]).join("upgrade").exists(),
        "the object is not on the volume {}",
        volume.display()
    );
    // Under the mount point, in the root itself, the data dir stays empty.
    let under = rootfs.join("var/lib/minio");
    assert_eq!(
        fs::read_dir(&under).map(|d| d.count()).unwrap_or(0),
        0,
        "data was written into the root's {} instead of the volume",
        under.display()
    );
    let in_old_root = rootfs.join("root/written-before-the-upgrade");
    fs::write(&in_old_root, b"the old root").unwrap();

    // The volume as a privileged run (imgbuild before unprivileged
    // containers) left it: the guest powered off, its data owned by the
    // unshifted ids. The upgrade's start shifts it back in place.
    let _ = lab.run(
        lab.cmd("ssh").args([GUEST, "systemctl", "poweroff"]),
        Duration::from_secs(60),
        "imgbuild ssh lab1 systemctl poweroff",
    );
    e2e::poll(
        "the container powers off",
        Duration::from_secs(90),
        Duration::from_millis(500),
        |why| {
            let st = lab.status();
            *why = row(&st, GUEST)["state"].to_string();
            Ok((row(&st, GUEST)["state"] == "stopped").then_some(()))
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let n = userns::unshift_tree(&volume);
    let minio_uid = userns::host_uid(rootfs, "minio-user");
    assert_eq!(
        fs::metadata(&volume).unwrap().uid(),
        minio_uid - userns::BASE
    );

    // A normal upgrade.
    let sha0 = image_sha(lab);
    add_marker_to_recipe(lab, "upgrade-1");
    let t = Instant::now();
    let o = lab.run(&mut lab.up_cmd(), UP, "imgbuild up (upgrade)");
    assert!(o.ok(), "up (upgrade) failed:\n{}", tail(&o.stderr, 60));
    let rows: Vec<serde_json::Value> = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(row(&rows, GUEST)["action"], "created", "{rows:?}");
    assert_eq!(row(&rows, GUEST)["state"], "ready", "{rows:?}");
    assert!(
        o.stderr.contains("upgrade, data kept"),
        "up does not say the data is kept:\n{}",
        tail(&o.stderr, 30)
    );
    assert_ne!(image_sha(lab), sha0, "the image did not change");
    assert!(
        rootfs
            .join("usr/local/share/imgbuild-e2e-upgrade-1")
            .is_file(),
        "the new image's file is not in the root"
    );
    assert!(!in_old_root.exists(), "the root was not replaced");
    agent_ready(rootfs);
    for (b, k, body) in &objects {
        assert!(get(b, k) == *body, "{b}/{k} changed across the upgrade");
    }
    let shifted = userns::assert_tree_shifted(&volume);
    assert_eq!(fs::metadata(&volume).unwrap().uid(), minio_uid);
    say(
        t0,
        format!("upgrade over a privileged run's volume: {n} entries unshifted before, {shifted} owned by shifted ids after, objects intact"),
    );
    say(
        t0,
        format!(
            "upgrade (re-bake + recreate + ready) in {:.1} s; {} objects read back through S3",
            t.elapsed().as_secs_f64(),
            objects.len()
        ),
    );

    // A second upgrade, cut during its first boot after one more object.
    add_marker_to_recipe(lab, "upgrade-2");
    objects.push((
        BUCKETS[0],
        "upgrade/during-first-boot.txt".into(),
        "put during the upgraded guest's first boot\n".into(),
    ));
    let during = objects.last().unwrap().clone();
    let t = Instant::now();
    let (at, after) = cut_first_boot(lab, rootfs, &CUTS[2], || {
        put(during.0, &during.1, &during.2)
    });
    say(
        t0,
        format!(
            "second upgrade cut at `{}` (seen {}; status.json after: {}) after {:.1} s",
            CUTS[2].name,
            position(&at),
            position(&after),
            t.elapsed().as_secs_f64()
        ),
    );
    assert!(rootfs
        .join("usr/local/share/imgbuild-e2e-upgrade-2")
        .is_file());
    let t = Instant::now();
    let rows = lab.up(UP);
    assert_eq!(row(&rows, GUEST)["action"], "restarted", "{rows:?}");
    assert_eq!(row(&rows, GUEST)["state"], "ready", "{rows:?}");
    let status = agent_ready(rootfs);
    assert!(status.steps.iter().all(|s| s.state == StepState::Done));
    for (b, k, body) in &objects {
        assert!(get(b, k) == *body, "{b}/{k} changed across the cut upgrade");
    }
    say(
        t0,
        format!(
            "up after the cut upgrade: ready in {:.1} s, all {} objects intact",
            t.elapsed().as_secs_f64(),
            objects.len()
        ),
    );

    // down keeps the volume (the next up mounts it, as the upgrades did).
    let o = lab.down_keep_data();
    assert!(
        o.stderr.contains("kept lab1's data volume"),
        "down does not say it kept the data:\n{}",
        o.stderr
    );
    assert!(!lab.guest_dir(GUEST).exists() && !lab.labdir.state_file().exists());
    let (b, k, _) = &objects[0];
    let kept = volume.join(b).join(k);
    assert!(kept.exists(), "{} is gone after down", kept.display());
    say(t0, "down kept the data volume".into());
}

/// A point during first boot where the power is cut.
struct Cut {
    name: &'static str,
    reached: fn(&Status) -> bool,
    /// Put an object into S3 right before cutting (the object store is up).
    put_before: bool,
}

/// Spark's own S3 user (issue 9 item 7): the object store created it on
/// first boot; a real S3 client signed as it reaches the lab's buckets and
/// is refused elsewhere; Spark's conf (root:spark 0640) holds that user and
/// the cluster secret, never the root password.
fn spark_identity_checks(lab: &UpLab, rootfs: &Path, status: &Status, t0: Instant) {
    let t = Instant::now();
    assert_eq!(
        step_state(status, "check:s3-users"),
        Some(StepState::Done),
        "{}",
        step_times(status)
    );
    let ns = Netns::existing(&lab.netns_name());
    let api = format!("{ADDR}:9000");
    let (user, secret) = (&lab.lab.spark_s3_user, &lab.lab.spark_s3_password);
    for b in BUCKETS {
        s3_put(Some(&ns), &api, user, secret, b, "spark/own.txt", b"spark")
            .unwrap_or_else(|e| panic!("Spark's S3 user in {b}: {e}"));
        let got = s3_get(Some(&ns), &api, user, secret, b, "spark/own.txt")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got, "spark");
    }
    let e = s3_put(Some(&ns), &api, user, secret, "e2e-private", "x", b"x")
        .expect_err("Spark's S3 user wrote outside its buckets");
    assert!(e.contains("AccessDenied"), "{e}");
    let conf = rootfs.join("opt/spark/conf/spark-defaults.conf");
    let meta = fs::metadata(&conf).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640, "{}", conf.display());
    // root:spark inside: the shifted ids on the host (unprivileged).
    assert_eq!(
        (meta.uid(), meta.gid()),
        (userns::BASE, userns::host_gid(rootfs, "spark")),
        "{}",
        conf.display()
    );
    let text = fs::read_to_string(&conf).unwrap();
    assert!(text.contains("spark.authenticate true\n"), "{text}");
    assert!(text.contains(&format!(
        "spark.authenticate.secret {}\n",
        lab.lab.spark_auth_secret
    )));
    assert!(text.contains(&format!("spark.hadoop.fs.s3a.access.key {user}\n")));
    assert!(
        !text.contains(&lab.lab.s3_password),
        "Spark's conf holds the root password"
    );
    say(
        t0,
        format!(
            "Spark's own S3 user: its buckets read/write, elsewhere AccessDenied; spark.authenticate on ({:.1} s)",
            t.elapsed().as_secs_f64()
        ),
    );
}

fn step_state(s: &Status, name: &str) -> Option<StepState> {
    s.steps.iter().find(|x| x.name == name).map(|x| x.state)
}

fn position(s: &Status) -> String {
    if let Some(x) = s.steps.iter().find(|x| x.state == StepState::Running) {
        return format!("during {}", x.name);
    }
    match s.steps.iter().rev().find(|x| x.state == StepState::Done) {
        Some(x) => format!("after {}", x.name),
        None => "before the first step".into(),
    }
}

fn step_times(s: &Status) -> String {
    s.steps
        .iter()
        .map(|x| format!("{}={}ms", x.name, x.duration_ms.unwrap_or(0)))
        .collect::<Vec<_>>()
        .join(" ")
}

const CUTS: &[Cut] = &[
    Cut {
        name: "files written",
        reached: |s| step_state(s, "files") == Some(StepState::Done),
        put_before: false,
    },
    Cut {
        name: "object store starting",
        reached: |s| {
            matches!(
                step_state(s, "start:minio.service"),
                Some(StepState::Running | StepState::Done)
            )
        },
        put_before: false,
    },
    Cut {
        name: "waiting for the Spark worker",
        reached: |s| step_state(s, "check:spark-workers") == Some(StepState::Running),
        put_before: true,
    },
];

fn agent_status(rootfs: &Path) -> Status {
    let p = rootfs.join("var/lib/imgbuild/status.json");
    serde_json::from_slice(&fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The agent's status once it says ready: `up` returns when the endpoints
/// answer, a moment before the agent's last checks and status write.
fn agent_ready(rootfs: &Path) -> Status {
    e2e::poll(
        "status.json ready",
        Duration::from_secs(120),
        Duration::from_millis(200),
        |why| {
            let s = agent_status(rootfs);
            *why = position(&s);
            Ok((s.state == State::Ready).then_some(s))
        },
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The container's init, from the pid `up` recorded for nspawn.
fn leader(lab: &UpLab) -> Option<u32> {
    let st: serde_json::Value =
        serde_json::from_slice(&fs::read(lab.labdir.state_file()).ok()?).ok()?;
    let nspawn = st["guests"][GUEST]["proc"]["pid"].as_u64()? as u32;
    for e in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(nspawn) {
            return Some(pid);
        }
    }
    None
}

fn power_cuts(lab: &UpLab, rootfs: &Path, reference: &AgentState, t0: Instant) {
    let key = "e2e/before-power-cut.txt";
    let body = format!("put before a power cut, run {}\n", std::process::id());
    let ns = Netns::existing(&lab.netns_name());
    for (i, cut) in CUTS.iter().enumerate() {
        let (at, after) = cut_first_boot(lab, rootfs, cut, || {
            if cut.put_before {
                s3_put(
                    Some(&ns),
                    &format!("{ADDR}:9000"),
                    &lab.lab.s3_user,
                    &lab.lab.s3_password,
                    BUCKETS[0],
                    key,
                    body.as_bytes(),
                )
                .unwrap_or_else(|e| panic!("{e}"))
            }
        });
        let st = lab.status();
        assert_eq!(
            row(&st, GUEST)["state"],
            "stopped",
            "status after the cut: {st:?}"
        );
        say(
            t0,
            format!(
                "power cut {} at `{}` (seen {}; status.json after: {}); up reported it, status says stopped",
                i + 1,
                cut.name,
                position(&at),
                position(&after)
            ),
        );
    }
    let t = Instant::now();
    let rows = lab.up(UP);
    let r = row(&rows, GUEST);
    assert_eq!(r["state"], "ready", "{r}");
    assert_eq!(r["action"], "restarted", "{r}");
    let status = agent_ready(rootfs);
    assert!(status.steps.iter().all(|s| s.state == StepState::Done));
    say(
        t0,
        format!(
            "up repaired it after {} power cuts: ready in {:.1} s; per step: {}",
            CUTS.len(),
            t.elapsed().as_secs_f64(),
            step_times(&status)
        ),
    );
    let got = s3_get(
        Some(&ns),
        &format!("{ADDR}:9000"),
        &lab.lab.s3_user,
        &lab.lab.s3_password,
        BUCKETS[0],
        key,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got, body, "the object put before the power cut changed");
    let (report, o) = lab.verify(Duration::from_secs(600));
    assert!(
        o.ok() && report["ok"] == true,
        "verify after the power cuts:\n{}",
        serde_json::to_string_pretty(&report).unwrap()
    );
    let now = agent_state(rootfs);
    let diffs = reference.diff(&now);
    assert!(
        diffs.is_empty(),
        "after power cuts the guest differs from the uncut run:\n{}",
        diffs.join("\n")
    );
    say(
        t0,
        "power-cut run converged: same agent files and accounts, object kept, verify passes".into(),
    );
}

/// Runs `up` in the background and kills the container's init (a power
/// cut) once its first boot reaches `cut`, calling `before_cut` right
/// before. `up` must fail naming the guest, and the agent must not have
/// finished. Returns the agent's status seen at the cut and after it.
fn cut_first_boot(
    lab: &UpLab,
    rootfs: &Path,
    cut: &Cut,
    before_cut: impl FnOnce(),
) -> (Status, Status) {
    // `up` in the background: it waits for readiness while we cut.
    let mut up = lab
        .up_cmd()
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting imgbuild up");
    let started = std::time::SystemTime::now();
    let mut cached_leader = None;
    let at = e2e::poll(
        cut.name,
        Duration::from_secs(600),
        Duration::from_millis(2),
        |why| {
            if let Ok(Some(st)) = up.try_wait() {
                return Err(format!("up exited ({st}) before the cut"));
            }
            let p = rootfs.join("var/lib/imgbuild/status.json");
            let fresh = fs::metadata(&p)
                .and_then(|m| m.modified())
                .is_ok_and(|m| m >= started);
            if !fresh {
                *why = "no status.json from this boot yet".into();
                return Ok(None);
            }
            if cached_leader.is_none() {
                cached_leader = leader(lab);
            }
            let Ok(s) = serde_json::from_slice::<Status>(&fs::read(&p).unwrap_or_default()) else {
                return Ok(None);
            };
            if s.state == State::Failed {
                return Err(format!("firstboot failed at {:?}", s.failed_step));
            }
            *why = position(&s);
            Ok((cut.reached)(&s).then_some(s))
        },
    )
    .unwrap_or_else(|e| panic!("cut at `{}`: {e}", cut.name));
    before_cut();
    let pid = cached_leader
        .or_else(|| leader(lab))
        .expect("the container's init");
    let _ = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    // `up` notices at its next round; bounded, so a hang fails with its output.
    let end = Instant::now() + Duration::from_secs(300);
    while up.try_wait().unwrap().is_none() {
        if Instant::now() >= end {
            let _ = up.kill();
            let o = up.wait_with_output().unwrap();
            panic!(
                "up still running 300 s after its guest was killed:\n{}",
                tail(&String::from_utf8_lossy(&o.stderr), 40)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let o = up.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "up succeeded although its guest was killed:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("{GUEST}: gone"))
            || stderr.contains(&format!("{GUEST} (stopped)")),
        "up does not name the killed guest:\n{}",
        tail(&stderr, 20)
    );
    let after = agent_status(rootfs);
    assert_eq!(
        after.state,
        State::Running,
        "the cut at `{}` came too late",
        cut.name
    );
    (at, after)
}

/// Issue 10 item 5: apt's timers are enabled and waiting, and apt itself
/// reads the agent's configuration as meant: periodic upgrades on, only
/// security origins (the package's list cleared), no automatic reboot.
fn security_updates_checks(lab: &UpLab, t0: Instant) {
    let ssh = |cmd: &str| {
        let o = lab.run(
            lab.cmd("ssh").args([GUEST, cmd]),
            SSH_LOGIN,
            &format!("imgbuild ssh {GUEST} {cmd}"),
        );
        assert!(o.ok(), "{cmd}: {}\n{}", o.stdout, o.stderr);
        o.stdout
    };
    let timers = ssh(
        "systemctl is-enabled apt-daily.timer apt-daily-upgrade.timer; systemctl is-active apt-daily.timer apt-daily-upgrade.timer",
    );
    assert_eq!(
        timers.split_whitespace().collect::<Vec<_>>(),
        ["enabled", "enabled", "active", "active"],
        "apt's timers: {timers}"
    );
    let dump = ssh("apt-config dump");
    let values: Vec<&str> = dump
        .lines()
        .filter(|l| {
            l.starts_with("APT::Periodic::")
                || l.starts_with("Unattended-Upgrade::Allowed-Origins")
                || l.starts_with("Unattended-Upgrade::Origins-Pattern")
                || l.starts_with("Unattended-Upgrade::Automatic-Reboot")
        })
        .collect();
    for want in [
        "APT::Periodic::Update-Package-Lists \"1\";",
        "APT::Periodic::Unattended-Upgrade \"1\";",
        "Unattended-Upgrade::Automatic-Reboot \"false\";",
    ] {
        assert!(
            values.contains(&want),
            "apt-config lacks {want}: {values:#?}"
        );
    }
    let origins: Vec<&&str> = values
        .iter()
        .filter(|l| {
            l.starts_with("Unattended-Upgrade::Allowed-Origins:: ")
                || l.starts_with("Unattended-Upgrade::Origins-Pattern:: ")
        })
        .collect();
    assert!(
        origins.len() == 3 && origins.iter().all(|l| l.contains("-security\"")),
        "unattended-upgrades' origins are not the security pockets only: {values:#?}"
    );
    let installed = ssh("test -x /usr/bin/unattended-upgrade && echo yes || echo no");
    say(
        t0,
        format!(
            "security updates: apt-daily{{,-upgrade}}.timer enabled and active; apt reads {} security origins, no automatic reboot; unattended-upgrades installed in the test base: {}",
            origins.len(),
            installed.trim()
        ),
    );
}

/// HTTP status of a GET from the host (0: no answer).
/// Issue 11: the agent's readiness checked every metrics endpoint (node
/// exporter, MinIO's cluster metrics, Spark's servlets); its outcome is in
/// the textfile collector and the exporter serves it; the exporter answers
/// the lab's monitoring address and drops the gateway's; its idle memory
/// and CPU are measured.
fn metrics_checks(lab: &UpLab, rootfs: &Path, status: &Status, t0: Instant) {
    for step in [
        "check:node-exporter",
        "check:minio-metrics",
        "check:spark-master-metrics",
        "check:spark-worker-metrics",
    ] {
        assert_eq!(
            step_state(status, step),
            Some(StepState::Done),
            "{step}: {}",
            position(status)
        );
    }
    let prom =
        fs::read_to_string(rootfs.join("var/lib/node_exporter/textfile/imgbuild_firstboot.prom"))
            .expect("the agent's textfile");
    let id = status.instance_id.as_deref().unwrap();
    assert!(
        prom.contains(&format!("imgbuild_firstboot_info{{instance_id=\"{id}\","))
            && prom.contains("imgbuild_firstboot_ready 1\n"),
        "{prom}"
    );
    let ns = lab.netns_name();
    let ip = |args: &[&str]| {
        Command::new("ip")
            .args(["-n", &ns])
            .args(args)
            .status()
            .expect("ip")
    };
    assert!(ip(&["addr", "add", "10.77.0.5/24", "dev", "vmbr0"]).success());
    // The allowed address gets its answer however loaded the machine is;
    // the other one waits 5 s for an answer that must never come.
    let curl = |from: &str, max_secs: &str| {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns,
                "curl",
                "-s",
                "-m",
                max_secs,
                "--interface",
                from,
            ])
            .arg(format!("http://{ADDR}:9100/metrics"))
            .output()
            .expect("curl")
    };
    let allowed = curl("10.77.0.5", "60");
    let other = curl("10.77.0.1", "5");
    ip(&["addr", "del", "10.77.0.5/24", "dev", "vmbr0"]);
    let body = String::from_utf8_lossy(&allowed.stdout);
    assert!(
        allowed.status.success()
            && body.contains("node_cpu_seconds_total")
            && body.contains("imgbuild_firstboot_ready 1"),
        "the exporter from the monitoring address: {}\n{}",
        String::from_utf8_lossy(&allowed.stderr),
        &body[..body.len().min(2000)]
    );
    // curl exit 28: timed out (dropped), not refused (7).
    assert_eq!(other.status.code(), Some(28), "from the gateway: {other:?}");
    // The exporter at idle: resident memory and CPU over 10 s.
    // The container's node_exporter: the one in its unit's cgroup among the
    // guest's processes (its own mount namespace hides which root it sees;
    // another lab on this machine may run one too).
    let pid = lab
        .guest_pids(GUEST)
        .into_iter()
        .map(|p| std::path::PathBuf::from(format!("/proc/{p}")))
        .find(|p| {
            fs::read_to_string(p.join("comm")).is_ok_and(|c| c.trim() == "node_exporter")
                && fs::read_to_string(p.join("cgroup"))
                    .is_ok_and(|c| c.contains("/node-exporter.service"))
        })
        .expect("a node_exporter process in the container");
    let ticks = || {
        let stat = fs::read_to_string(pid.join("stat")).unwrap();
        let f: Vec<&str> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let (c0, w0) = (ticks(), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let cpu = (ticks() - c0) as f64 / 100.0 / w0.elapsed().as_secs_f64() * 100.0;
    let rss = fs::read_to_string(pid.join("status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    say(
        t0,
        format!("metrics: all endpoints ready; node exporter answers 10.77.0.5, drops 10.77.0.1; idle RSS {rss}, CPU {cpu:.2}% of a core over 10 s (unscraped)"),
    );
}

fn http_code(url: &str) -> u32 {
    let o = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "--connect-timeout",
            "10",
            "-m",
            "30",
            "--retry",
            "3",
            "--retry-connrefused",
            "-w",
            "%{http_code}",
            url,
        ])
        .output()
        .expect("curl");
    String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Everything the agent owns in a root: the plan (`firstboot --plan` with
/// the guest's own static agent), each planned file, directory and link
/// (mode, owner, contents), the run-once marker, the service accounts.
/// Mode, uid, gid and contents (a link's target) of one path, or why not.
type Described = Result<(u32, u32, u32, Vec<u8>), String>;

struct AgentState {
    plan: String,
    files: BTreeMap<String, Described>,
    accounts: BTreeMap<String, String>,
}

fn agent_state(root: &Path) -> AgentState {
    let o = run_ok(
        Command::new(root.join("usr/local/sbin/firstboot"))
            .arg("--root")
            .arg(root)
            .arg("--plan"),
        None,
        Duration::from_secs(30),
        "firstboot --plan",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let plan = o.stdout;
    let mut paths: Vec<String> = Vec::new();
    for line in plan.lines() {
        if let Some(rest) = line.strip_prefix("=== file ") {
            paths.push(rest.split(' ').next().unwrap().into());
        } else if let Some(rest) = line.strip_prefix("dir ").or(line.strip_prefix("link ")) {
            paths.push(rest.split(' ').next().unwrap().into());
        }
    }
    assert!(paths.len() > 10, "the plan lists too little:\n{plan}");
    paths.push("/var/lib/imgbuild/applied-instance".into());
    let files = paths
        .into_iter()
        .map(|p| {
            let f = root.join(p.trim_start_matches('/'));
            let d = fs::symlink_metadata(&f)
                .map_err(|e| e.to_string())
                .map(|m| {
                    let content = if m.file_type().is_symlink() {
                        fs::read_link(&f)
                            .unwrap()
                            .into_os_string()
                            .into_encoded_bytes()
                    } else if m.is_file() {
                        fs::read(&f).unwrap()
                    } else {
                        Vec::new()
                    };
                    (m.mode(), m.uid(), m.gid(), content)
                });
            (p, d)
        })
        .collect();
    let mut accounts = BTreeMap::new();
    for file in ["etc/passwd", "etc/group"] {
        for l in fs::read_to_string(root.join(file)).unwrap().lines() {
            if l.starts_with("minio-user:") || l.starts_with("spark:") {
                accounts.insert(
                    format!("{file}:{}", l.split(':').next().unwrap()),
                    l.to_string(),
                );
            }
        }
    }
    assert_eq!(accounts.len(), 4, "service accounts: {accounts:?}");
    AgentState {
        plan,
        files,
        accounts,
    }
}

impl AgentState {
    fn diff(&self, other: &AgentState) -> Vec<String> {
        let mut d = Vec::new();
        if self.plan != other.plan {
            d.push("the plans differ".into());
        }
        for (p, a) in &self.files {
            let b = other.files.get(p);
            if b != Some(a) {
                d.push(match (a, b) {
                    (Ok(x), Some(Ok(y))) => format!(
                        "{p}: mode/uid/gid {:o}/{}/{} vs {:o}/{}/{}{}",
                        x.0,
                        x.1,
                        x.2,
                        y.0,
                        y.1,
                        y.2,
                        if x.3 != y.3 { ", contents differ" } else { "" }
                    ),
                    (x, y) => format!(
                        "{p}: {:?} vs {:?}",
                        x.as_ref().err(),
                        y.map(|y| y.as_ref().err())
                    ),
                });
            }
        }
        if self.accounts != other.accounts {
            d.push(format!(
                "accounts {:?} vs {:?}",
                self.accounts, other.accounts
            ));
        }
        d
    }
}
