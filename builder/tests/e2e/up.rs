//! A test lab run through `imgbuild up`/`verify`/`status`/`down`, the one
//! way the end-to-end tests start guests: the fixture lab with fresh secrets,
//! the test recipes pinned with `imgbuild lock` from the mirror, an empty
//! `dist/` (so `up` bakes), and a private state directory. `down` runs on
//! drop, so a failing test leaves nothing running.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use imgbuild::target::local::state::LabDir;

use super::{
    imgbuild, imgbuild_ok, run_timeout, tail, test_lab, test_recipe, Output, Peers, TestLab,
};

/// The file in a test's work directory naming the test process (its pid).
const OWNER: &str = "e2e-owner.pid";

/// Takes down the labs of earlier test runs that were killed before their
/// drop ran (a timeout, a ^C): their guests (JVMs, MinIO) would otherwise
/// keep running beside every later test, loading the machine. Such a lab is
/// a work directory `imgbuild-e2e-*` in the temp dir whose [`OWNER`] process
/// is gone; a live owner (a test running right now) is left alone.
fn remove_labs_of_dead_runs(peers: &Peers) {
    let Ok(dir) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in dir.flatten() {
        if !e.file_name().to_string_lossy().starts_with("imgbuild-e2e-") {
            continue;
        }
        let work = e.path();
        let Some(pid) = std::fs::read_to_string(work.join(OWNER))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new("/proc").join(pid.to_string()).exists() {
            continue;
        }
        let lab = work.join("lab.yaml");
        let state = work.join("state");
        if lab.is_file() && state.is_dir() {
            eprintln!(
                "e2e: taking down the lab a killed run (pid {pid}) left in {}",
                work.display()
            );
            match run_timeout(
                imgbuild(peers)
                    .args(["down", "--purge-data", "--lab"])
                    .arg(&lab)
                    .arg("--state-dir")
                    .arg(&state),
                None,
                Duration::from_secs(180),
                "imgbuild down (a dead run's lab)",
            ) {
                Ok(o) if o.ok() => {}
                Ok(o) => {
                    eprintln!(
                        "e2e: {}: down failed, left as is:\n{}",
                        work.display(),
                        tail(&o.stderr, 20)
                    );
                    continue;
                }
                Err(e) => {
                    eprintln!("e2e: {}: {e}; left as is", work.display());
                    continue;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&work);
    }
}

pub struct UpLab {
    pub peers: Peers,
    pub lab: TestLab,
    pub images: PathBuf,
    pub dist: PathBuf,
    pub state: PathBuf,
    pub labdir: LabDir,
}

impl UpLab {
    /// The fixture lab in `dir` with `recipes` pinned from the mirror.
    pub fn new(peers: &Peers, fixture: &str, recipes: &[&str], dir: &Path) -> UpLab {
        remove_labs_of_dead_runs(peers);
        // Whose lab this is: a later run takes it down if this one is killed
        // before its drop runs.
        std::fs::write(dir.join(OWNER), std::process::id().to_string()).unwrap();
        let lab = test_lab(fixture, dir);
        let mut images = PathBuf::new();
        for r in recipes {
            images = test_recipe(peers, r, dir)
                .parent()
                .expect("images dir")
                .to_path_buf();
        }
        imgbuild_ok(
            peers,
            &[
                "lock",
                "--images",
                images.to_str().unwrap(),
                "--mirror",
                peers.mirror.to_str().unwrap(),
                "--trust-mirror-checksums",
                "-q",
            ],
            Duration::from_secs(120),
        );
        let state = dir.join("state");
        std::fs::create_dir_all(&state).unwrap();
        let labdir = LabDir::new(&state, &lab.path).unwrap();
        UpLab {
            peers: peers.clone(),
            lab,
            images,
            dist: dir.join("dist"),
            state,
            labdir,
        }
    }

    /// `imgbuild SUB --lab LAB --state-dir STATE`.
    pub fn cmd(&self, sub: &str) -> Command {
        let mut c = imgbuild(&self.peers);
        c.arg(sub)
            .arg("--lab")
            .arg(&self.lab.path)
            .arg("--state-dir")
            .arg(&self.state);
        c
    }

    /// `imgbuild up` with the test images, dist and mirror, `--json`.
    pub fn up_cmd(&self) -> Command {
        let mut c = self.cmd("up");
        c.arg("--images")
            .arg(&self.images)
            .arg("--dist")
            .arg(&self.dist)
            .arg("--mirror")
            .arg(&self.peers.mirror)
            .args(["--locked", "-q", "--json"]);
        c
    }

    /// Runs `cmd` within `timeout` (a timeout panics).
    pub fn run(&self, cmd: &mut Command, timeout: Duration, what: &str) -> Output {
        run_timeout(cmd, None, timeout, what).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `up`, which must succeed; returns its rows.
    pub fn up(&self, timeout: Duration) -> Vec<serde_json::Value> {
        let o = self.run(&mut self.up_cmd(), timeout, "imgbuild up");
        assert!(
            o.ok(),
            "imgbuild up failed ({}):\n{}\nstdout:\n{}",
            o.status,
            tail(&o.stderr, 80),
            tail(&o.stdout, 40)
        );
        serde_json::from_str(&o.stdout)
            .unwrap_or_else(|e| panic!("up --json printed no JSON ({e}):\n{}", o.stdout))
    }

    /// `status --json`'s rows.
    pub fn status(&self) -> Vec<serde_json::Value> {
        let o = self.run(
            self.cmd("status").arg("--json"),
            Duration::from_secs(120),
            "imgbuild status",
        );
        assert!(o.ok(), "imgbuild status failed:\n{}", o.stderr);
        serde_json::from_str(&o.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}:\n{}", o.stdout))
    }

    /// `status --json` until each of `guests` is `ready`, returning those
    /// rows. `status` gives the readiness probes 2 s, which a JVM's web UI
    /// on a loaded machine (or in a VM under TCG) can miss once; what is
    /// asserted is that `status` says ready, not that it did on the first
    /// call. A timeout panics with the last rows.
    pub fn status_ready(&self, guests: &[&str]) -> Vec<serde_json::Value> {
        super::poll(
            &format!("status says {} ready", guests.join(", ")),
            Duration::from_secs(120),
            Duration::from_secs(2),
            |why| {
                let st = self.status();
                let all = guests
                    .iter()
                    .all(|g| st.iter().any(|r| r["guest"] == *g && r["state"] == "ready"));
                *why = serde_json::to_string(&st).unwrap_or_default();
                Ok(all.then_some(st))
            },
        )
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// `verify --json`: the parsed report and whether it exited 0.
    pub fn verify(&self, timeout: Duration) -> (serde_json::Value, Output) {
        let o = self.run(self.cmd("verify").arg("--json"), timeout, "imgbuild verify");
        let v = serde_json::from_str(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "verify --json printed no JSON ({e}):\n{}\n{}",
                o.stdout,
                tail(&o.stderr, 40)
            )
        });
        (v, o)
    }

    /// `imgbuild logs GUEST` (for diagnostics).
    pub fn logs(&self, guest: &str) -> String {
        match run_timeout(
            self.cmd("logs").args(["-n", "60", guest]),
            None,
            super::SSH_LOGIN,
            "imgbuild logs",
        ) {
            Ok(o) => format!("{}{}", o.stdout, o.stderr),
            Err(e) => e,
        }
    }

    /// `imgbuild down --purge-data` (nothing of the lab left, data volumes
    /// included), which must succeed.
    pub fn down(&self) -> Output {
        let o = self.run(
            self.cmd("down").arg("--purge-data"),
            Duration::from_secs(180),
            "imgbuild down --purge-data",
        );
        assert!(o.ok(), "imgbuild down --purge-data failed:\n{}", o.stderr);
        o
    }

    /// `imgbuild down` (the data volumes stay), which must succeed.
    pub fn down_keep_data(&self) -> Output {
        let o = self.run(
            &mut self.cmd("down"),
            Duration::from_secs(180),
            "imgbuild down",
        );
        assert!(o.ok(), "imgbuild down failed:\n{}", o.stderr);
        o
    }

    pub fn netns_name(&self) -> String {
        self.labdir.netns().name
    }

    /// A guest's root or disk directory.
    pub fn guest_dir(&self, guest: &str) -> PathBuf {
        self.labdir.guest_dir(guest)
    }

    /// The host pids of `guest`'s processes: every descendant of the
    /// nspawn `up` recorded for it. Other labs may be running on this
    /// machine (another test binary, a CI run), with processes of the same
    /// names in units of the same names: only this tells them apart.
    pub fn guest_pids(&self, guest: &str) -> Vec<u32> {
        let Some(root) = std::fs::read(self.labdir.state_file())
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|st| st["guests"][guest]["proc"]["pid"].as_u64())
        else {
            return Vec::new();
        };
        let mut parent = std::collections::HashMap::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            if let Some(ppid) = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok())
            {
                parent.insert(pid, ppid);
            }
        }
        let mut mine: Vec<u32> = parent
            .keys()
            .copied()
            .filter(|&pid| {
                let mut p = pid;
                // A chain longer than the process table is a loop: not ours.
                for _ in 0..=parent.len() {
                    if u64::from(p) == root {
                        return true;
                    }
                    match parent.get(&p) {
                        Some(&pp) if pp != 0 => p = pp,
                        _ => return false,
                    }
                }
                false
            })
            .collect();
        mine.sort_unstable();
        mine
    }

    /// Nothing of the lab is left: no namespace, no link on the host named
    /// like the lab's, no process, no mount, no file.
    pub fn assert_nothing_left(&self, vmids: &[u32]) {
        let ns = self.netns_name();
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(!list.contains(&ns), "network namespace {ns} is still there");
        assert!(!Path::new("/run/netns").join(&ns).exists());
        let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
        let links = String::from_utf8_lossy(&links.stdout);
        for id in vmids {
            for l in [format!("veth{id}i0"), format!("tap{id}i0")] {
                assert!(
                    !links.contains(&format!(" {l}:")) && !links.contains(&format!(" {l}@")),
                    "host link {l} is left"
                );
            }
        }
        let state = self.labdir.dir.to_string_lossy().into_owned();
        let machine_tag = &self.labdir.id[self.labdir.id.len() - 8..];
        let mut procs = Vec::new();
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            if e.file_name().to_string_lossy().parse::<u32>().is_err() {
                continue;
            }
            let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
                continue;
            };
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(&state) || cmd.contains(&ns) || cmd.contains(machine_tag) {
                procs.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
            }
        }
        assert!(
            procs.is_empty(),
            "processes of the lab are left:\n{}",
            procs.join("\n")
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let left: Vec<&str> = mounts
            .lines()
            .filter(|l| l.contains(&state) || l.contains(&ns) || l.contains(machine_tag))
            .collect();
        assert!(
            left.is_empty(),
            "mounts of the lab are left:\n{}",
            left.join("\n")
        );
        assert!(!self.labdir.dir.exists(), "{state} is left");
        super::userns::assert_no_cgroups(machine_tag);
        for d in ["propagate", "unix-export"] {
            let p = Path::new("/run/systemd/nspawn").join(d);
            if let Ok(rd) = std::fs::read_dir(&p) {
                for e in rd.flatten() {
                    assert!(
                        !e.file_name().to_string_lossy().contains(machine_tag),
                        "{} is left",
                        e.path().display()
                    );
                }
            }
        }
    }
}

impl Drop for UpLab {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for g in ["lab1", "vmlab", "lab2", "mon"] {
                if self.guest_dir(g).exists() {
                    eprintln!("===== imgbuild logs {g}\n{}", self.logs(g));
                }
            }
        }
        let _ = run_timeout(
            self.cmd("down").arg("--purge-data"),
            None,
            Duration::from_secs(180),
            "imgbuild down",
        );
    }
}
