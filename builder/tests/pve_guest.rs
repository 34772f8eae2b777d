//! `imgbuild pve-guest create|start` and a container config's
//! `unprivileged` key, through the real binary on the test base template
//! (GNU tar, a user namespace; nothing boots, about 10 s): `unprivileged: 1`
//! extracts the root as pct does with Proxmox's id map (owned by 100000 on
//! this host, setuid bits kept), and what pct writes (SSH keys, the mount
//! point's volume) is the container root's; `unprivileged: 0` or no key:
//! privileged, owned by 0; `start` refuses a root created in the other mode;
//! a bad value is bad input naming its line.
//!
//! Needs root and the cached peers from `scripts/peers` (IMGBUILD_TEST_CACHE).

mod e2e;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use e2e::*;

const CONF: &str = "\
arch: amd64
hostname: t1
mp0: local-lvm:vm-300-disk-1,mp=/var/lib/minio,size=1G
nameserver: 10.79.0.1
net0: name=eth0,bridge=vmbr0,gw=10.79.0.1,hwaddr=02:A1:B2:C3:D4:E9,ip=10.79.0.10/24,type=veth
ostype: ubuntu
rootfs: local-lvm:vm-300-disk-0,size=8G
unprivileged: 1
";

fn owner(p: &Path) -> (u32, u32, u32) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

#[test]
fn unprivileged_is_extracted_shifted_privileged_is_not_and_start_refuses_a_switch() {
    let peers = Peers::require();
    let template = peers
        .mirror
        .join("ubuntu-22.04-standard_22.04-1_amd64.tar.zst");
    let work = tempfile::Builder::new()
        .prefix("imgbuild-pve-guest.")
        .tempdir()
        .unwrap();
    let d = work.path();
    fs::write(
        d.join("keys"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAItest test\n",
    )
    .unwrap();
    let run = |conf: &str, vols: &Path, args: &[&str]| -> Output {
        let c = vols.join("300.conf");
        fs::create_dir_all(vols).unwrap();
        fs::write(&c, conf).unwrap();
        let mut cmd = imgbuild(&peers);
        cmd.arg("pve-guest")
            .arg(args[0])
            .arg("--config")
            .arg(&c)
            .arg("--volume")
            .arg(format!(
                "local-lvm:vm-300-disk-0={}",
                vols.join("root").display()
            ))
            .arg("--volume")
            .arg(format!(
                "local-lvm:vm-300-disk-1={}",
                vols.join("data").display()
            ))
            .args(&args[1..]);
        run_timeout(
            &mut cmd,
            None,
            Duration::from_secs(300),
            "imgbuild pve-guest",
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let create = |conf: &str, vols: &Path| {
        let o = run(
            conf,
            vols,
            &[
                "create",
                "--ostemplate",
                template.to_str().unwrap(),
                "--ssh-public-keys",
                d.join("keys").to_str().unwrap(),
            ],
        );
        assert!(o.ok(), "pve-guest create:\n{}", o.stderr);
    };

    let unpriv = d.join("unpriv");
    create(CONF, &unpriv);
    let root = unpriv.join("root");
    assert_eq!(owner(&root).0, 100_000, "the root's top");
    assert_eq!(owner(&root.join("etc/passwd")), (100_000, 100_000, 0o644));
    assert_eq!(
        owner(&root.join("usr/bin/passwd")),
        (100_000, 100_000, 0o4755)
    );
    let shadow = owner(&root.join("etc/shadow"));
    assert_eq!(shadow.0, 100_000);
    assert!(
        shadow.1 > 100_000,
        "etc/shadow's group (shadow) shifted: {shadow:?}"
    );
    assert_eq!(owner(&root.join("root/.ssh")), (100_000, 100_000, 0o700));
    assert_eq!(
        owner(&root.join("root/.ssh/authorized_keys")),
        (100_000, 100_000, 0o600)
    );
    assert_eq!(owner(&unpriv.join("data")).0, 100_000, "mp0's volume");

    let privileged = d.join("priv");
    create(&CONF.replace("unprivileged: 1\n", ""), &privileged);
    let proot = privileged.join("root");
    assert_eq!(owner(&proot.join("usr/bin/passwd")), (0, 0, 0o4755));
    assert_eq!(
        owner(&proot.join("root/.ssh/authorized_keys")),
        (0, 0, 0o600)
    );
    assert_eq!(owner(&privileged.join("data")).0, 0);

    // `unprivileged` is fixed at creation, as on Proxmox.
    let ns = Netns::new("pveg");
    ns.ip(&["link", "add", "vmbr0", "type", "bridge"]).unwrap();
    let run_dir = d.join("run");
    let start = |conf: &str| {
        run(
            conf,
            &unpriv,
            &[
                "start",
                "--netns",
                &ns.name,
                "--run-dir",
                run_dir.to_str().unwrap(),
            ],
        )
    };
    let o = start(&CONF.replace("unprivileged: 1", "unprivileged: 0"));
    assert_eq!(o.status.code(), Some(1), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("was created unprivileged, but the config says `unprivileged: 0`"),
        "{}",
        o.stderr
    );
    let o = start(&CONF.replace("unprivileged: 1", "unprivileged: true"));
    assert_eq!(o.status.code(), Some(2), "{}", o.stderr);
    assert!(
        o.stderr
            .contains("300.conf:8:1: unprivileged: `true`: expected 1 or 0"),
        "{}",
        o.stderr
    );
    assert!(!d.join("run/running.json").exists(), "nothing was started");
}
