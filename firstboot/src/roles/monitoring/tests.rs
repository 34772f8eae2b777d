//! The rendered files checked by Prometheus' own tool (Debian's `promtool`,
//! the same 2.42.0 build the test mirror repacks) and the role's plan.

use super::*;
use crate::seed::Seed;
use std::path::Path;
use std::process::Command;

fn seed(extra: &str) -> Seed {
    let p = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../seed/tests/fixtures/seeds/monitoring.yaml"
    );
    let text = std::fs::read_to_string(p).unwrap();
    Seed::from_yaml(&text.replace(
        "    alert_for: 5m\n",
        &format!("    alert_for: 5m\n{extra}"),
    ))
    .unwrap()
}

fn monitoring(s: &Seed) -> &Monitoring {
    s.roles.monitoring.as_ref().unwrap()
}

fn promtool(args: &[&str], dir: &Path) -> String {
    let o = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool must be on PATH (scripts/test takes it from the test mirror's Prometheus tarball)");
    let out = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "promtool {args:?} failed:\n{out}");
    out
}

/// Writes config, rules and token under `dir` (the config pointing there
/// instead of /etc/prometheus) and returns the config's path.
fn write_files(m: &Monitoring, dir: &Path) -> std::path::PathBuf {
    let etc = format!("{}/", dir.display());
    let cfg = dir.join("prometheus.yml");
    std::fs::write(&cfg, config(m).replace("/etc/prometheus/", &etc)).unwrap();
    std::fs::write(dir.join("rules.yml"), rules(m)).unwrap();
    if let Some(t) = &m.object_store_token {
        std::fs::write(dir.join("object-store.token"), t.expose()).unwrap();
    }
    cfg
}

#[test]
fn promtool_accepts_the_config_and_the_rules() {
    for extra in ["", "    port: 9191\n"] {
        let s = seed(extra);
        let m = monitoring(&s);
        let d = tempfile::tempdir().unwrap();
        let cfg = write_files(m, d.path());
        let out = promtool(&["check", "config", cfg.to_str().unwrap()], d.path());
        // Both the config and the rule file it names were read.
        assert!(out.contains("SUCCESS: 1 rule files found"), "{out}");
        assert!(out.contains("SUCCESS: 5 rules found"), "{out}");
        let out = promtool(&["check", "rules", "rules.yml"], d.path());
        assert!(out.contains("SUCCESS: 5 rules found"), "{out}");
    }
}

#[test]
fn a_short_interval_caps_the_scrape_timeout_and_promtool_agrees() {
    // The test lab's 2s: Prometheus refuses a timeout above the interval.
    let mut s = seed("");
    let m = s.roles.monitoring.as_mut().unwrap();
    m.scrape_interval = crate::seed::monitoring::PromDuration::new("2s").unwrap();
    m.alert_for = crate::seed::monitoring::PromDuration::new("4s").unwrap();
    m.object_store_token = None;
    let c = config(m);
    assert!(
        c.contains("  scrape_interval: \"2s\"\n  scrape_timeout: \"2s\"\n"),
        "{c}"
    );
    assert!(!c.contains("authorization"), "no token, no header: {c}");
    let d = tempfile::tempdir().unwrap();
    let cfg = write_files(m, d.path());
    promtool(&["check", "config", cfg.to_str().unwrap()], d.path());
}

#[test]
fn targets_carry_their_labels_and_bearer_jobs_the_token_file() {
    let s = seed("");
    let c = config(monitoring(&s));
    for want in [
        "  - job_name: \"minio-cluster\"\n    metrics_path: \"/minio/v2/metrics/cluster\"\n    authorization:\n      type: Bearer\n      credentials_file: \"/etc/prometheus/object-store.token\"\n",
        "      - targets: [\"192.168.1.100:8081\"]\n        labels: {guest: \"devlab\", role: \"spark_worker\", vmid: \"100\", lab: \"homelab\"}\n",
        "  - job_name: \"spark-master\"\n    metrics_path: \"/metrics/master/prometheus/\"\n",
    ] {
        assert!(c.contains(want), "{want:?} missing:\n{c}");
    }
    // The token is in its own file, never in prometheus.yml.
    let token = monitoring(&s).object_store_token.as_ref().unwrap();
    assert!(!c.contains(token.expose()));
    let p = crate::plan::build(&s, "");
    let f = p.files.iter().find(|f| f.path == TOKEN).unwrap();
    assert!(f.secret && f.mode == 0o640 && f.group == USER, "{f:?}");
    assert!(!p.render(false).contains(token.expose()));
}

#[test]
fn rules_name_every_alert_with_the_labs_window() {
    let r = rules(monitoring(&seed("")));
    for want in [
        "      - alert: \"TargetDown\"\n        expr: \"up == 0\"\n        for: \"5m\"\n",
        "expr: \"(1 - node_filesystem_avail_bytes{job=\\\"node\\\",mountpoint=\\\"/\\\"} / node_filesystem_size_bytes{job=\\\"node\\\",mountpoint=\\\"/\\\"} > 0.85) or (1 - node_filesystem_avail_bytes{job=\\\"node\\\",mountpoint=\\\"/var/lib/minio\\\"} / node_filesystem_size_bytes{job=\\\"node\\\",mountpoint=\\\"/var/lib/minio\\\"} > 0.85)\"",
        "expr: \"minio_cluster_drive_offline_total > 0\"",
        "expr: \"metrics_master_aliveWorkers_Value{job=\\\"spark-master\\\",guest=\\\"devlab\\\"} < 1\"",
        "expr: \"imgbuild_firstboot_failed == 1\"",
    ] {
        assert!(r.contains(want), "{want} missing:\n{r}");
    }
}

#[test]
fn unit_runs_prometheus_with_the_labs_retention_and_only_its_tsdb_writable() {
    let u = unit(monitoring(&seed("    port: 9191\n")));
    for want in [
        "User=prometheus\n",
        "ExecStart=/opt/prometheus/prometheus --config.file=/etc/prometheus/prometheus.yml --storage.tsdb.path=/var/lib/prometheus --storage.tsdb.retention.time=15d --web.listen-address=:9191\n",
        "ProtectSystem=strict\n",
        "ReadWritePaths=/var/lib/prometheus\n",
        "NoNewPrivileges=yes\n",
        "\n\n[Install]\n",
    ] {
        assert!(u.contains(want), "{want:?} missing:\n{u}");
    }
    let r = crate::plan::build(&seed(""), "").render(false);
    assert!(
        r.contains("check:prometheus GET http://127.0.0.1:9090/-/ready within 120s"),
        "{r}"
    );
}
