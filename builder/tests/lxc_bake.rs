//! The LXC bake and per-guest personalization, checked with real GNU tar:
//! listings before and after, xattrs, and extraction as root with the flags
//! Proxmox's `pct` uses for templates (PVE::LXC::Create::restore_archive with
//! PVE::Storage::Plugin's COMMON_TAR_FLAGS).

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use imgbuild::bake::lxc::{bake, SEED_PATH};
use imgbuild::bake::personalize::personalize;
use imgbuild::payload::{Node, Tree};

const MTIME: u64 = 1_700_000_000;
/// `security.capability` for cap_net_raw=ep (VFS_CAP_REVISION_2).
const CAP_NET_RAW: &[u8] = &[
    1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
];

/// Writes tar entries with exact names (the tar crate's path setters
/// normalize `./` away and refuse `..`, and we want both).
struct RawTar(Vec<u8>);

#[derive(Clone, Copy)]
struct H<'a> {
    name: &'a str,
    ty: tar::EntryType,
    mode: u32,
    uid: u64,
    user: &'a str,
    link: &'a str,
    dev: (u32, u32),
}

fn h(name: &str, ty: tar::EntryType, mode: u32) -> H<'_> {
    H {
        name,
        ty,
        mode,
        uid: 0,
        user: "root",
        link: "",
        dev: (0, 0),
    }
}

impl RawTar {
    fn header(&mut self, e: H, data: &[u8]) {
        let mut hd = tar::Header::new_ustar();
        let n = e.name.len().min(100);
        hd.as_mut_bytes()[..n].copy_from_slice(&e.name.as_bytes()[..n]);
        hd.set_entry_type(e.ty);
        hd.set_mode(e.mode);
        hd.set_uid(e.uid);
        hd.set_gid(e.uid);
        hd.set_username(e.user).unwrap();
        hd.set_groupname(e.user).unwrap();
        hd.set_mtime(MTIME);
        hd.set_size(data.len() as u64);
        if !e.link.is_empty() {
            hd.set_link_name_literal(e.link).unwrap();
        }
        hd.set_device_major(e.dev.0).unwrap();
        hd.set_device_minor(e.dev.1).unwrap();
        hd.set_cksum();
        self.0.extend_from_slice(hd.as_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().div_ceil(512) * 512, 0);
    }

    fn add(&mut self, e: H, data: &[u8]) -> &mut Self {
        self.header(e, data);
        self
    }

    /// A PAX extended header for the next entry.
    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in records {
            let base = k.len() + v.len() + 3;
            let mut len = base + 1;
            while base + len.to_string().len() != len {
                len = base + len.to_string().len();
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        self.header(h("./PaxHeaders/x", tar::EntryType::XHeader, 0o644), &body);
        self
    }

    /// A GNU long-name entry for the next entry.
    fn gnu_long(&mut self, name: &str) -> &mut Self {
        let mut data = name.as_bytes().to_vec();
        data.push(0);
        self.header(
            h("././@LongLink", tar::EntryType::GNULongName, 0o644),
            &data,
        );
        self
    }

    fn finish(&mut self) -> Vec<u8> {
        self.0.extend_from_slice(&[0u8; 1024]);
        std::mem::take(&mut self.0)
    }
}

fn long_pax_name() -> String {
    format!("./usr/share/{}/{}", "d".repeat(60), "f".repeat(60))
}
fn long_gnu_name() -> String {
    format!("./usr/share/{}/{}", "d".repeat(60), "g".repeat(60))
}

/// A base with every case a rootfs has that a naive copy gets wrong.
fn nasty_base() -> Vec<u8> {
    use tar::EntryType as T;
    let user = |e: H<'static>| H {
        uid: 1000,
        user: "user",
        ..e
    };
    let mut t = RawTar(Vec::new());
    t.add(h("./", T::Directory, 0o755), b"")
        .add(h("./dev/", T::Directory, 0o755), b"")
        .add(
            H {
                dev: (1, 3),
                ..h("./dev/null", T::Char, 0o666)
            },
            b"",
        )
        .add(h("./etc/", T::Directory, 0o755), b"")
        .add(h("./etc/hostname", T::Regular, 0o644), b"base\n")
        .add(h("./home/", T::Directory, 0o755), b"")
        .add(user(h("./home/user/", T::Directory, 0o750)), b"")
        .add(
            user(h("./home/user/.profile", T::Regular, 0o644)),
            b"# profile\n",
        )
        .add(h("./opt/", T::Directory, 0o755), b"")
        .add(h("./run/", T::Directory, 0o755), b"")
        .add(h("./run/initctl", T::Fifo, 0o600), b"")
        .add(h("./usr/", T::Directory, 0o755), b"")
        .add(h("./usr/bin/", T::Directory, 0o755), b"")
        .add(h("./usr/bin/dash", T::Regular, 0o755), b"dash binary")
        .pax(&[("SCHILY.xattr.security.capability", CAP_NET_RAW)])
        .add(h("./usr/bin/ping", T::Regular, 0o4755), b"ping binary")
        .add(
            H {
                link: "./usr/bin/ping",
                ..h("./usr/bin/ping4", T::Link, 0o4755)
            },
            b"",
        )
        .add(
            H {
                link: "dash",
                ..h("./usr/bin/sh", T::Symlink, 0o777)
            },
            b"",
        )
        .add(h("./usr/local/", T::Directory, 0o755), b"")
        .add(h("./usr/local/bin/", T::Directory, 0o755), b"")
        .add(h("./usr/local/bin/minio", T::Regular, 0o755), b"old minio")
        .add(h("./usr/share/", T::Directory, 0o755), b"")
        .add(
            h(
                &format!("./usr/share/{}/", "d".repeat(60)),
                T::Directory,
                0o755,
            ),
            b"",
        )
        .pax(&[("path", long_pax_name().as_bytes())])
        .add(h(&long_pax_name(), T::Regular, 0o644), b"long pax")
        .gnu_long(&long_gnu_name())
        .add(h(&long_gnu_name(), T::Regular, 0o644), b"long gnu");
    t.finish()
}

fn payload() -> Tree {
    let mut t = Tree::new();
    let f = |s: &str, mode| Node {
        mtime: MTIME,
        ..Node::bytes(Arc::<[u8]>::from(s.as_bytes()), mode)
    };
    let d = |mode| Node {
        mtime: MTIME,
        ..Node::dir(mode)
    };
    t.insert("/usr/local/bin/minio", f("new minio", 0o755))
        .unwrap();
    t.insert("/usr/local/sbin", d(0o755)).unwrap();
    t.insert("/usr/local/sbin/firstboot", f("agent", 0o755))
        .unwrap();
    // Both have /etc: the base's entry (0755) stays.
    t.insert("/etc", d(0o700)).unwrap();
    t.insert("/etc/systemd", d(0o755)).unwrap();
    t.insert("/etc/systemd/system", d(0o755)).unwrap();
    t.insert(
        "/etc/systemd/system/imgbuild-firstboot.service",
        f("[Unit]\n", 0o644),
    )
    .unwrap();
    t.insert("/etc/systemd/system/multi-user.target.wants", d(0o755))
        .unwrap();
    t.insert(
        "/etc/systemd/system/multi-user.target.wants/imgbuild-firstboot.service",
        Node {
            mtime: MTIME,
            ..Node::symlink("../imgbuild-firstboot.service")
        },
    )
    .unwrap();
    t.insert("/opt/spark", d(0o755)).unwrap();
    t.insert("/opt/spark/jars", d(0o755)).unwrap();
    t.insert(
        &format!("/opt/spark/jars/{}.jar", "j".repeat(120)),
        f("jar", 0o644),
    )
    .unwrap();
    t
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `tar -tv` lines (with `--numeric-owner` or not).
fn listing(archive: &Path, numeric: bool) -> Vec<String> {
    let mut c = Command::new("tar");
    c.env("TZ", "UTC").arg("-tvf").arg(archive);
    if numeric {
        c.arg("--numeric-owner");
    }
    run(&mut c).lines().map(str::to_string).collect()
}

fn name_of(line: &str) -> &str {
    let rest = &line[line.find(" ./").expect("a ./ path") + 1..];
    rest.split(" -> ")
        .next()
        .unwrap()
        .split(" link to ")
        .next()
        .unwrap()
}

/// Extracts as `pct create` does.
fn pct_extract(archive: &Path, dir: &Path) -> String {
    fs::create_dir_all(dir).unwrap();
    let file = fs::File::open(archive).unwrap();
    let out = Command::new("tar")
        .args([
            "xpf",
            "-",
            "--zstd",
            "--totals",
            "--one-file-system",
            "-p",
            "--sparse",
        ])
        .args([
            "--numeric-owner",
            "--acls",
            "--xattrs",
            "--xattrs-include=user.*",
        ])
        .args([
            "--xattrs-include=security.capability",
            "--warning=no-file-ignored",
        ])
        .args(["--warning=no-xattr-write", "-C"])
        .arg(dir)
        .args(["--skip-old-files", "--anchored", "--exclude", "./dev/*"])
        .stdin(file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "pct-style extraction failed: {stderr}"
    );
    stderr
}

fn sha256(p: &Path) -> String {
    run(Command::new("sha256sum").arg(p))
        .split(' ')
        .next()
        .unwrap()
        .to_string()
}

struct Setup {
    dir: tempfile::TempDir,
    base: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.tar.gz");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &nasty_base()).unwrap();
    fs::write(&base, gz.finish().unwrap()).unwrap();
    Setup { dir, base }
}

#[test]
fn bake_keeps_every_base_entry_and_adds_the_payload() {
    let s = setup();
    let out = s.dir.path().join("out.tar.zst");
    let stats = bake(&s.base, &payload(), &out).unwrap();
    assert_eq!(stats.base_entries, 24);
    assert_eq!(stats.replaced, 1);
    assert_eq!(fs::metadata(&out).unwrap().mode() & 0o777, 0o644);

    // Every base entry but the replaced one is listed identically, in order,
    // by number and by name (GNU tar prints user/group names when present).
    for numeric in [true, false] {
        let before: Vec<_> = listing(&s.base, numeric)
            .into_iter()
            .filter(|l| !l.ends_with("./usr/local/bin/minio"))
            .collect();
        let after = listing(&out, numeric);
        assert_eq!(after[..before.len()], before[..], "numeric={numeric}");
        let added: Vec<_> = after[before.len()..].iter().map(|l| name_of(l)).collect();
        assert_eq!(
            added,
            [
                "./etc/systemd/",
                "./etc/systemd/system/",
                "./etc/systemd/system/imgbuild-firstboot.service",
                "./etc/systemd/system/multi-user.target.wants/",
                "./etc/systemd/system/multi-user.target.wants/imgbuild-firstboot.service",
                "./opt/spark/",
                "./opt/spark/jars/",
                &format!("./opt/spark/jars/{}.jar", "j".repeat(120)),
                "./usr/local/bin/minio",
                "./usr/local/sbin/",
                "./usr/local/sbin/firstboot",
            ]
        );
    }
    let ls = listing(&out, false).join("\n");
    assert!(ls.contains("user/user"), "{ls}");
    let line = |name: &str| {
        ls.lines()
            .find(|l| name_of(l) == name)
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(line("./dev/null")[..3], ["crw-rw-rw-", "root/root", "1,3"]);
    assert_eq!(line("./usr/bin/ping4")[..2], ["hrwsr-xr-x", "root/root"]);
    assert_eq!(
        line("./usr/bin/ping4")[5..],
        ["./usr/bin/ping4", "link", "to", "./usr/bin/ping"]
    );
    assert_eq!(line("./run/initctl")[..2], ["prw-------", "root/root"]);
    assert_eq!(
        line("./usr/bin/ping")[..4],
        ["-rwsr-xr-x", "root/root", "11", "2023-11-14"]
    );

    // The xattr survives, as a PAX record GNU tar reads.
    let x = run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "-tvvf"])
        .arg(&out));
    let ping = x.find("./usr/bin/ping\n").expect("ping listed");
    assert!(
        x[ping..].starts_with("./usr/bin/ping\n  x: 20 security.capability"),
        "{x}"
    );
}

#[test]
fn baked_template_extracts_cleanly_with_pct_flags() {
    let s = setup();
    let out = s.dir.path().join("out.tar.zst");
    bake(&s.base, &payload(), &out).unwrap();
    let root = s.dir.path().join("rootfs");
    let stderr = pct_extract(&out, &root);
    assert!(
        stderr.lines().all(|l| l.starts_with("Total bytes read")),
        "unexpected tar messages: {stderr}"
    );
    let meta = |p: &str| fs::symlink_metadata(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let ping = meta("usr/bin/ping");
    assert_eq!(ping.mode() & 0o7777, 0o4755);
    assert_eq!(meta("usr/bin/ping4").ino(), ping.ino(), "hardlink kept");
    let caps = run(Command::new("getcap").arg(root.join("usr/bin/ping")));
    assert!(caps.contains("cap_net_raw=ep"), "getcap: {caps:?}");
    assert!(meta("run/initctl").file_type().is_fifo());
    assert!(!root.join("dev/null").exists(), "pct excludes ./dev/*");
    let home = meta("home/user/.profile");
    assert_eq!((home.uid(), home.gid()), (1000, 1000));
    assert_eq!(
        fs::read_link(root.join("usr/bin/sh")).unwrap(),
        Path::new("dash")
    );
    assert_eq!(fs::read(root.join(long_pax_name())).unwrap(), b"long pax");
    assert_eq!(fs::read(root.join(long_gnu_name())).unwrap(), b"long gnu");

    // Payload: replaced content, modes, root ownership, links, mtimes.
    assert_eq!(
        fs::read(root.join("usr/local/bin/minio")).unwrap(),
        b"new minio"
    );
    for (p, mode) in [
        ("usr/local/bin/minio", 0o755),
        ("usr/local/sbin", 0o755),
        ("usr/local/sbin/firstboot", 0o755),
        ("etc", 0o755),
        ("etc/systemd/system/imgbuild-firstboot.service", 0o644),
        ("opt/spark/jars", 0o755),
    ] {
        let m = meta(p);
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (mode, 0, 0), "{p}");
        // A base directory that gets payload children later in the stream
        // ends with the extraction time, as with any appended archive.
        if p != "etc" {
            assert_eq!(m.mtime() as u64, MTIME, "{p}");
        }
    }
    assert_eq!(
        fs::read_link(
            root.join("etc/systemd/system/multi-user.target.wants/imgbuild-firstboot.service")
        )
        .unwrap(),
        Path::new("../imgbuild-firstboot.service")
    );
    assert_eq!(
        fs::read(root.join(format!("opt/spark/jars/{}.jar", "j".repeat(120)))).unwrap(),
        b"jar"
    );
}

#[test]
fn bake_is_deterministic_and_reads_every_compression() {
    let s = setup();
    let a = s.dir.path().join("a.tar.zst");
    let b = s.dir.path().join("b.tar.zst");
    bake(&s.base, &payload(), &a).unwrap();
    bake(&s.base, &payload(), &b).unwrap();
    assert_eq!(sha256(&a), sha256(&b));

    // The same base as xz and zstd (made by the real tools) bakes to the same bytes.
    let plain = s.dir.path().join("base.tar");
    fs::write(&plain, nasty_base()).unwrap();
    run(Command::new("xz").args(["-k", "-T1"]).arg(&plain));
    run(Command::new("zstd").args(["-q", "-k"]).arg(&plain));
    for ext in ["tar.xz", "tar.zst"] {
        let c = s.dir.path().join(format!("c.{ext}.out"));
        bake(&s.dir.path().join(format!("base.{ext}")), &payload(), &c).unwrap();
        assert_eq!(sha256(&a), sha256(&c), "{ext}");
    }
}

#[test]
fn bake_rejects_escapes_and_leaves_nothing() {
    use tar::EntryType as T;
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            RawTar(Vec::new())
                .add(h("./", T::Directory, 0o755), b"")
                .add(h("./../evil", T::Regular, 0o644), b"x")
                .finish(),
            "base entry \"./../evil\": `..` components are not allowed",
        ),
        (
            "abs",
            RawTar(Vec::new())
                .add(h("/abs", T::Regular, 0o644), b"x")
                .finish(),
            "base entry \"/abs\": absolute paths are not allowed",
        ),
        (
            "hardlink",
            RawTar(Vec::new())
                .add(h("./", T::Directory, 0o755), b"")
                .add(
                    H {
                        link: "../etc/shadow",
                        ..h("./x", T::Link, 0o644)
                    },
                    b"",
                )
                .finish(),
            "base hardlink \"./x\" -> \"../etc/shadow\" escapes the root",
        ),
        (
            "through-symlink",
            RawTar(Vec::new())
                .add(h("./", T::Directory, 0o755), b"")
                .add(
                    H {
                        link: "/etc",
                        ..h("./e", T::Symlink, 0o777)
                    },
                    b"",
                )
                .add(h("./e/passwd", T::Regular, 0o644), b"x")
                .finish(),
            "base entry \"./e/passwd\" lies below symlink \"/e\"",
        ),
    ];
    for (name, tar, want) in cases {
        let base = dir.path().join(format!("{name}.tar"));
        fs::write(&base, tar).unwrap();
        let out = dir.path().join(format!("{name}.tar.zst"));
        let err = format!("{:#}", bake(&base, &Tree::new(), &out).unwrap_err());
        assert!(err.contains(want), "{name}: {err}");
        assert!(err.contains(&base.display().to_string()), "{name}: {err}");
    }
    let left: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| !n.ends_with(".tar"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");

    // A payload entry whose parent is nowhere, or below a base symlink.
    let s = setup();
    for (path, want) in [
        (
            "/srv/x",
            "its parent /srv is neither a directory in the base nor in the payload",
        ),
        ("/usr/bin/sh/x", "lies below the base symlink /usr/bin/sh"),
    ] {
        let mut t = Tree::new();
        t.insert(path, Node::bytes(&b"x"[..], 0o644)).unwrap();
        let out = s.dir.path().join("p.tar.zst");
        let err = format!("{:#}", bake(&s.base, &t, &out).unwrap_err());
        assert!(err.contains(want), "{err}");
        assert!(!out.exists());
    }
}

fn seed_lines(archive: &Path) -> Vec<String> {
    listing(archive, true)
        .into_iter()
        .filter(|l| l.contains("./etc/imgbuild"))
        .collect()
}

#[test]
fn personalize_adds_only_the_seed() {
    let s = setup();
    let tpl = s.dir.path().join("tpl.tar.zst");
    bake(&s.base, &payload(), &tpl).unwrap();
    let g1 = s.dir.path().join("g1.tar.zst");
    personalize(&tpl, b"hostname: minio\n", &g1).unwrap();
    assert_eq!(
        fs::metadata(&g1).unwrap().mode() & 0o777,
        0o600,
        "seed carries secrets"
    );

    let before = listing(&tpl, true);
    let after = listing(&g1, true);
    assert_eq!(after[..before.len()], before[..]);
    let added: Vec<_> = after[before.len()..]
        .iter()
        .map(|l| (l[..10].to_string(), name_of(l).to_string()))
        .collect();
    assert_eq!(
        added,
        [
            ("drwx------".into(), "./etc/imgbuild/".to_string()),
            ("-rw-------".into(), ".".to_string() + SEED_PATH)
        ]
    );
    let root = s.dir.path().join("g1root");
    pct_extract(&g1, &root);
    let seed = root.join("etc/imgbuild/seed.yaml");
    assert_eq!(fs::read(&seed).unwrap(), b"hostname: minio\n");
    let m = fs::metadata(&seed).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o600, 0, 0));
    assert_eq!(
        fs::metadata(root.join("etc/imgbuild")).unwrap().mode() & 0o7777,
        0o700
    );

    // Deterministic, and personalizing a personalized template swaps the seed.
    let g1b = s.dir.path().join("g1b.tar.zst");
    personalize(&tpl, b"hostname: minio\n", &g1b).unwrap();
    assert_eq!(sha256(&g1), sha256(&g1b));
    let g2 = s.dir.path().join("g2.tar.zst");
    personalize(&g1, b"hostname: devlab\n", &g2).unwrap();
    assert_eq!(seed_lines(&g2).len(), 2, "{:?}", seed_lines(&g2));
    let root2 = s.dir.path().join("g2root");
    pct_extract(&g2, &root2);
    assert_eq!(
        fs::read(root2.join("etc/imgbuild/seed.yaml")).unwrap(),
        b"hostname: devlab\n"
    );
}

#[test]
fn personalize_handles_foreign_templates() {
    // A template not made by imgbuild (no index), already holding a seed and
    // its directory: the seed is replaced, the directory kept, nothing doubled.
    use tar::EntryType as T;
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("foreign.tar");
    let tar = RawTar(Vec::new())
        .add(h("./", T::Directory, 0o755), b"")
        .add(h("./etc/", T::Directory, 0o755), b"")
        .add(h("./etc/imgbuild/", T::Directory, 0o700), b"")
        .add(
            h("./etc/imgbuild/seed.yaml", T::Regular, 0o600),
            b"old: seed\n",
        )
        .add(h("./etc/zz", T::Regular, 0o644), b"after\n")
        .finish();
    fs::write(&plain, tar).unwrap();
    run(Command::new("zstd").args(["-q", "-k"]).arg(&plain));
    let out = dir.path().join("guest.tar.zst");
    personalize(&dir.path().join("foreign.tar.zst"), b"new: seed\n", &out).unwrap();
    let names: Vec<_> = listing(&out, true)
        .iter()
        .map(|l| name_of(l).to_string())
        .collect();
    assert_eq!(
        names,
        [
            "./",
            "./etc/",
            "./etc/imgbuild/",
            "./etc/zz",
            "./etc/imgbuild/seed.yaml"
        ]
    );
    assert_eq!(fs::metadata(&out).unwrap().mode() & 0o777, 0o600);
    let root = dir.path().join("root");
    pct_extract(&out, &root);
    assert_eq!(
        fs::read(root.join("etc/imgbuild/seed.yaml")).unwrap(),
        b"new: seed\n"
    );
}

#[test]
fn personalize_rebakes_an_imgbuild_template_that_already_has_a_seed() {
    // A bake whose payload carries a seed cannot take the append fast path;
    // personalize falls back to re-baking it, reading through the index frame.
    let s = setup();
    let mut t = payload();
    t.insert("/etc/imgbuild", Node::dir(0o700)).unwrap();
    t.insert(SEED_PATH, Node::bytes(&b"baked: seed\n"[..], 0o600))
        .unwrap();
    let tpl = s.dir.path().join("seeded.tar.zst");
    bake(&s.base, &t, &tpl).unwrap();
    let out = s.dir.path().join("guest.tar.zst");
    personalize(&tpl, b"guest: seed\n", &out).unwrap();
    assert_eq!(seed_lines(&out).len(), 2, "{:?}", seed_lines(&out));
    let root = s.dir.path().join("root");
    pct_extract(&out, &root);
    assert_eq!(
        fs::read(root.join("etc/imgbuild/seed.yaml")).unwrap(),
        b"guest: seed\n"
    );
}

/// The real test base from scripts/base-lxc, baked with a payload and checked
/// with GNU tar: same listing for every base entry, clean pct extraction.
#[test]
fn real_base_round_trip() {
    let cache = std::env::var_os("IMGBUILD_TEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache")
                })
                .join("imgbuild-test")
        });
    let base = cache.join("bases/ubuntu-22.04-standard_22.04-1_amd64.tar.zst");
    assert!(
        base.exists(),
        "{} is missing: run scripts/peers (scripts/test does) to build the test bases",
        base.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("baked.tar.zst");
    let stats = bake(&base, &payload(), &out).unwrap();
    eprintln!(
        "real base: {} entries, {:.0} MB tar in {:.2?} ({:.0} MB/s)",
        stats.base_entries,
        stats.tar_bytes as f64 / 1e6,
        stats.elapsed,
        stats.mb_per_s()
    );
    let before = listing(&base, true);
    let after = listing(&out, true);
    let replaced: BTreeSet<String> = payload()
        .iter()
        .filter(|(_, n)| !matches!(n.kind, imgbuild::payload::NodeKind::Dir))
        .map(|(p, _)| p.to_string())
        .collect();
    let kept: Vec<_> = before
        .iter()
        .filter(|l| !replaced.contains(name_of(l).trim_start_matches('.')))
        .cloned()
        .collect();
    assert_eq!(after[..kept.len()], kept[..]);
    assert!(after.len() > kept.len());

    let root = dir.path().join("rootfs");
    pct_extract(&out, &root);
    assert!(
        root.join("usr/lib/systemd/systemd").exists() || root.join("lib/systemd/systemd").exists()
    );
    assert_eq!(
        fs::read(root.join("usr/local/sbin/firstboot")).unwrap(),
        b"agent"
    );

    let guest = dir.path().join("guest.tar.zst");
    let t = std::time::Instant::now();
    personalize(&out, b"hostname: minio\n", &guest).unwrap();
    eprintln!(
        "personalize of a {} MB template: {:.2?}",
        fs::metadata(&out).unwrap().len() / 1_000_000,
        t.elapsed()
    );
    assert_eq!(seed_lines(&guest).len(), 2);
}
