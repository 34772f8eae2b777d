//! The metrics role: the baked Prometheus node exporter under its own user
//! and a hardened unit, its textfile-collector directory, a readiness check
//! on `/metrics`, and the agent's own outcome rendered for that collector
//! (`imgbuild_firstboot.prom`: applied instance id, ready/failed, seconds per
//! step), rewritten with status.json so a failed run is visible too.

use super::HEADER;
use crate::fsutil::{under, write_file};
use crate::plan::{Account, Check, Plan};
use crate::seed::metrics::{Metrics, ObjectStoreAuth, FIRSTBOOT_PROM};
use crate::seed::Seed;
use crate::status::{State, Status, StepState};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

/// The exporter's service account.
pub const USER: &str = "node-exporter";
/// Its unit.
pub const UNIT: &str = "node-exporter.service";

/// Adds the metrics role to `plan`.
pub fn plan(m: &Metrics, plan: &mut Plan) {
    let ne = &m.node_exporter;
    plan.accounts.push(Account {
        name: USER.into(),
        home: "/nonexistent".into(),
    });
    // Root writes the textfiles; the exporter only reads them.
    if let Some(parent) = Path::new(ne.textfile_dir.as_str()).parent() {
        if parent != Path::new("/") && parent != Path::new("/var/lib") {
            plan.dir(&parent.to_string_lossy(), 0o755, "root", "root");
        }
    }
    plan.dir(ne.textfile_dir.as_str(), 0o755, "root", "root");
    plan.file(
        &format!("/etc/systemd/system/{UNIT}"),
        0o644,
        unit(m),
        &[UNIT],
    );
    plan.unit(UNIT, Duration::from_secs(60));
    plan.checks.push(Check::Http {
        name: "node-exporter".into(),
        host: "127.0.0.1".into(),
        port: ne.port.get(),
        path: "/metrics".into(),
        deadline: Duration::from_secs(60),
    });
}

/// Service metrics, once the roles are planned: MinIO's Prometheus auth mode
/// in /etc/default/minio, and Spark's Prometheus servlet for the master and
/// worker (conf/metrics.properties) and for applications' executors
/// (`spark.ui.prometheus.enabled` in spark-defaults.conf), each with a
/// readiness check on its metrics path.
pub fn services(seed: &Seed, m: &Metrics, plan: &mut Plan) {
    if let Some(os) = &seed.roles.object_store {
        let env = m.object_store_auth.minio_env();
        append(
            plan,
            "/etc/default/minio",
            &format!("MINIO_PROMETHEUS_AUTH_TYPE=\"{env}\"\n"),
        );
        if m.object_store_auth == ObjectStoreAuth::Public {
            plan.checks.push(Check::Http {
                name: "minio-metrics".into(),
                host: "127.0.0.1".into(),
                port: os.api_port.get(),
                path: MINIO_CLUSTER_PATH.into(),
                deadline: Duration::from_secs(60),
            });
        }
    }
    if let Some(sp) = &seed.roles.spark {
        let home = sp.home.as_str();
        let units: Vec<&str> = [
            sp.master.as_ref().map(|_| "spark-master.service"),
            sp.worker.as_ref().map(|_| "spark-worker.service"),
        ]
        .into_iter()
        .flatten()
        .collect();
        plan.file(
            &format!("{home}/conf/metrics.properties"),
            0o644,
            spark_metrics_properties(),
            &units,
        );
        append(
            plan,
            &format!("{home}/conf/spark-defaults.conf"),
            "spark.ui.prometheus.enabled true\n",
        );
        if let Some(ms) = &sp.master {
            plan.checks.push(Check::Http {
                name: "spark-master-metrics".into(),
                host: ms.host.as_str().into(),
                port: ms.ui_port.get(),
                // Spark's Jetty redirects the bare path to its slash form (302).
                path: format!("{SPARK_MASTER_PATH}/"),
                deadline: Duration::from_secs(120),
            });
        }
        if let Some(w) = &sp.worker {
            plan.checks.push(Check::Http {
                name: "spark-worker-metrics".into(),
                host: "127.0.0.1".into(),
                port: w.ui_port.get(),
                path: format!("{SPARK_WORKER_PATH}/"),
                deadline: Duration::from_secs(120),
            });
        }
    }
}

/// MinIO's cluster metrics path (v2).
pub const MINIO_CLUSTER_PATH: &str = "/minio/v2/metrics/cluster";
/// MinIO's node metrics path (v2).
pub const MINIO_NODE_PATH: &str = "/minio/v2/metrics/node";
/// The Spark master's servlet path (on its UI port).
pub const SPARK_MASTER_PATH: &str = "/metrics/master/prometheus";
/// A Spark worker's servlet path (on its UI port).
pub const SPARK_WORKER_PATH: &str = "/metrics/prometheus";

/// Spark's PrometheusServlet sink for every instance (master, worker,
/// applications, driver); read from the conf directory on the classpath.
pub fn spark_metrics_properties() -> String {
    format!(
        "{HEADER}\n*.sink.prometheusServlet.class=org.apache.spark.metrics.sink.PrometheusServlet\n\
         *.sink.prometheusServlet.path=/metrics/prometheus\n\
         master.sink.prometheusServlet.path={SPARK_MASTER_PATH}\n\
         applications.sink.prometheusServlet.path=/metrics/applications/prometheus\n\
         *.source.jvm.class=org.apache.spark.metrics.source.JvmSource\n"
    )
}

/// Appends `line` to a file another role planned (absent: nothing to do).
fn append(plan: &mut Plan, path: &str, line: &str) {
    if let Some(f) = plan.files.iter_mut().find(|f| f.path == path) {
        f.content.push_str(line);
    }
}

/// The exporter's unit: read-only system, no privileges, no devices, only
/// IP, Unix and netlink sockets (netdev reads link statistics over rtnetlink).
/// `systemd-analyze security --offline=true` rates it 1.5 on systemd 252.
pub fn unit(m: &Metrics) -> String {
    let ne = &m.node_exporter;
    format!(
        "{HEADER}\n[Unit]\nDescription=Prometheus node exporter\n\
         Documentation=https://github.com/prometheus/node_exporter\n\
         Wants=network-online.target\nAfter=network-online.target\n\
         AssertFileIsExecutable={bin}\n\n\
         [Service]\nType=simple\nUser={USER}\nGroup={USER}\n\
         ExecStart={bin} --web.listen-address=:{port} --collector.textfile.directory={dir}\n\
         Restart=on-failure\nRestartSec=2\n\
         NoNewPrivileges=yes\nCapabilityBoundingSet=\nAmbientCapabilities=\n\
         ProtectSystem=strict\nProtectHome=yes\nPrivateTmp=yes\nPrivateDevices=yes\nDevicePolicy=closed\n\
         ProtectKernelTunables=yes\nProtectKernelModules=yes\nProtectKernelLogs=yes\n\
         ProtectControlGroups=yes\nProtectClock=yes\nProtectHostname=yes\nProtectProc=invisible\n\
         RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK\nRestrictNamespaces=yes\n\
         RestrictRealtime=yes\nRestrictSUIDSGID=yes\nLockPersonality=yes\nMemoryDenyWriteExecute=yes\n\
         RemoveIPC=yes\nSystemCallArchitectures=native\nSystemCallFilter=@system-service\n\
         SystemCallFilter=~@privileged @resources\nSystemCallErrorNumber=EPERM\nUMask=0077\n\
         MemoryMax=128M\nTasksMax=64\n\n\
         [Install]\nWantedBy=multi-user.target\n",
        bin = ne.binary,
        port = ne.port,
        dir = ne.textfile_dir,
    )
}

/// The agent's outcome in Prometheus' text format.
pub fn textfile(s: &Status, now_unix: u64) -> String {
    let mut o = String::new();
    let state = match s.state {
        State::Running => "running",
        State::Ready => "ready",
        State::Failed => "failed",
        State::Prepared => "prepared",
    };
    let id = s.instance_id.as_deref().unwrap_or("");
    o.push_str("# HELP imgbuild_firstboot_info The seed instance the firstboot agent applied last (or is applying).\n# TYPE imgbuild_firstboot_info gauge\n");
    let _ = writeln!(
        o,
        "imgbuild_firstboot_info{{instance_id=\"{}\",agent_version=\"{}\"}} 1",
        escape(id),
        escape(&s.agent_version)
    );
    o.push_str("# HELP imgbuild_firstboot_state 1 for the state the run is in: running, ready, failed or prepared (--root).\n# TYPE imgbuild_firstboot_state gauge\n");
    for name in ["running", "ready", "failed", "prepared"] {
        let _ = writeln!(
            o,
            "imgbuild_firstboot_state{{state=\"{name}\"}} {}",
            u8::from(name == state)
        );
    }
    o.push_str("# HELP imgbuild_firstboot_ready 1 when the last run finished ready.\n# TYPE imgbuild_firstboot_ready gauge\n");
    let _ = writeln!(
        o,
        "imgbuild_firstboot_ready {}",
        u8::from(s.state == State::Ready)
    );
    o.push_str("# HELP imgbuild_firstboot_failed 1 when the last run failed.\n# TYPE imgbuild_firstboot_failed gauge\n");
    let _ = writeln!(
        o,
        "imgbuild_firstboot_failed {}",
        u8::from(s.state == State::Failed)
    );
    o.push_str("# HELP imgbuild_firstboot_step_seconds Wall time of each finished step of the run.\n# TYPE imgbuild_firstboot_step_seconds gauge\n");
    for st in &s.steps {
        let Some(ms) = st.duration_ms else { continue };
        let result = match st.state {
            StepState::Failed => "failed",
            StepState::Skipped => "skipped",
            _ => "done",
        };
        let _ = writeln!(
            o,
            "imgbuild_firstboot_step_seconds{{step=\"{}\",result=\"{result}\"}} {}.{:03}",
            escape(&st.name),
            ms / 1000,
            ms % 1000
        );
    }
    o.push_str("# HELP imgbuild_firstboot_last_update_timestamp_seconds When the agent last wrote this file.\n# TYPE imgbuild_firstboot_last_update_timestamp_seconds gauge\n");
    let _ = writeln!(
        o,
        "imgbuild_firstboot_last_update_timestamp_seconds {now_unix}"
    );
    o
}

/// A label value as the exposition format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Rewrites the agent's textfile next to status.json, when the metrics role
/// has created the collector's directory (earlier steps of a first run, and
/// guests without the role, have none: nothing is written then). The write is
/// atomic under a name the collector ignores (`.*.firstboot-tmp`).
pub fn record(root: &Path, textfile_dir: &str, status: &Status) -> anyhow::Result<()> {
    let dir = under(root, textfile_dir);
    if !dir.is_dir() {
        return Ok(());
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    write_file(
        &dir.join(FIRSTBOOT_PROM),
        textfile(status, now).as_bytes(),
        0o644,
        0,
        0,
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::Step;

    fn default_metrics() -> Metrics {
        Metrics {
            node_exporter: Default::default(),
            object_store_auth: ObjectStoreAuth::Bearer,
        }
    }

    fn status(state: State) -> Status {
        Status {
            instance_id: Some("ab12".into()),
            seed_source: None,
            state,
            failed_step: None,
            steps: vec![
                Step {
                    name: "files".into(),
                    state: StepState::Done,
                    duration_ms: Some(1234),
                    error: None,
                },
                Step {
                    name: "start:minio.service".into(),
                    state: StepState::Failed,
                    duration_ms: Some(5),
                    error: Some("boom".into()),
                },
                Step {
                    name: "marker".into(),
                    state: StepState::Pending,
                    duration_ms: None,
                    error: None,
                },
            ],
            agent_version: "0.1.0".into(),
            peak_rss_kib: None,
            reason: None,
        }
    }

    #[test]
    fn textfile_names_instance_state_and_step_seconds() {
        let t = textfile(&status(State::Failed), 1700000000);
        assert!(
            t.contains("imgbuild_firstboot_info{instance_id=\"ab12\",agent_version=\"0.1.0\"} 1\n"),
            "{t}"
        );
        assert!(t.contains("imgbuild_firstboot_state{state=\"failed\"} 1\n"));
        assert!(t.contains("imgbuild_firstboot_state{state=\"ready\"} 0\n"));
        assert!(t.contains("imgbuild_firstboot_ready 0\n"));
        assert!(t.contains("imgbuild_firstboot_failed 1\n"));
        assert!(
            t.contains("imgbuild_firstboot_step_seconds{step=\"files\",result=\"done\"} 1.234\n")
        );
        assert!(t.contains(
            "imgbuild_firstboot_step_seconds{step=\"start:minio.service\",result=\"failed\"} 0.005\n"
        ));
        assert!(
            !t.contains("step=\"marker\""),
            "pending steps have no time: {t}"
        );
        let ready = textfile(&status(State::Ready), 1);
        assert!(ready.contains("imgbuild_firstboot_ready 1\n"), "{ready}");
    }

    #[test]
    fn textfile_parses_as_exposition_format() {
        // Every sample line is `name{labels} value` with a float value and
        // every metric has HELP and TYPE before its samples.
        let t = textfile(&status(State::Ready), 7);
        let mut typed = std::collections::BTreeSet::new();
        for l in t.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                typed.insert(rest.split(' ').next().unwrap().to_string());
                continue;
            }
            if l.starts_with('#') {
                continue;
            }
            let (series, value) = l.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap_or_else(|_| panic!("{l}"));
            let name = series.split('{').next().unwrap();
            assert!(typed.contains(name), "{name} has no TYPE line");
        }
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn unit_is_hardened_and_uses_the_seed_port() {
        let m = Metrics {
            node_exporter: crate::seed::metrics::NodeExporter {
                port: crate::seed::Port::new(9200).unwrap(),
                ..Default::default()
            },
            object_store_auth: ObjectStoreAuth::Bearer,
        };
        let u = unit(&m);
        assert!(u.contains("--web.listen-address=:9200 "), "{u}");
        for line in [
            "User=node-exporter",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "CapabilityBoundingSet=\n",
            "PrivateDevices=yes",
        ] {
            assert!(u.contains(line), "{line} missing:\n{u}");
        }
    }

    #[test]
    fn service_metrics_follow_the_roles() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../seed/tests/fixtures/seeds");
        let with = |file: &str, extra: &str| {
            let text = std::fs::read_to_string(format!("{dir}/{file}")).unwrap();
            let text = text.replace("roles:\n", &format!("roles:\n  metrics: {extra}\n"));
            crate::plan::build(&Seed::from_yaml(&text).unwrap(), "")
        };
        let p = with("minio.yaml", "{object_store_auth: public}");
        let env = p
            .files
            .iter()
            .find(|f| f.path == "/etc/default/minio")
            .unwrap();
        assert!(env
            .content
            .ends_with("MINIO_PROMETHEUS_AUTH_TYPE=\"public\"\n"));
        assert!(p
            .render(false)
            .contains("check:minio-metrics GET http://127.0.0.1:9000/minio/v2/metrics/cluster"));
        assert!(p
            .render(false)
            .contains("check:node-exporter GET http://127.0.0.1:9100/metrics"));
        let p = with("minio.yaml", "{}");
        let env = p
            .files
            .iter()
            .find(|f| f.path == "/etc/default/minio")
            .unwrap();
        assert!(env
            .content
            .ends_with("MINIO_PROMETHEUS_AUTH_TYPE=\"jwt\"\n"));
        assert!(!p.render(false).contains("minio-metrics"));
        let p = with("devlab.yaml", "{}");
        let props = p
            .files
            .iter()
            .find(|f| f.path == "/opt/spark/conf/metrics.properties")
            .unwrap();
        assert!(props
            .content
            .contains("master.sink.prometheusServlet.path=/metrics/master/prometheus\n"));
        assert_eq!(
            props.restarts,
            ["spark-master.service", "spark-worker.service"]
        );
        let defaults = p
            .files
            .iter()
            .find(|f| f.path == "/opt/spark/conf/spark-defaults.conf")
            .unwrap();
        assert!(defaults
            .content
            .ends_with("spark.ui.prometheus.enabled true\n"));
        let r = p.render(false);
        assert!(r.contains("check:spark-master-metrics GET http://"), "{r}");
        assert!(r.contains(":8080/metrics/master/prometheus/ within"), "{r}");
        assert!(r.contains(":8081/metrics/prometheus/ within"), "{r}");
    }

    #[test]
    fn unit_exposure_is_at_most_4() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join(UNIT);
        std::fs::write(&f, unit(&default_metrics())).unwrap();
        let o = std::process::Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(&f)
            .output()
            .expect("systemd-analyze (Debian package systemd) must be installed");
        let out = String::from_utf8_lossy(&o.stdout);
        let level: f64 = out
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|l| l.split(": ").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no exposure level in:\n{out}\n{}",
                    String::from_utf8_lossy(&o.stderr)
                )
            });
        assert!(level <= 4.0, "exposure {level} > 4.0:\n{out}");
    }

    #[test]
    fn record_writes_only_where_the_collector_dir_exists() {
        let root = tempfile::tempdir().unwrap();
        let dir = "/var/lib/node_exporter/textfile";
        record(root.path(), dir, &status(State::Ready)).unwrap();
        assert!(!under(root.path(), dir).exists());
        std::fs::create_dir_all(under(root.path(), dir)).unwrap();
        // write_file chowns to root:root, which the tests (run as root) may do.
        record(root.path(), dir, &status(State::Ready)).unwrap();
        let t = std::fs::read_to_string(under(root.path(), dir).join(FIRSTBOOT_PROM)).unwrap();
        assert!(t.contains("imgbuild_firstboot_ready 1"), "{t}");
    }
}
