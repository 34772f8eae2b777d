//! Values read through secret references (`env:NAME`, `file:PATH`) never appear
//! in what imgbuild prints, even when they fail validation (issue 9 item 4).
//! Drives the real binary on the seed fixture lab.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn lab_copy() -> tempfile::TempDir {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    for e in fs::read_dir(repo.join("tests/fixtures/seed")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    dir
}

fn seed(dir: &Path, envs: &[(&str, &std::ffi::OsStr)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_imgbuild"));
    cmd.args(["seed", "--guest", "minio", "--lab"])
        .arg(dir.join("lab.yaml"))
        .arg("--out")
        .arg(dir.join("seed.yaml"))
        .env(
            "PVE_TOKEN",
            "root@pam!t=00000000-0000-0000-0000-000000000000",
        );
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn a_secret_that_fails_validation_is_not_quoted() {
    let dir = lab_copy();
    // An access key with a quote and a newline: invalid, and the validator
    // names the value it rejects.
    fs::write(dir.path().join("root_user"), "SUPER\"SECRET\nKEY").unwrap();
    let out = seed(dir.path(), &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("root_user"), "the field is named: {err}");
    assert!(!err.contains("SUPER") && !err.contains("SECRET"), "{err}");
    assert!(!dir.path().join("seed.yaml").exists());
}

#[test]
fn a_secret_env_var_that_is_not_utf8_is_not_quoted() {
    let dir = lab_copy();
    let lab = fs::read_to_string(dir.path().join("lab.yaml")).unwrap();
    fs::write(
        dir.path().join("lab.yaml"),
        lab.replace("file:root_password", "env:IMGBUILD_TEST_ROOT_PASSWORD"),
    )
    .unwrap();
    let value = std::ffi::OsStr::from_bytes(b"hunter2\xffhunter2");
    let out = seed(dir.path(), &[("IMGBUILD_TEST_ROOT_PASSWORD", value)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("IMGBUILD_TEST_ROOT_PASSWORD") && err.contains("not valid UTF-8"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
}
