//! The VM bake against real peers: a small synthetic base shaped like
//! Ubuntu's cloud image (GPT with p14 BIOS boot, p15 ESP, p1 ext4
//! `cloudimg-rootfs` last by position) built with sgdisk, mkfs.vfat, mke2fs
//! and qemu-img; the baked output checked with `qemu-img check`, `sgdisk -v`,
//! `e2fsck -fn` and `debugfs`. When the cached Ubuntu-shaped test base exists,
//! it is baked too.

use std::path::{Path, PathBuf};
use std::process::Command;

use imgbuild::bake::vm::{self, VmBakeError, VmBakeOptions};
use imgbuild::payload::{Node, Tree};

const MIB: u64 = 1 << 20;

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{text}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn cmd(program: &str, args: &[&str]) -> Command {
    let mut c = Command::new(program);
    c.args(args).env("LC_ALL", "C");
    c
}

/// Deterministic pseudo-random bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

const P1_START: u64 = 26624; // sectors, after p14 (4 MiB) and p15 (8 MiB)

/// Builds a 64 MiB Ubuntu-shaped qcow2 base in `dir` and returns its path.
fn make_base(dir: &Path) -> PathBuf {
    let raw = dir.join("base.raw");
    std::fs::File::create(&raw)
        .unwrap()
        .set_len(64 * MIB)
        .unwrap();
    let r = raw.to_str().unwrap();
    run(&mut cmd(
        "sgdisk",
        &[
            "-U",
            "11111111-2222-3333-4444-555555555555",
            "-n",
            "14:2048:+4M",
            "-t",
            "14:EF02",
            "-u",
            "14:14141414-0000-0000-0000-000000000000",
            "-n",
            "15:0:+8M",
            "-t",
            "15:EF00",
            "-c",
            "15:UEFI",
            "-u",
            "15:15151515-0000-0000-0000-000000000000",
            "-n",
            "1:0:0",
            "-t",
            "1:8300",
            "-c",
            "1:cloudimg-rootfs",
            "-u",
            "1:01010101-0000-0000-0000-000000000000",
            r,
        ],
    ));
    run(&mut cmd(
        "mkfs.vfat",
        &[
            "--offset", "10240", "-n", "UEFI", "-i", "12345678", r, "8192",
        ],
    ));

    let tree = dir.join("rootfs");
    for d in ["etc", "usr/local/bin", "opt", "var/lib"] {
        std::fs::create_dir_all(tree.join(d)).unwrap();
    }
    std::fs::write(tree.join("etc/hostname"), "base\n").unwrap();
    std::fs::write(tree.join("etc/os-release"), "ID=ubuntu\n").unwrap();
    let blocks = (64 * MIB - 34 * 512 - P1_START * 512) / 4096;
    let offset = format!("offset={}", P1_START * 512);
    let t = tree.to_str().unwrap();
    run(cmd(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-g",
            "4096",
            "-L",
            "cloudimg-rootfs",
        ],
    )
    .args([
        "-U",
        "01234567-89ab-cdef-0123-456789abcdef",
        "-E",
        &offset,
        "-d",
        t,
        r,
    ])
    .arg(blocks.to_string())
    .env("E2FSPROGS_FAKE_TIME", "1700000000"));
    let qcow = dir.join("base.qcow2");
    run(&mut cmd(
        "qemu-img",
        &[
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            r,
            qcow.to_str().unwrap(),
        ],
    ));
    std::fs::remove_file(&raw).unwrap();
    qcow
}

fn payload(host_dir: &Path) -> Tree {
    let big = host_dir.join("data.bin");
    std::fs::write(&big, noise(3 * MIB as usize + 123, 7)).unwrap();
    let mut t = Tree::new();
    t.insert("/opt/demo", Node::dir(0o755)).unwrap();
    t.insert("/opt/demo/bin", Node::dir(0o755)).unwrap();
    t.insert(
        "/opt/demo/bin/run",
        Node::bytes(&b"#!/bin/sh\necho run\n"[..], 0o755),
    )
    .unwrap();
    t.insert("/opt/demo/lib", Node::dir(0o750)).unwrap();
    t.insert(
        "/opt/demo/lib/data.bin",
        Node::host_file(&big, 0o644).unwrap(),
    )
    .unwrap();
    t.insert("/opt/demo/current", Node::symlink("bin")).unwrap();
    t.insert("/opt/demo/a", Node::dir(0o755)).unwrap();
    t.insert("/opt/demo/a/b", Node::dir(0o700)).unwrap();
    t.insert("/opt/demo/a/b/deep.txt", Node::bytes(&b"deep\n"[..], 0o640))
        .unwrap();
    let mut secret = Node::bytes(&b"s3cr3t\n"[..], 0o600);
    secret.uid = 1000;
    secret.gid = 1000;
    t.insert("/opt/demo/secret", secret).unwrap();
    let long =
        "/opt/demo/a/b/../../lib/a-rather-long-target-name-that-does-not-fit-in-the-inode.bin";
    t.insert("/opt/demo/longlink", Node::symlink(long)).unwrap();
    t.insert(
        "/usr/local/bin/tool",
        Node::bytes(&b"#!/bin/sh\n"[..], 0o755),
    )
    .unwrap();
    // Replaces a file of the base.
    t.insert("/etc/hostname", Node::bytes(&b"baked\n"[..], 0o644))
        .unwrap();
    // Many entries in one directory, so it spans several blocks.
    t.insert("/opt/demo/many", Node::dir(0o755)).unwrap();
    for i in 0..300 {
        let n = Node::bytes(noise(100 + i, i as u64), 0o644);
        t.insert(
            &format!("/opt/demo/many/file-with-a-longish-name-{i:04}.jar"),
            n,
        )
        .unwrap();
    }
    t
}

fn opts() -> VmBakeOptions {
    VmBakeOptions {
        headroom_bytes: 8 * MIB,
        timestamp: 1_704_067_200,
        ..Default::default()
    }
}

/// Converts a baked qcow2 to raw and returns the raw path and p1's byte offset
/// as sgdisk reports it.
fn to_raw(qcow: &Path, dir: &Path) -> (PathBuf, u64) {
    let raw = dir.join("check.raw");
    run(&mut cmd(
        "qemu-img",
        &[
            "convert",
            "-q",
            "-O",
            "raw",
            qcow.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    ));
    let info = run(&mut cmd("sgdisk", &["-i", "1", raw.to_str().unwrap()]));
    let first: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("First sector: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no first sector in:\n{info}"));
    (raw, first * 512)
}

fn debugfs(raw: &Path, offset: u64, request: &str) -> String {
    let dev = format!("{}?offset={offset}", raw.display());
    run(&mut cmd("debugfs", &["-R", request, &dev]))
}

#[test]
fn bake_writes_payload_and_passes_real_checkers() {
    let dir = tempfile::tempdir().unwrap();
    let base = make_base(dir.path());
    let host = dir.path().join("host");
    std::fs::create_dir(&host).unwrap();
    let tree = payload(&host);
    let dist = dir.path().join("dist");
    std::fs::create_dir(&dist).unwrap();
    let out = dist.join("vm.qcow2");
    let stats = vm::bake(&base, &tree, &out, &opts()).unwrap();
    eprintln!("{stats:#?}");
    assert_eq!(stats.root_partition, 1);
    assert_eq!(stats.root_offset, P1_START * 512);
    assert!(stats.disk_bytes > 64 * MIB && stats.disk_bytes % MIB == 0);
    // Only the output is left in dist/.
    let left: Vec<_> = std::fs::read_dir(&dist)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["vm.qcow2"]);

    let check = run(&mut cmd("qemu-img", &["check", out.to_str().unwrap()]));
    assert!(check.contains("No errors were found"), "{check}");
    let (raw, offset) = to_raw(&out, dir.path());
    assert_eq!(offset, P1_START * 512);
    assert_eq!(std::fs::metadata(&raw).unwrap().len(), stats.disk_bytes);
    let v = run(&mut cmd("sgdisk", &["-v", raw.to_str().unwrap()]));
    assert!(v.contains("No problems found"), "{v}");
    // p1 now reaches the last usable sector; p14/p15 are untouched.
    let p = run(&mut cmd("sgdisk", &["-p", raw.to_str().unwrap()]));
    let last_usable = stats.disk_bytes / 512 - 34;
    assert!(
        p.contains(&format!("{}  ", P1_START)) && p.contains(&format!("{last_usable}")),
        "{p}"
    );
    assert!(p.contains("2048           10239"), "{p}");
    let dev = format!("{}?offset={offset}", raw.display());
    let fsck = run(&mut cmd("e2fsck", &["-fn", &dev]));
    assert!(fsck.contains("cloudimg-rootfs"), "{fsck}");
    // The ESP is still a FAT filesystem labelled UEFI.
    let blkid = run(&mut cmd(
        "blkid",
        &[
            "-p",
            "-O",
            &(10240 * 512).to_string(),
            "-o",
            "export",
            raw.to_str().unwrap(),
        ],
    ));
    assert!(
        blkid.contains("LABEL=UEFI") && blkid.contains("TYPE=vfat"),
        "{blkid}"
    );

    // Filesystem size fills the grown partition.
    let stats_out = debugfs(&raw, offset, "stats");
    let blocks: u64 = stats_out
        .lines()
        .find_map(|l| l.strip_prefix("Block count:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(blocks, stats.fs_blocks_after);
    assert_eq!(blocks, (last_usable + 1 - P1_START) * 512 / 4096);

    // The superblock's last-write time is pinned (libext2fs stamps the clock).
    let mut stats_cmd = cmd("debugfs", &["-R", "stats", &dev]);
    let pinned = run(stats_cmd.env("TZ", "UTC"));
    assert!(
        pinned.contains("Last write time:          Mon Jan  1 00:00:00 2024"),
        "{pinned}"
    );

    // Contents, owners and modes.
    assert_eq!(
        debugfs(&raw, offset, "cat /opt/demo/bin/run"),
        "#!/bin/sh\necho run\n"
    );
    assert_eq!(debugfs(&raw, offset, "cat /etc/hostname"), "baked\n");
    assert_eq!(debugfs(&raw, offset, "cat /etc/os-release"), "ID=ubuntu\n");
    let data = dir.path().join("data.out");
    debugfs(
        &raw,
        offset,
        &format!("dump /opt/demo/lib/data.bin {}", data.display()),
    );
    assert_eq!(
        std::fs::read(&data).unwrap(),
        noise(3 * MIB as usize + 123, 7)
    );
    for i in [0usize, 150, 299] {
        let name = format!("/opt/demo/many/file-with-a-longish-name-{i:04}.jar");
        debugfs(&raw, offset, &format!("dump {name} {}", data.display()));
        assert_eq!(std::fs::read(&data).unwrap(), noise(100 + i, i as u64));
    }
    let stat = |p: &str| debugfs(&raw, offset, &format!("stat {p}"));
    let s = stat("/opt/demo/secret");
    assert!(s.contains("Type: regular    Mode:  0600"), "{s}");
    assert!(s.contains("User:  1000   Group:  1000"), "{s}");
    assert!(s.contains("mtime: 0x65920080"), "{s}");
    let s = stat("/opt/demo/bin/run");
    assert!(
        s.contains("Mode:  0755") && s.contains("User:     0   Group:     0"),
        "{s}"
    );
    let s = stat("/opt/demo/a/b");
    assert!(s.contains("Type: directory    Mode:  0700"), "{s}");
    let s = stat("/opt/demo/lib");
    assert!(s.contains("Type: directory    Mode:  0750"), "{s}");
    let s = stat("/opt/demo/current");
    assert!(
        s.contains("Type: symlink") && s.contains("Fast link dest: \"bin\""),
        "{s}"
    );
    let s = stat("/opt/demo/longlink");
    assert!(s.contains("Type: symlink"), "{s}");
    assert_eq!(
        debugfs(&raw, offset, "cat /opt/demo/longlink"),
        "/opt/demo/a/b/../../lib/a-rather-long-target-name-that-does-not-fit-in-the-inode.bin"
    );
    let s = stat("/usr/local/bin/tool");
    assert!(s.contains("Mode:  0755"), "{s}");
    assert_eq!(
        debugfs(&raw, offset, "cat /opt/demo/a/b/deep.txt"),
        "deep\n"
    );
}

#[test]
fn same_inputs_give_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let base = make_base(dir.path());
    let tree = payload(dir.path());
    for compress in [false, true] {
        let o = VmBakeOptions { compress, ..opts() };
        let a = dir.path().join(format!("a-{compress}.qcow2"));
        let b = dir.path().join(format!("b-{compress}.qcow2"));
        vm::bake(&base, &tree, &a, &o).unwrap();
        // libext2fs stamps times with one-second resolution.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        vm::bake(&base, &tree, &b, &o).unwrap();
        let (x, y) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        assert!(x == y, "bakes differ (compress={compress})");
        if compress {
            let info = run(&mut cmd("qemu-img", &["info", a.to_str().unwrap()]));
            assert!(info.contains("compression type: zstd"), "{info}");
            let check = run(&mut cmd("qemu-img", &["check", a.to_str().unwrap()]));
            assert!(check.contains("No errors were found"), "{check}");
        }
    }
}

/// Bakes expecting an error; checks the message and that `dist` stays empty.
fn bake_fails(
    base: &Path,
    tree: &Tree,
    opts: &VmBakeOptions,
    dist: &Path,
    expect: &str,
) -> anyhow::Error {
    let err = vm::bake(base, tree, &dist.join("out.qcow2"), opts).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(expect), "expected {expect:?} in: {msg}");
    let left: Vec<_> = std::fs::read_dir(dist)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind in dist: {left:?}");
    err
}

#[test]
fn bad_inputs_fail_clearly_and_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let base = make_base(dir.path());
    let tree = payload(dir.path());
    let dist = dir.path().join("dist");
    std::fs::create_dir(&dist).unwrap();

    // Not qcow2.
    let raw = dir.path().join("plain.raw");
    run(&mut cmd(
        "qemu-img",
        &[
            "convert",
            "-q",
            "-O",
            "raw",
            base.to_str().unwrap(),
            raw.to_str().unwrap(),
        ],
    ));
    bake_fails(&raw, &tree, &opts(), &dist, "is \"raw\", not qcow2");

    // qcow2 without a GPT: a bare ext4 filesystem.
    let bare = dir.path().join("bare.raw");
    std::fs::File::create(&bare)
        .unwrap()
        .set_len(16 * MIB)
        .unwrap();
    run(&mut cmd(
        "mke2fs",
        &[
            "-q",
            "-F",
            "-t",
            "ext4",
            "-L",
            "cloudimg-rootfs",
            bare.to_str().unwrap(),
        ],
    ));
    let bare_q = dir.path().join("bare.qcow2");
    run(&mut cmd(
        "qemu-img",
        &[
            "convert",
            "-q",
            "-O",
            "qcow2",
            bare.to_str().unwrap(),
            bare_q.to_str().unwrap(),
        ],
    ));
    bake_fails(&bare_q, &tree, &opts(), &dist, "no GPT");

    // No partition with the label.
    let o = VmBakeOptions {
        root_label: "no-such-root".into(),
        ..opts()
    };
    bake_fails(
        &base,
        &tree,
        &o,
        &dist,
        "no partition named or labelled \"no-such-root\"",
    );

    // The labelled partition is not ext4 (the ESP is FAT).
    let o = VmBakeOptions {
        root_label: "UEFI".into(),
        ..opts()
    };
    bake_fails(&base, &tree, &o, &dist, "not an ext2/3/4 filesystem");

    // The payload does not fit the maximum disk size.
    let o = VmBakeOptions {
        max_disk_bytes: Some(64 * MIB),
        ..opts()
    };
    let err = bake_fails(&base, &tree, &o, &dist, "more than the maximum");
    assert!(matches!(
        err.downcast_ref::<VmBakeError>(),
        Some(VmBakeError::TooLarge { .. })
    ));

    // A payload entry that would replace a base directory.
    let mut bad = Tree::new();
    bad.insert("/opt", Node::bytes(&b"x"[..], 0o644)).unwrap();
    bake_fails(&base, &bad, &opts(), &dist, "would replace a directory");

    // Cached inputs that no longer match their digests (a tampered cache): the
    // base, then a payload blob; qemu-img and debugfs read those files directly,
    // so the bake hashes them alongside and publishes nothing on a mismatch.
    let digest_of = |p: &Path| {
        imgbuild::fetch::hash::hash_reader(
            imgbuild::artifact::DigestAlgo::Sha256,
            std::fs::File::open(p).unwrap(),
        )
        .unwrap()
        .0
    };
    let cached = dir.path().join("cached-base.qcow2");
    std::fs::copy(&base, &cached).unwrap();
    let o = VmBakeOptions {
        base_digest: Some(digest_of(&raw)),
        ..opts()
    };
    bake_fails(&cached, &tree, &o, &dist, "is corrupt");
    assert!(!cached.exists(), "the corrupt cached base is removed");
    let blob = dir.path().join("cached-tool");
    std::fs::write(&blob, b"the pinned tool").unwrap();
    let pinned = digest_of(&blob);
    std::fs::write(&blob, b"another tool!!!").unwrap();
    let mut with_blob = tree.clone();
    with_blob
        .insert(
            "/usr/local/bin/tool",
            Node::cached_blob(&blob, 0o755, &pinned).unwrap(),
        )
        .unwrap();
    let o = VmBakeOptions {
        base_digest: Some(digest_of(&base)),
        ..opts()
    };
    bake_fails(&base, &with_blob, &o, &dist, "is corrupt");
    assert!(base.exists(), "the good base stays");
}

#[test]
fn bakes_the_cached_ubuntu_shaped_base() {
    let cache = cache_dir();
    let base = cache.join("bases/ubuntu-22.04-server-cloudimg-amd64.img");
    // A missing peer fails the test (never a silent pass).
    assert!(
        base.exists(),
        "{} is missing: build the test peers with scripts/peers (scripts/test does)",
        base.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let tree = payload(dir.path());
    let out = dir.path().join("full.qcow2");
    let stats = vm::bake(&base, &tree, &out, &opts()).unwrap();
    eprintln!("{stats:#?}");
    let check = run(&mut cmd("qemu-img", &["check", out.to_str().unwrap()]));
    assert!(check.contains("No errors were found"), "{check}");
    let (raw, offset) = to_raw(&out, dir.path());
    assert_eq!(offset, stats.root_offset);
    let v = run(&mut cmd("sgdisk", &["-v", raw.to_str().unwrap()]));
    assert!(v.contains("No problems found"), "{v}");
    run(&mut cmd(
        "e2fsck",
        &["-fn", &format!("{}?offset={offset}", raw.display())],
    ));
    assert_eq!(
        debugfs(&raw, offset, "cat /opt/demo/bin/run"),
        "#!/bin/sh\necho run\n"
    );
}

/// The real payload (Spark, the JRE, the object-store binary from the test
/// mirror) into the Ubuntu-shaped base, with stage timings next to a plain
/// `qemu-img convert` of the same base (the floor). Needs the test peers.
#[test]
fn bakes_real_payload_from_the_mirror() {
    let cache = cache_dir();
    let base = cache.join("bases/ubuntu-22.04-server-cloudimg-amd64.img");
    let mirror = cache.join("mirror");
    let spark = mirror.join("spark-3.5.9-bin-hadoop3.tgz");
    let jre = mirror.join("OpenJDK17U-jre_x64_linux_hotspot_17.0.17_10.tar.gz");
    let minio = mirror.join("minio.RELEASE.2025-10-15T17-29-55Z");
    for p in [&base, &spark, &jre, &minio] {
        assert!(
            p.exists(),
            "{} is missing: build the test peers with scripts/peers (scripts/test does)",
            p.display()
        );
    }
    let dir = tempfile::tempdir().unwrap();
    // Unpacks are reused from the cache (the unpacker keeps a manifest).
    let staging = cache.join("work/vm-bake-test-unpack");
    let unpack = |archive: &Path, dest: &str, name: &str| {
        imgbuild::payload::archive::unpack_into_tree(archive, dest, 1, &staging.join(name)).unwrap()
    };
    let mut tree = unpack(&spark, "/opt/spark", "spark");
    tree.extend(unpack(&jre, "/opt/java", "java"));
    tree.insert(
        "/usr/local/bin/minio",
        Node::host_file(&minio, 0o755).unwrap(),
    )
    .unwrap();
    eprintln!(
        "payload: {} entries, {} bytes",
        tree.len(),
        tree.content_bytes()
    );

    let floor_out = dir.path().join("floor.qcow2");
    let t = std::time::Instant::now();
    run(&mut cmd(
        "qemu-img",
        &[
            "convert",
            "-q",
            "-O",
            "qcow2",
            base.to_str().unwrap(),
            floor_out.to_str().unwrap(),
        ],
    ));
    let floor = t.elapsed();
    std::fs::remove_file(&floor_out).unwrap();

    let out = dir.path().join("real.qcow2");
    let stats = vm::bake(
        &base,
        &tree,
        &out,
        &VmBakeOptions {
            headroom_bytes: 256 * MIB,
            ..opts()
        },
    )
    .unwrap();
    eprintln!(
        "floor (plain qemu-img convert): {:.2}s",
        floor.as_secs_f64()
    );
    for (stage, d) in &stats.stages {
        eprintln!("  {stage:<12} {:>7.2}s", d.as_secs_f64());
    }
    eprintln!(
        "bake total {:.2}s; disk {} -> {} bytes; output {} bytes",
        stats.total().as_secs_f64(),
        stats.base_virtual_size,
        stats.disk_bytes,
        stats.output_bytes
    );

    let (raw, offset) = to_raw(&out, dir.path());
    let v = run(&mut cmd("sgdisk", &["-v", raw.to_str().unwrap()]));
    assert!(v.contains("No problems found"), "{v}");
    run(&mut cmd(
        "e2fsck",
        &["-fn", &format!("{}?offset={offset}", raw.display())],
    ));
    let s = debugfs(&raw, offset, "stat /opt/java/bin/java");
    assert!(s.contains("Mode:  0755"), "{s}");
    let s = debugfs(&raw, offset, "stat /usr/local/bin/minio");
    assert!(
        s.contains("Mode:  0755")
            && s.contains(&format!(
                "Size: {}",
                std::fs::metadata(&minio).unwrap().len()
            )),
        "{s}"
    );
    // The estimate left at least the requested headroom free.
    let free: u64 = debugfs(&raw, offset, "stats")
        .lines()
        .find_map(|l| l.strip_prefix("Free blocks:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eprintln!("free after bake: {} MiB", free * 4096 / MIB);
    assert!(free * 4096 >= 256 * MIB, "only {free} blocks free");
    let listing = debugfs(&raw, offset, "ls -l /opt/spark/jars");
    assert!(listing.contains("spark-core_2.12-3.5.9.jar"), "{listing}");
}

fn cache_dir() -> PathBuf {
    std::env::var_os("IMGBUILD_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache"))
                .join("imgbuild-test")
        })
}
