//! Role renderers: each adds its accounts, files, units and checks to a plan.

pub mod common;
pub mod metrics;
pub mod minio;
pub mod monitoring;
pub mod spark;
pub mod updates;

/// First line of every file the agent writes.
pub const HEADER: &str =
    "# Written by imgbuild firstboot from this guest's seed; local changes are overwritten.";

/// The sandbox every service unit gets (systemd.exec(5)): its own user, a
/// read-only system with only `rw` writable, no devices, no privilege gain,
/// an empty capability set, only IP, Unix and netlink sockets, and the
/// system-service call set (raising limits, as Go and the JVM do at start,
/// stays allowed). `jit` keeps writable+executable memory for the JVM's JIT
/// (no `MemoryDenyWriteExecute`). /proc keeps its system files
/// (no `ProcSubset=pid`): both runtimes read /proc/meminfo and /proc/stat.
/// `systemd-analyze security --offline=true` rates these units at most 4.0
/// (tests/agent.rs checks every unit the agent writes).
pub fn sandbox(rw: &[&str], jit: bool) -> String {
    let mut s = String::from(
        "NoNewPrivileges=yes\nProtectSystem=strict\nProtectHome=yes\nPrivateTmp=yes\n\
         PrivateDevices=yes\nDevicePolicy=closed\nProtectKernelTunables=yes\nProtectKernelModules=yes\n\
         ProtectKernelLogs=yes\nProtectControlGroups=yes\nProtectClock=yes\nProtectHostname=yes\n\
         ProtectProc=invisible\nRestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK\n\
         RestrictNamespaces=yes\nRestrictRealtime=yes\nRestrictSUIDSGID=yes\nLockPersonality=yes\n\
         SystemCallArchitectures=native\nSystemCallFilter=@system-service\n\
         SystemCallFilter=~@privileged\nSystemCallErrorNumber=EPERM\n\
         CapabilityBoundingSet=\nAmbientCapabilities=\nUMask=0027\nKeyringMode=private\nRemoveIPC=yes\n",
    );
    if !jit {
        s.push_str("MemoryDenyWriteExecute=yes\n");
    }
    if !rw.is_empty() {
        s.push_str(&format!("ReadWritePaths={}\n", rw.join(" ")));
    }
    s
}
