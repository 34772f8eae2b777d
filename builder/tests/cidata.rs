//! The `cidata` ISO read back by real readers: isoinfo (Joliet and Rock
//! Ridge trees), xorriso (listing and extraction with Rock Ridge modes),
//! blkid (label and type), and firstboot's own reader.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use imgbuild::cidata::{self, CidataFiles, NetworkSettings};

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn files() -> CidataFiles {
    let net = NetworkSettings::new(
        "192.168.1.100".parse().unwrap(),
        24,
        "192.168.1.1".parse().unwrap(),
        vec!["8.8.8.8".parse().unwrap(), "1.1.1.1".parse().unwrap()],
    );
    let keys = vec![
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl lab"
            .into(),
    ];
    // Bigger than a sector, so multi-sector extents are exercised.
    let seed: String = (0..200).map(|i| format!("key{i}: value-{i}\n")).collect();
    CidataFiles {
        meta_data: cidata::render_meta_data("0123abcd", "devlab"),
        user_data: cidata::render_user_data("devlab", &keys),
        network_config: cidata::render_network_config(&net),
        seed_yaml: seed,
    }
}

const NAMES: [&str; 4] = [
    "/meta-data",
    "/network-config",
    "/user-data",
    "/imgbuild/seed.yaml",
];

fn content<'a>(f: &'a CidataFiles, name: &str) -> &'a str {
    match name {
        "/meta-data" => &f.meta_data,
        "/network-config" => &f.network_config,
        "/user-data" => &f.user_data,
        "/imgbuild/seed.yaml" => &f.seed_yaml,
        _ => unreachable!(),
    }
}

fn write(dir: &Path) -> (std::path::PathBuf, CidataFiles) {
    let f = files();
    let iso = dir.join("seed.iso");
    cidata::write_iso(&f, &iso).unwrap();
    (iso, f)
}

#[test]
fn isoinfo_reads_joliet_and_rock_ridge_names() {
    let dir = tempfile::tempdir().unwrap();
    let (iso, f) = write(dir.path());
    let iso_s = iso.to_str().unwrap();

    let d = run("isoinfo", &["-d", "-i", iso_s]);
    assert!(d.contains("Volume id: cidata"), "{d}");
    assert!(d.contains("Joliet with UCS level 3 found"), "{d}");
    assert!(d.contains("Rock Ridge signatures version 1 found"), "{d}");

    for tree in ["-J", "-R"] {
        let list = run("isoinfo", &[tree, "-f", "-i", iso_s]);
        let mut got: Vec<&str> = list.lines().collect();
        got.sort();
        assert_eq!(
            got,
            [
                "/imgbuild",
                "/imgbuild/seed.yaml",
                "/meta-data",
                "/network-config",
                "/user-data"
            ],
            "isoinfo {tree}"
        );
        for name in NAMES {
            let data = run("isoinfo", &[tree, "-i", iso_s, "-x", name]);
            assert_eq!(data, content(&f, name), "isoinfo {tree} -x {name}");
        }
    }
    // Private on disk: the seed may carry credentials.
    let mode = std::fs::metadata(&iso).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn xorriso_lists_and_extracts_with_rock_ridge_modes() {
    let dir = tempfile::tempdir().unwrap();
    let (iso, f) = write(dir.path());
    let iso_s = iso.to_str().unwrap();
    let out = Command::new("xorriso")
        .args(["-indev", iso_s, "-find", "/", "-exec", "lsdl"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = String::from_utf8_lossy(&out.stdout);
    for (mode, name) in [
        ("dr-xr-xr-x", "'/imgbuild'"),
        ("-r--------", "'/imgbuild/seed.yaml'"),
        ("-r--r--r--", "'/meta-data'"),
        ("-r--r--r--", "'/network-config'"),
        ("-r--r--r--", "'/user-data'"),
    ] {
        assert!(
            list.lines()
                .any(|l| l.starts_with(mode) && l.ends_with(name)),
            "{mode} {name} missing in:\n{list}"
        );
    }
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(report.contains("Volume id    : 'cidata'"), "{report}");
    assert!(
        !report.contains("FAILURE") && !report.contains("SORRY"),
        "{report}"
    );

    let x = dir.path().join("x");
    run(
        "xorriso",
        &[
            "-osirrox",
            "on",
            "-indev",
            iso_s,
            "-extract",
            "/",
            x.to_str().unwrap(),
        ],
    );
    for name in NAMES {
        let got = std::fs::read_to_string(x.join(&name[1..])).unwrap();
        assert_eq!(got, content(&f, name), "{name}");
    }
}

#[test]
fn blkid_sees_label_and_type() {
    let dir = tempfile::tempdir().unwrap();
    let (iso, _) = write(dir.path());
    let out = run("blkid", &["-p", "-o", "export", iso.to_str().unwrap()]);
    assert!(out.lines().any(|l| l == "LABEL=cidata"), "{out}");
    assert!(out.lines().any(|l| l == "TYPE=iso9660"), "{out}");
}

#[test]
fn firstboot_reader_finds_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let (iso, f) = write(dir.path());
    let mut file = std::fs::File::open(&iso).unwrap();
    assert_eq!(
        imgbuild_seed::iso9660::volume_label(&mut file)
            .unwrap()
            .as_deref(),
        Some("cidata")
    );
    let seed = imgbuild_seed::iso9660::read_file(&mut file, "imgbuild/seed.yaml")
        .unwrap()
        .unwrap();
    assert_eq!(seed, f.seed_yaml.as_bytes());
}

#[test]
fn same_files_give_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = write(dir.path());
    let b = dir.path().join("again.iso");
    cidata::write_iso(&files(), &b).unwrap();
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(b).unwrap());
    // A different seed changes the image.
    let mut other = files();
    other.seed_yaml.push_str("more: 1\n");
    let c = dir.path().join("other.iso");
    cidata::write_iso(&other, &c).unwrap();
    assert_ne!(std::fs::read(&a).unwrap(), std::fs::read(c).unwrap());
}
