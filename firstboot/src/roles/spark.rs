//! The Spark role: standalone master and/or worker as foreground systemd
//! services (`bin/spark-class`, since the pyspark-derived layout has no
//! `sbin/` scripts), spark-env.sh, spark-defaults.conf with S3A settings, and
//! a readiness check on the master's `/json/`.

use super::HEADER;
use crate::plan::{Account, Check, Plan};
use crate::seed::Spark;
use std::fmt::Write as _;
use std::time::Duration;

/// The service account.
pub const USER: &str = "spark";

/// Adds the Spark role to `plan`.
pub fn plan(s: &Spark, plan: &mut Plan) {
    let home = s.home.as_str();
    let work = s.work_dir();
    plan.accounts.push(Account {
        name: USER.into(),
        home: home.into(),
    });
    plan.dir(s.log_dir.as_str(), 0o755, USER, USER);
    plan.dir(&work, 0o755, USER, USER);
    plan.dir(&format!("{home}/conf"), 0o755, "root", "root");

    let all: Vec<&str> = [
        s.master.as_ref().map(|_| "spark-master.service"),
        s.worker.as_ref().map(|_| "spark-worker.service"),
    ]
    .into_iter()
    .flatten()
    .collect();

    let mut env = format!(
        "{HEADER}\nexport JAVA_HOME=\"{}\"\nexport SPARK_LOG_DIR=\"{}\"\nexport SPARK_WORKER_DIR=\"{work}\"\n",
        s.java_home, s.log_dir
    );
    if let Some(m) = &s.master {
        let _ = write!(
            env,
            "export SPARK_MASTER_HOST=\"{}\"\nexport SPARK_MASTER_PORT=\"{}\"\nexport SPARK_MASTER_WEBUI_PORT=\"{}\"\n",
            m.host, m.port, m.ui_port
        );
    }
    if let Some(w) = &s.worker {
        let _ = write!(
            env,
            "export SPARK_WORKER_CORES=\"{}\"\nexport SPARK_WORKER_MEMORY=\"{}\"\nexport SPARK_WORKER_WEBUI_PORT=\"{}\"\n",
            w.cores.get(),
            w.memory,
            w.ui_port
        );
    }
    plan.file(&format!("{home}/conf/spark-env.sh"), 0o644, env, &all);

    let master_url = match (&s.worker, &s.master) {
        (Some(w), _) => w.master_url.as_str().to_string(),
        (None, Some(m)) => format!("spark://{}:{}", m.host, m.port),
        (None, None) => unreachable!("validated: a master or a worker"),
    };
    // Only holders of the cluster's secret may talk to the master, the
    // workers and the executors (the daemons and every client read this
    // file, which is why it is root:spark 0640); their RPC is encrypted, as
    // the driver hands its configuration (S3A keys included) to executors.
    // The web UIs have no authentication: they may show, never kill.
    let mut defaults = format!(
        "{HEADER}\nspark.master {master_url}\nspark.authenticate true\nspark.authenticate.secret {}\n\
         spark.network.crypto.enabled true\nspark.ui.killEnabled false\n",
        s.auth_secret.expose()
    );
    if let Some(s3) = &s.s3 {
        let _ = write!(
            defaults,
            "spark.hadoop.fs.s3a.endpoint {}\nspark.hadoop.fs.s3a.path.style.access {}\n\
             spark.hadoop.fs.s3a.access.key {}\nspark.hadoop.fs.s3a.secret.key {}\n\
             spark.hadoop.fs.s3a.connection.ssl.enabled {}\n",
            s3.endpoint,
            s3.path_style,
            s3.access_key,
            s3.secret_key.expose(),
            s3.endpoint.scheme() == "https"
        );
    }
    plan.owned_file(
        &format!("{home}/conf/spark-defaults.conf"),
        0o640,
        "root",
        USER,
        defaults,
        &all,
        true,
    );

    // Foreground daemons (SPARK_NO_DAEMONIZE) log to stdout: append it under
    // the log dir, where spark-daemon.sh would have put its `.out` file. The
    // shell opens the file as the service user: systemd's `append:` would
    // open it as root in a directory that user can write (a symlink there
    // would make root append anywhere).
    // A JVM whose shutdown hooks hang is killed after 30 s (with any
    // executors it started: they share its cgroup) rather than systemd's 90.
    let service = |desc: &str, after: &str, exec: String, log: &str| {
        format!(
            "{HEADER}\n[Unit]\nDescription={desc}\nWants=network-online.target\nAfter=network-online.target{after}\n\n\
             [Service]\nType=simple\nUser={USER}\nGroup={USER}\nWorkingDirectory={home}\n\
             Environment=JAVA_HOME={}\nEnvironment=SPARK_HOME={home}\nEnvironment=SPARK_LOG_DIR={}\n\
             Environment=SPARK_NO_DAEMONIZE=1\nExecStart=/bin/sh -c 'exec {exec} >>{}/{log}.out 2>&1'\n\
             Restart=on-failure\nRestartSec=5\nSuccessExitStatus=143\nTimeoutStopSec=30\nLimitNOFILE=65536\n{}\n\
             [Install]\nWantedBy=multi-user.target\n",
            s.java_home,
            s.log_dir,
            s.log_dir,
            super::sandbox(&[s.log_dir.as_str(), &work], true)
        )
    };
    if let Some(m) = &s.master {
        let exec = format!(
            "{home}/bin/spark-class org.apache.spark.deploy.master.Master --host {} --port {} --webui-port {}",
            m.host, m.port, m.ui_port
        );
        plan.file(
            "/etc/systemd/system/spark-master.service",
            0o644,
            service("Spark standalone master", "", exec, "spark-master"),
            &["spark-master.service"],
        );
        plan.unit("spark-master.service", Duration::from_secs(120));
    }
    if let Some(w) = &s.worker {
        let after = if s.master.is_some() {
            " spark-master.service"
        } else {
            ""
        };
        let exec = format!(
            "{home}/bin/spark-class org.apache.spark.deploy.worker.Worker --webui-port {} --cores {} --memory {} --work-dir {work} {}",
            w.ui_port,
            w.cores.get(),
            w.memory,
            w.master_url
        );
        plan.file(
            "/etc/systemd/system/spark-worker.service",
            0o644,
            service("Spark standalone worker", after, exec, "spark-worker"),
            &["spark-worker.service"],
        );
        plan.unit("spark-worker.service", Duration::from_secs(120));
    }
    // JVM start-up dominates: ~7 s on real hardware, ~150 s under emulation
    // (QEMU TCG), so allow a slow host plenty before calling it a failure.
    match (&s.master, &s.worker) {
        (Some(m), _) => plan.checks.push(Check::SparkWorkers {
            host: m.host.as_str().into(),
            port: m.ui_port.get(),
            workers: s.expect_workers,
            deadline: Duration::from_secs(600),
        }),
        (None, Some(w)) => plan.checks.push(Check::Http {
            name: "spark-worker-ui".into(),
            host: "127.0.0.1".into(),
            port: w.ui_port.get(),
            path: "/".into(),
            deadline: Duration::from_secs(600),
        }),
        (None, None) => {}
    }
}
