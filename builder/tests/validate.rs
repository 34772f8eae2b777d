//! `imgbuild validate` and `imgbuild plan` driven through the real binary:
//! the shipped lab and recipes pass, and every case of the malformed-input
//! corpus under tests/fixtures/validate/ exits 2 with exactly the diagnostics
//! its `# expect: LINE:COL FIELD: FRAGMENT` header lines name.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("builder/ has a parent")
        .to_path_buf()
}

fn fixtures() -> PathBuf {
    repo().join("tests/fixtures/validate")
}

/// Runs `imgbuild` from the repo root with `HOME` pointing at a home whose
/// `~/.ssh/id_ed25519.pub` is the committed test key (lab/*.yaml name that path).
fn imgbuild(args: &[&str]) -> Output {
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(home.path().join(".ssh")).expect("mkdir .ssh");
    std::fs::copy(
        fixtures().join("keys/test_ed25519.pub"),
        home.path().join(".ssh/id_ed25519.pub"),
    )
    .expect("copy test key");
    let out = Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .args(args)
        .current_dir(repo())
        .env("HOME", home.path())
        .env_remove("RUST_LOG")
        .output()
        .expect("run imgbuild");
    drop(home);
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn shipped_labs_and_recipes_validate() {
    for lab in [
        "lab/homelab.yaml",
        "lab/scaleout.yaml",
        "tests/fixtures/validate/ok/homelab.yaml",
        "tests/fixtures/validate/ok/homelab-metrics.yaml",
        "tests/fixtures/validate/ok/homelab-monitoring.yaml",
    ] {
        let out = imgbuild(&["validate", "--lab", lab, "--images", "images"]);
        assert!(
            out.status.success(),
            "{lab} should validate:\nstdout: {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).starts_with("ok: "),
            "{}",
            text(&out.stdout)
        );
    }
    // Defaults are lab/homelab.yaml and images/.
    let out = imgbuild(&["validate", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["ok"], true);
    assert_eq!(v["guests"], serde_json::json!(["minio", "devlab"]));
    assert_eq!(
        v["images_used"],
        serde_json::json!(["ubuntu-22.04-lxc", "ubuntu-22.04-vm"])
    );
}

#[test]
fn missing_ssh_key_is_bad_input_naming_the_field() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_imgbuild"))
        .args(["validate"])
        .current_dir(repo())
        .env("HOME", home.path())
        .output()
        .expect("run imgbuild");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("lab/homelab.yaml:31:7: ssh.authorized_keys[0]: cannot read public key file"),
        "{err}"
    );
}

#[derive(Debug)]
struct Expect {
    line: usize,
    column: usize,
    field: String,
    fragment: String,
}

fn expectations(path: &Path) -> Vec<Expect> {
    let body = std::fs::read_to_string(path).expect("read fixture");
    body.lines()
        .filter_map(|l| l.strip_prefix("# expect: "))
        .map(|rest| {
            let (pos, rest) = rest
                .split_once(' ')
                .expect("`# expect: L:C field: fragment`");
            let (line, column) = pos.split_once(':').expect("L:C");
            let (field, fragment) = rest.split_once(": ").expect("field: fragment");
            Expect {
                line: line.parse().expect("line"),
                column: column.parse().expect("column"),
                field: field.to_string(),
                fragment: fragment.to_string(),
            }
        })
        .collect()
}

/// Every lab case with the repo's images, every recipe case (a directory
/// holding one broken recipe) with the valid fixture lab.
fn corpus() -> Vec<(PathBuf, Vec<String>)> {
    let f = fixtures();
    let mut cases = Vec::new();
    let mut labs: Vec<PathBuf> = std::fs::read_dir(f.join("lab"))
        .expect("lab cases")
        .map(|e| e.unwrap().path())
        .collect();
    labs.sort();
    for p in labs {
        let args = vec![
            "--lab".into(),
            p.display().to_string(),
            "--images".into(),
            "images".into(),
        ];
        cases.push((p, args));
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(f.join("images"))
        .expect("recipe cases")
        .map(|e| e.unwrap().path())
        .collect();
    dirs.sort();
    for d in dirs {
        let recipe = std::fs::read_dir(&d)
            .expect("case dir")
            .next()
            .expect("one recipe per case")
            .unwrap()
            .path();
        let args = vec![
            "--lab".into(),
            f.join("ok/homelab.yaml").display().to_string(),
            "--images".into(),
            d.display().to_string(),
        ];
        cases.push((recipe, args));
    }
    cases
}

#[test]
fn malformed_corpus_reports_each_mistake_where_it_is() {
    let cases = corpus();
    assert!(
        cases.len() >= 40,
        "the corpus holds {} cases, want at least 40",
        cases.len()
    );
    let mut failures = Vec::new();
    for (fixture, args) in &cases {
        let expects = expectations(fixture);
        let name = fixture
            .strip_prefix(repo())
            .unwrap_or(fixture)
            .display()
            .to_string();
        if expects.is_empty() {
            failures.push(format!("{name}: no `# expect:` lines"));
            continue;
        }
        let mut argv = vec!["validate", "--json"];
        argv.extend(args.iter().map(String::as_str));
        let out = imgbuild(&argv);
        let stderr = text(&out.stderr);
        if out.status.code() != Some(2) {
            failures.push(format!(
                "{name}: exit {:?}, want 2\n    stderr: {stderr}",
                out.status.code()
            ));
            continue;
        }
        let v: serde_json::Value = match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!(
                    "{name}: stdout is not JSON ({e}): {}",
                    text(&out.stdout)
                ));
                continue;
            }
        };
        let diags = v["diagnostics"].as_array().cloned().unwrap_or_default();
        let file_name = fixture.file_name().unwrap().to_string_lossy().into_owned();
        for e in &expects {
            let hit = diags.iter().any(|d| {
                d["line"].as_u64() == Some(e.line as u64)
                    && d["column"].as_u64() == Some(e.column as u64)
                    && d["field"].as_str() == Some(&e.field)
                    && d["message"]
                        .as_str()
                        .is_some_and(|m| m.contains(&e.fragment))
                    && d["file"].as_str().is_some_and(|f| f.ends_with(&file_name))
            });
            // The human form on stderr carries the same location and message.
            let human = format!("{file_name}:{}:{}: {}: ", e.line, e.column, e.field);
            if !hit || !stderr.contains(&human) {
                failures.push(format!(
                    "{name}: want {}:{} {}: …{}…\n    got: {stderr}",
                    e.line, e.column, e.field, e.fragment
                ));
            }
        }
        if diags.len() != expects.len() {
            failures.push(format!(
                "{name}: {} diagnostics, want {}\n    got: {stderr}",
                diags.len(),
                expects.len()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} corpus cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn secrets_are_never_echoed() {
    let fixture = fixtures().join("lab/token-inline.yaml");
    let out = imgbuild(&["validate", "--lab", &fixture.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!all.contains("0f1e2d3c"), "the inline token leaked: {all}");
}

#[test]
fn plan_shows_guests_ports_links_and_images() {
    let out = imgbuild(&["plan"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    for want in [
        "minio   lxc   200   pve   2      4GiB    20GiB  192.168.1.200/24  ubuntu-22.04-lxc  object_store",
        "22,9000,9001",
        "devlab  vm    100   pve   4      8GiB    50GiB  192.168.1.100/24  ubuntu-22.04-vm   spark_master,spark_worker  22,7077,8080,8081",
        "devlab: spark worker (4 cores, 6GiB) -> spark://192.168.1.100:7077 (devlab)",
        "devlab: spark s3a -> http://192.168.1.200:9000 (minio, as env:SPARK_S3_ACCESS_KEY)",
        "ubuntu-22.04-lxc  lxc   ubuntu-22.04-standard_22.04-1_amd64.tar.zst  minio,spark,java,node_exporter,prometheus,firstboot  minio",
    ] {
        assert!(table.contains(want), "plan lacks {want:?}:\n{table}");
    }

    // Metrics ports: in the port list, open only to the monitoring addresses.
    let lab = "tests/fixtures/validate/ok/homelab-metrics.yaml";
    let out = imgbuild(&["plan", "--lab", lab]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    for want in [
        "object_store               22,9000,9001,9100*\n",
        "spark_master,spark_worker  22,7077,8080,8081,9100*\n",
        "ports marked *:\n  9100 (node exporter) only from 192.168.1.50, 192.168.1.51\n",
    ] {
        assert!(table.contains(want), "plan lacks {want:?}:\n{table}");
    }
    let out = imgbuild(&["plan", "--json", "--lab", lab]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        v["guests"][0]["ports"][3],
        serde_json::json!({"port": 9100, "purpose": "node exporter", "from": ["192.168.1.50", "192.168.1.51"]})
    );

    // A monitoring guest: its address is the metrics ports' source on every
    // guest (no `allow` written), and it serves Prometheus to the network.
    let lab = "tests/fixtures/validate/ok/homelab-monitoring.yaml";
    let out = imgbuild(&["plan", "--lab", lab]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    for want in [
        "object_store               22,9000,9001,9100*\n",
        "monitoring                 22,9100*,9090\n",
        "ports marked *:\n  9100 (node exporter) only from 192.168.1.50\n",
    ] {
        assert!(table.contains(want), "plan lacks {want:?}:\n{table}");
    }
    let out = imgbuild(&["plan", "--json", "--lab", lab]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        v["guests"][2]["ports"][2],
        serde_json::json!({"port": 9090, "purpose": "prometheus UI"})
    );
    assert_eq!(
        v["guests"][1]["ports"][4]["from"],
        serde_json::json!(["192.168.1.50"])
    );

    let out = imgbuild(&["plan", "--json", "--lab", "lab/scaleout.yaml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let guests = v["guests"].as_array().expect("guests");
    assert_eq!(guests.len(), 8);
    let nodes: Vec<&str> = guests.iter().map(|g| g["node"].as_str().unwrap()).collect();
    assert_eq!(
        nodes,
        ["pve1", "pve2", "pve3", "pve1", "pve1", "pve2", "pve3", "pve2"]
    );
    assert_eq!(
        guests[0]["links"][0],
        "object store pool `store`: minio1, minio2, minio3, minio4 (8 drives)"
    );
    assert_eq!(guests[5]["memory_bytes"], 32u64 << 30);
    assert_eq!(
        guests[5]["ports"],
        serde_json::json!([{"port": 22, "purpose": "ssh"}, {"port": 8081, "purpose": "spark worker UI"}])
    );

    // Bad input stops `plan` the same way as `validate`.
    let bad = fixtures().join("lab/vmid-duplicate.yaml");
    let out = imgbuild(&["plan", "--lab", &bad.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
}

#[test]
fn inventory_prometheus_is_file_sd_json() {
    let lab = "tests/fixtures/validate/ok/homelab-metrics.yaml";
    let out = imgbuild(&["inventory", "--format", "prometheus", "--lab", lab]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let groups = v.as_array().expect("a list of target groups");
    assert_eq!(groups.len(), 6, "{v}");
    for g in groups {
        assert_eq!(g["targets"].as_array().map(Vec::len), Some(1), "{g}");
        for l in ["job", "__metrics_path__", "guest", "role", "vmid"] {
            assert!(g["labels"][l].is_string(), "{l} missing in {g}");
        }
    }
    // No exporters without a metrics section: said, not an empty file.
    let out = imgbuild(&[
        "inventory",
        "--format",
        "prometheus",
        "--lab",
        "tests/fixtures/validate/ok/homelab.yaml",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no `metrics:` section"),
        "{}",
        text(&out.stderr)
    );
}
