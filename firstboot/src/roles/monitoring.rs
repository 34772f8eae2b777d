//! The monitoring role: Prometheus from the image under its own user and a
//! hardened unit (only its TSDB directory writable), scraping the targets
//! the seed lists with their `guest`, `role`, `vmid` and `lab` labels, the
//! lab's alert rules, MinIO's bearer token in a root-owned file only
//! Prometheus' group reads, and a readiness check on `/-/ready`.
//!
//! Strings in the rendered YAML are JSON strings (YAML's double-quoted
//! form), so no seed value can change the documents' structure.

use std::fmt::Write as _;
use std::time::Duration;

use super::HEADER;
use crate::plan::{Account, Check, Plan};
use crate::seed::monitoring::{Job, Monitoring};

/// Prometheus' service account.
pub const USER: &str = "prometheus";
/// Its unit.
pub const UNIT: &str = "prometheus.service";
/// Configuration directory (root-owned, readable by Prometheus' group).
pub const CONF_DIR: &str = "/etc/prometheus";
/// The scrape configuration.
pub const CONFIG: &str = "/etc/prometheus/prometheus.yml";
/// The alert rules.
pub const RULES: &str = "/etc/prometheus/rules.yml";
/// MinIO's metrics bearer token, when the lab gives one.
pub const TOKEN: &str = "/etc/prometheus/object-store.token";

/// Adds the monitoring role to `plan`.
pub fn plan(m: &Monitoring, plan: &mut Plan) {
    plan.accounts.push(Account {
        name: USER.into(),
        home: m.data_dir.as_str().into(),
    });
    plan.dir(CONF_DIR, 0o750, "root", USER);
    plan.dir(m.data_dir.as_str(), 0o750, USER, USER);
    plan.owned_file(CONFIG, 0o640, "root", USER, config(m), &[UNIT], false);
    plan.owned_file(RULES, 0o640, "root", USER, rules(m), &[UNIT], false);
    if let Some(t) = &m.object_store_token {
        plan.owned_file(
            TOKEN,
            0o640,
            "root",
            USER,
            format!("{}\n", t.expose()),
            &[UNIT],
            true,
        );
    }
    plan.file(
        &format!("/etc/systemd/system/{UNIT}"),
        0o644,
        unit(m),
        &[UNIT],
    );
    plan.unit(UNIT, Duration::from_secs(120));
    plan.checks.push(Check::Http {
        name: "prometheus".into(),
        host: "127.0.0.1".into(),
        port: m.port.get(),
        path: "/-/ready".into(),
        deadline: Duration::from_secs(120),
    });
}

/// A YAML double-quoted scalar (JSON's string syntax is a subset).
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

/// `scrape_timeout`: Prometheus' default 10s, but never above the interval
/// (Prometheus refuses a config where it is).
fn scrape_timeout(m: &Monitoring) -> String {
    if m.scrape_interval.millis() < 10_000 {
        m.scrape_interval.as_str().to_string()
    } else {
        "10s".into()
    }
}

/// prometheus.yml: one job per kind of exporter, each target with its labels.
pub fn config(m: &Monitoring) -> String {
    let mut o = format!(
        "{HEADER}\nglobal:\n  scrape_interval: {si}\n  scrape_timeout: {st}\n  evaluation_interval: {si}\n\
         rule_files:\n  - {rules}\nscrape_configs:\n",
        si = q(m.scrape_interval.as_str()),
        st = q(&scrape_timeout(m)),
        rules = q(RULES),
    );
    for job in Job::ALL {
        let targets: Vec<_> = m.targets.iter().filter(|t| t.job == job).collect();
        if targets.is_empty() {
            continue;
        }
        let _ = writeln!(
            o,
            "  - job_name: {}\n    metrics_path: {}",
            q(job.as_str()),
            q(job.path())
        );
        if targets.iter().any(|t| t.bearer) && m.object_store_token.is_some() {
            let _ = writeln!(
                o,
                "    authorization:\n      type: Bearer\n      credentials_file: {}",
                q(TOKEN)
            );
        }
        o.push_str("    static_configs:\n");
        for t in targets {
            let _ = writeln!(
                o,
                "      - targets: [{}]\n        labels: {{guest: {}, role: {}, vmid: {}, lab: {}}}",
                q(&format!("{}:{}", t.host, t.port)),
                q(t.guest.as_str()),
                q(job.role()),
                q(&t.vmid.to_string()),
                q(m.lab.as_str()),
            );
        }
    }
    o
}

/// One alerting rule.
fn rule(o: &mut String, m: &Monitoring, name: &str, expr: &str, summary: &str) {
    let _ = writeln!(
        o,
        "      - alert: {}\n        expr: {}\n        for: {}\n        labels: {{severity: {}}}\n        annotations:\n          summary: {}",
        q(name),
        q(expr),
        q(m.alert_for.as_str()),
        q("critical"),
        q(summary),
    );
}

/// The alert rules: a target down, a watched file system above 85%, the
/// object store reporting offline drives, a Spark master with fewer ALIVE
/// workers than the lab joins to it, and a failed first boot (the agent's
/// own textfile metric).
pub fn rules(m: &Monitoring) -> String {
    let mut o = format!(
        "{HEADER}\ngroups:\n  - name: {}\n    interval: {}\n    rules:\n",
        q("imgbuild"),
        q(m.scrape_interval.as_str())
    );
    rule(
        &mut o,
        m,
        "TargetDown",
        "up == 0",
        "{{ $labels.job }} on {{ $labels.guest }} ({{ $labels.instance }}) does not answer scrapes",
    );
    // One rule (promtool refuses two alerts alike): each watched mount
    // point's own comparison, joined with `or` (their series differ by
    // mountpoint, so every match is kept).
    let full: Vec<String> = m
        .filesystems
        .iter()
        .map(|fs| {
            let sel = format!("{{job=\"node\",mountpoint=\"{fs}\"}}");
            format!(
                "(1 - node_filesystem_avail_bytes{sel} / node_filesystem_size_bytes{sel} > 0.85)"
            )
        })
        .collect();
    if !full.is_empty() {
        rule(
            &mut o,
            m,
            "FilesystemAlmostFull",
            &full.join(" or "),
            "{{ $labels.mountpoint }} on {{ $labels.guest }} is {{ $value | humanizePercentage }} full",
        );
    }
    if m.targets.iter().any(|t| t.job == Job::MinioCluster) {
        rule(
            &mut o,
            m,
            "ObjectStoreDrivesOffline",
            "minio_cluster_drive_offline_total > 0",
            "the object store on {{ $labels.guest }} reports {{ $value }} offline drive(s)",
        );
    }
    for (guest, workers) in &m.spark_masters {
        if *workers == 0 {
            continue;
        }
        rule(
            &mut o,
            m,
            "SparkWorkerLost",
            &format!(
                "metrics_master_aliveWorkers_Value{{job=\"spark-master\",guest=\"{guest}\"}} < {workers}"
            ),
            &format!(
                "the Spark master on {{{{ $labels.guest }}}} has {{{{ $value }}}} ALIVE worker(s) of {workers}"
            ),
        );
    }
    rule(
        &mut o,
        m,
        "FirstbootFailed",
        "imgbuild_firstboot_failed == 1",
        "firstboot failed on {{ $labels.guest }} (see /var/lib/imgbuild/status.json there)",
    );
    o
}

/// Prometheus' unit: the common sandbox with only the TSDB writable.
pub fn unit(m: &Monitoring) -> String {
    let home = m.home.as_str();
    format!(
        "{HEADER}\n[Unit]\nDescription=Prometheus\nDocumentation=https://prometheus.io/docs/\n\
         Wants=network-online.target\nAfter=network-online.target\n\
         AssertFileIsExecutable={home}/prometheus\n\n\
         [Service]\nType=simple\nUser={USER}\nGroup={USER}\n\
         ExecStart={home}/prometheus --config.file={CONFIG} --storage.tsdb.path={data} \
         --storage.tsdb.retention.time={ret} --web.listen-address=:{port}\n\
         ExecReload=/bin/kill -HUP $MAINPID\n\
         Restart=on-failure\nRestartSec=2\nTimeoutStopSec=60\nLimitNOFILE=65536\n{}\n\
         [Install]\nWantedBy=multi-user.target\n",
        super::sandbox(&[m.data_dir.as_str()], false),
        data = m.data_dir,
        ret = m.retention,
        port = m.port,
    )
}

#[cfg(test)]
mod tests;
