//! Applying a plan: uploads (skipped when the same volume is there), guest
//! creation on its node, resize, start, readiness, removal of the seed media,
//! and cleanup of this lab's stale uploads. Independent guests proceed in
//! parallel (bounded). Every step is one that a later run can repeat or
//! detect as done: creates are preceded by a fresh check that the vmid is
//! free, volume names carry digests, and guests carry their state in tags,
//! so a run cut anywhere leaves a state the next run completes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::sync::{Mutex, Semaphore};

use super::api::{Api, Idempotence};
use super::params::{Params, PropString};
use super::plan::{Action, Change, Desired, Plan, Volume};
use super::state::{self, Resource};
use super::task;
use crate::model::lab::{GuestKind, Lab};
use crate::resolve::Topology;

/// Long task timeouts: an import of a large image can take a while on slow storage.
const CREATE_TIMEOUT: Duration = Duration::from_secs(1800);
pub(super) const TASK_TIMEOUT: Duration = Duration::from_secs(300);

/// Options of one apply run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Guests handled at once.
    pub parallel: usize,
    /// Wait for readiness (and then remove the seed media).
    pub wait: bool,
    pub ready_timeout: Duration,
    /// A private (0700) directory for seed media before upload.
    pub work: PathBuf,
    /// Take the plan's pre-change snapshots (`deploy --no-snapshot` turns it off).
    pub snapshot: bool,
}

/// Shared by every guest's pipeline.
pub struct Ctx<'a> {
    pub api: Api,
    pub lab: &'a Lab,
    pub topo: &'a Topology,
    pub opts: Options,
    /// Set by Ctrl-C: pipelines stop before their next step.
    pub stop: Arc<AtomicBool>,
    /// This lab's volumes on storage as read before the run.
    pub volumes: Vec<Volume>,
    /// Uploads in flight or done, so guests sharing an image upload it once.
    uploads: Mutex<BTreeMap<String, Arc<Mutex<bool>>>>,
}

/// The outcome for one guest.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Outcome {
    pub guest: String,
    pub node: String,
    pub vmid: u32,
    pub address: String,
    pub action: String,
    /// `ready`, `started` (not waited for), `unchanged`, `deleted`, or `failed: ...`.
    pub state: String,
    pub services: Vec<String>,
}

impl<'a> Ctx<'a> {
    pub fn new(
        api: Api,
        lab: &'a Lab,
        topo: &'a Topology,
        opts: Options,
        stop: Arc<AtomicBool>,
        volumes: Vec<Volume>,
    ) -> Self {
        Ctx {
            api,
            lab,
            topo,
            opts,
            stop,
            volumes,
            uploads: Mutex::new(BTreeMap::new()),
        }
    }

    pub(super) fn check_stop(&self) -> Result<()> {
        if self.stop.load(Ordering::SeqCst) {
            bail!(
                "interrupted (Ctrl-C): stopped before the next step; run deploy again to continue"
            );
        }
        Ok(())
    }
}

pub(super) fn say(guest: &str, msg: impl AsRef<str>) {
    eprintln!("{guest}: {}", msg.as_ref());
}

/// Applies `plan`. Returns one outcome per guest; a failed guest does not
/// stop the others.
pub async fn apply(ctx: &Ctx<'_>, plan: &Plan, want: &[Desired]) -> Vec<Outcome> {
    let sem = Arc::new(Semaphore::new(ctx.opts.parallel.max(1)));
    let jobs = plan.guests.iter().map(|gp| {
        let sem = sem.clone();
        async move {
            let _permit = sem.acquire().await;
            let d = want
                .iter()
                .find(|d| d.spec.vmid == gp.vmid && d.spec.name == gp.guest);
            let result = match (&gp.action, d) {
                (Action::Delete, _) => {
                    delete_guest(ctx, &gp.node, kind_of(gp.kind), gp.vmid, &gp.guest)
                        .await
                        .map(|_| "deleted".to_string())
                }
                (_, None) => Ok("unchanged".into()),
                (action, Some(d)) => {
                    let snap = gp.snapshot.as_deref().filter(|_| ctx.opts.snapshot);
                    let backup = gp.backup_first.as_ref().filter(|_| ctx.opts.snapshot);
                    match backup_first(ctx, action, d, backup).await {
                        Ok(()) => guest_pipeline(ctx, action, d, snap).await,
                        Err(e) => Err(e),
                    }
                }
            };
            let (address, services) = match d {
                Some(d) => (d.spec.address.to_string(), services(d)),
                None => (String::new(), Vec::new()),
            };
            let state = match result {
                Ok(s) => s,
                Err(e) => {
                    say(&gp.guest, format!("failed: {e:#}"));
                    format!("failed: {e:#}")
                }
            };
            Outcome {
                guest: gp.guest.clone(),
                node: gp.node.clone(),
                vmid: gp.vmid,
                address,
                action: action_name(&gp.action).into(),
                state,
                services,
            }
        }
    });
    futures_util::future::join_all(jobs).await
}

fn kind_of(s: &str) -> GuestKind {
    if s == "vm" {
        GuestKind::Vm
    } else {
        GuestKind::Lxc
    }
}

pub fn action_name(a: &Action) -> &'static str {
    match a {
        Action::Create => "create",
        Action::Update { .. } => "update",
        Action::Replace { .. } => "replace",
        Action::Finish => "finish",
        Action::Unchanged => "unchanged",
        Action::Delete => "delete",
    }
}

/// The plan step in words, for a snapshot's description.
fn step_text(a: &Action) -> String {
    match a {
        Action::Update { changes } => format!("update in place: {}", Change::list(changes)),
        Action::Replace { reasons } => format!("replace: {}", reasons.join("; ")),
        other => action_name(other).to_string(),
    }
}

fn services(d: &Desired) -> Vec<String> {
    d.spec
        .ports
        .iter()
        .map(|p| {
            let port = p.port.get();
            if d.spec.web.iter().any(|(_, w)| *w == port) {
                format!("{}: http://{}:{port}/", p.purpose, d.spec.address)
            } else {
                format!("{}: {}:{port}", p.purpose, d.spec.address)
            }
        })
        .collect()
}

/// The plan's vzdump backup before an in-place change, where the guest's
/// storages cannot snapshot; a failed or impossible one leaves it unchanged.
async fn backup_first(
    ctx: &Ctx<'_>,
    action: &Action,
    d: &Desired,
    backup: Option<&super::prechange::BackupFirst>,
) -> Result<()> {
    let Some(b) = backup else {
        return Ok(());
    };
    let name = &d.spec.name;
    let Some(storage) = &b.storage else {
        bail!("{b}; {name} was not changed");
    };
    ctx.check_stop()?;
    let g = super::snapshot::GuestRef::planned(&d.spec);
    say(
        name,
        format!("backing up to {storage} first ({})", b.because),
    );
    let why = format!("before deploy: {}", step_text(action));
    super::prechange::backup(&ctx.api, &ctx.topo.name, &g, storage, &why)
        .await
        .map_err(|e| {
            anyhow!(
                "{e:#}\nthe pre-change backup failed, so {name} was not changed (`imgbuild deploy --no-snapshot` changes it without one)"
            )
        })?;
    say(name, format!("backup to {storage} taken"));
    Ok(())
}

async fn guest_pipeline(
    ctx: &Ctx<'_>,
    action: &Action,
    d: &Desired,
    snapshot: Option<&str>,
) -> Result<String> {
    let name = &d.spec.name;
    if let Some(label) = snapshot {
        ctx.check_stop()?;
        let g = super::snapshot::GuestRef::planned(&d.spec);
        let why = format!("before deploy: {}", step_text(action));
        let (taken, _) =
            super::snapshot::take_and_prune(&ctx.api, &ctx.topo.name, &g, label, &why, None)
                .await
                .map_err(|e| {
                    anyhow!(
                        "{e:#}\nthe pre-change snapshot failed, so {name} was not changed (storage without snapshots? run `imgbuild deploy --no-snapshot` to change it anyway)"
                    )
                })?;
        say(name, format!("snapshot {taken} taken"));
    }
    match action {
        Action::Unchanged => return Ok("unchanged".into()),
        Action::Create => create(ctx, d).await?,
        Action::Replace { reasons } => {
            say(name, format!("replacing ({})", reasons.join("; ")));
            let cur = current(ctx, d.spec.vmid).await?;
            if let Some(r) = cur {
                if !r.is_ours(&ctx.topo.name) {
                    bail!(
                        "vmid {} now belongs to another guest; not touching it",
                        d.spec.vmid
                    );
                }
                // Not purged: the same vmid comes back, so it stays in the
                // backup job (and any HA/replication entry).
                if d.spec.data.is_some() {
                    // The data volume outlives the old system (see volumes.rs).
                    super::volumes::park(ctx, &d.spec, &r).await?;
                }
                destroy(
                    ctx,
                    &r.node,
                    r.kind().unwrap_or(d.spec.kind),
                    r.vmid,
                    name,
                    false,
                )
                .await?;
            }
            create(ctx, d).await?;
        }
        Action::Update { changes } => update(ctx, d, changes).await?,
        Action::Finish => {}
        Action::Delete => unreachable!("handled by the caller"),
    }
    finish(ctx, d).await
}

/// Waits for readiness (unless --no-wait) and removes the seed media.
async fn finish(ctx: &Ctx<'_>, d: &Desired) -> Result<String> {
    let name = &d.spec.name;
    // A container's template is no longer needed once the container exists.
    if d.spec.kind == GuestKind::Lxc {
        remove_media(ctx, d).await?;
    }
    if !ctx.opts.wait {
        return Ok("started (not waited for: --no-wait)".into());
    }
    ctx.check_stop()?;
    say(name, "waiting until ready");
    wait_ready(ctx, d).await?;
    if d.spec.kind == GuestKind::Vm {
        remove_media(ctx, d).await?;
    }
    Ok("ready".into())
}

/// Polls the guest's declared endpoints from this host (the shared readiness rule).
async fn wait_ready(ctx: &Ctx<'_>, d: &Desired) -> Result<()> {
    let lab = ctx.lab.clone();
    let name = d.spec.name.clone();
    let timeout = ctx.opts.ready_timeout;
    let stop = ctx.stop.clone();
    tokio::task::spawn_blocking(move || crate::target::ready_blocking(&lab, &name, timeout, &stop))
        .await
        .map_err(|e| anyhow!("readiness check crashed: {e}"))?
}

/// The guest with `vmid` as the cluster reports it now.
pub(super) async fn current(ctx: &Ctx<'_>, vmid: u32) -> Result<Option<Resource>> {
    let all: Vec<Resource> = ctx
        .api
        .get("/cluster/resources", &Params::new().set("type", "vm"))
        .await?;
    Ok(all.into_iter().find(|r| r.vmid == vmid))
}

async fn create(ctx: &Ctx<'_>, d: &Desired) -> Result<()> {
    let s = &d.spec;
    ctx.check_stop()?;
    // Uploads first: the image (VMs), the seed media (both).
    // (the image to import: VMs only; the seed media: both)
    let import = match s.kind {
        GuestKind::Vm => Some(ensure_image(ctx, d).await?),
        GuestKind::Lxc => None,
    };
    let media = ensure_seed_media(ctx, d).await?;
    ctx.check_stop()?;
    // A parked data volume comes back instead of a new one.
    let with_data = s.data.is_some() && !super::volumes::parked(ctx, s).await?;
    // Never create over someone: the vmid must still be free right now.
    if let Some(r) = current(ctx, s.vmid).await? {
        if r.is_ours(&ctx.topo.name)
            && r.tag_value("seed").as_deref() == Some(state::short(&d.seed_hash))
        {
            // A previous run created it (its answer was lost): continue from there.
            say(&s.name, "already created by an earlier run; continuing");
        } else {
            bail!(
                "vmid {} was taken meanwhile by {} on {}; not creating a duplicate",
                s.vmid,
                r.name.as_deref().unwrap_or("a guest"),
                r.node
            );
        }
    } else {
        say(
            &s.name,
            format!("creating {} {} on {}", s.kind.as_str(), s.vmid, s.node),
        );
        let (path, params) = match s.kind {
            GuestKind::Vm => (
                format!("/nodes/{}/qemu", s.node),
                vm_params(
                    ctx,
                    d,
                    import.as_deref().unwrap_or_default(),
                    &media,
                    with_data,
                ),
            ),
            GuestKind::Lxc => (
                format!("/nodes/{}/lxc", s.node),
                lxc_params(ctx, d, &media, with_data),
            ),
        };
        let data = ctx.api.post(&path, &params).await?;
        task::run(&ctx.api, data, CREATE_TIMEOUT).await?;
    }
    ctx.check_stop()?;
    grow_disk(ctx, d).await?;
    ctx.check_stop()?;
    if s.data.is_some() {
        super::volumes::unpark(ctx, s).await?;
    }
    start(ctx, d).await?;
    Ok(())
}

fn vm_params(
    ctx: &Ctx<'_>,
    d: &Desired,
    import_vol: &str,
    iso_vol: &str,
    with_data: bool,
) -> Params {
    let s = &d.spec;
    let mut p = Params::new()
        .set("vmid", s.vmid)
        .set("name", &s.name)
        .set("ostype", "l26")
        .set("cores", s.cores)
        .set("sockets", 1)
        .set("memory", s.memory_mib)
        .set("cpu", "x86-64-v2-AES")
        .set("scsihw", "virtio-scsi-single")
        .set(
            "scsi0",
            PropString::with_default(format!("{}:0", s.storage.images))
                .kv("import-from", import_vol)
                .kv("discard", "on"),
        )
        .set(
            "ide2",
            PropString::with_default(iso_vol).kv("media", "cdrom"),
        )
        .set("boot", "order=scsi0")
        .set("serial0", "socket")
        .set("vga", "serial0")
        .set(
            "net0",
            PropString::new()
                .kv("virtio", &s.mac)
                .kv("bridge", &ctx.topo.bridge)
                .flag("firewall", false),
        )
        .flag("onboot", true)
        .set("tags", d.tags.join(";"))
        .set(
            "description",
            state::description(&ctx.topo.name, &s.name, &d.seed_hash, &d.image_sha),
        );
    if let (true, Some(data)) = (with_data, &s.data) {
        p.push("scsi1", super::volumes::create_value(s.kind, data));
    }
    p
}

fn lxc_params(ctx: &Ctx<'_>, d: &Desired, template_vol: &str, with_data: bool) -> Params {
    let s = &d.spec;
    let keys = ctx.lab.ssh.public_keys().join("\n");
    let mut p = Params::new()
        .set("vmid", s.vmid)
        .set("hostname", &s.name)
        .set("ostemplate", template_vol)
        .set("ostype", "ubuntu")
        .set("cores", s.cores)
        .set("memory", s.memory_mib)
        .set("swap", 512)
        .set("rootfs", format!("{}:{}", s.storage.images, s.disk_gib))
        .set(
            "net0",
            PropString::new()
                .kv("name", "eth0")
                .kv("bridge", &ctx.topo.bridge)
                .kv("hwaddr", s.mac.to_uppercase())
                .kv("ip", format!("{}/{}", s.address, ctx.topo.prefix))
                .kv("gw", ctx.topo.gateway)
                .flag("firewall", false),
        )
        .flag("unprivileged", true)
        .set("features", PropString::new().flag("nesting", true))
        .flag("onboot", true)
        .set("tags", d.tags.join(";"))
        .set(
            "description",
            state::description(&ctx.topo.name, &s.name, &d.seed_hash, &d.image_sha),
        );
    if !ctx.topo.dns.is_empty() {
        p.push(
            "nameserver",
            ctx.topo
                .dns
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(" "),
        );
    }
    if !keys.is_empty() {
        p.push("ssh-public-keys", keys);
    }
    if let (true, Some(data)) = (with_data, &s.data) {
        p.push("mp0", super::volumes::create_value(s.kind, data));
    }
    p
}

/// Grows the root disk to the lab's size when it is smaller.
async fn grow_disk(ctx: &Ctx<'_>, d: &Desired) -> Result<()> {
    let s = &d.spec;
    let r = current(ctx, s.vmid)
        .await?
        .context("the guest vanished after its creation")?;
    let have = r.maxdisk.unwrap_or(0);
    let want = s.disk_gib * 1024 * 1024 * 1024;
    if have >= want {
        return Ok(());
    }
    let disk = match s.kind {
        GuestKind::Vm => "scsi0",
        GuestKind::Lxc => "rootfs",
    };
    say(&s.name, format!("growing {disk} to {} GiB", s.disk_gib));
    let path = format!("{}/resize", state::guest_path(&s.node, s.kind, s.vmid));
    // An absolute size: repeating it is harmless.
    let data = ctx
        .api
        .put(
            &path,
            &Params::new()
                .set("disk", disk)
                .set("size", format!("{}G", s.disk_gib)),
            Idempotence::Safe,
        )
        .await?;
    task::run(&ctx.api, data, TASK_TIMEOUT).await?;
    Ok(())
}

async fn start(ctx: &Ctx<'_>, d: &Desired) -> Result<()> {
    let s = &d.spec;
    let r = current(ctx, s.vmid)
        .await?
        .context("the guest vanished after its creation")?;
    if r.running() {
        return Ok(());
    }
    say(&s.name, "starting");
    let path = format!(
        "{}/status/start",
        state::guest_path(&s.node, s.kind, s.vmid)
    );
    let data = ctx.api.post(&path, &Params::new()).await?;
    task::run(&ctx.api, data, TASK_TIMEOUT).await?;
    Ok(())
}

async fn update(ctx: &Ctx<'_>, d: &Desired, changes: &[Change]) -> Result<()> {
    let s = &d.spec;
    let base = state::guest_path(&s.node, s.kind, s.vmid);
    let mut cfg = Params::new();
    for c in changes {
        match c {
            Change::Cores { to, .. } => cfg.push("cores", to),
            Change::Memory { to_mib, .. } => cfg.push("memory", to_mib),
            _ => {}
        }
    }
    if !cfg.is_empty() {
        say(&s.name, format!("updating {}", Change::list(changes)));
        ctx.api
            .put(&format!("{base}/config"), &cfg, Idempotence::Safe)
            .await?;
    }
    if changes.iter().any(|c| matches!(c, Change::DiskGrow { .. })) {
        grow_disk(ctx, d).await?;
    }
    if changes
        .iter()
        .any(|c| matches!(c, Change::AttachData { .. } | Change::RemoveHolder { .. }))
    {
        super::volumes::unpark(ctx, s).await?;
    }
    let r = current(ctx, s.vmid).await?.context("the guest vanished")?;
    if r.running() && s.kind == GuestKind::Vm && !cfg.is_empty() {
        // QEMU takes new cores/memory at its next start: a clean shutdown
        // (forced after 3 minutes), then the start below.
        say(
            &s.name,
            "shutting down to apply cores/memory (it starts again next)",
        );
        let data = ctx
            .api
            .post(
                &format!("{base}/status/shutdown"),
                &Params::new().set("timeout", 180).flag("forceStop", true),
            )
            .await?;
        task::run(&ctx.api, data, TASK_TIMEOUT).await?;
    }
    start(ctx, d).await
}

/// Stops (hard: the guest is going away) and destroys a guest with its
/// disks, purging it from backup jobs, HA and replication.
pub async fn delete_guest(
    ctx: &Ctx<'_>,
    node: &str,
    kind: GuestKind,
    vmid: u32,
    name: &str,
) -> Result<()> {
    destroy(ctx, node, kind, vmid, name, true).await
}

/// Stops and destroys a guest; `purge` also drops its vmid from backup
/// jobs, HA and replication (a replace keeps it there).
async fn destroy(
    ctx: &Ctx<'_>,
    node: &str,
    kind: GuestKind,
    vmid: u32,
    name: &str,
    purge: bool,
) -> Result<()> {
    let base = state::guest_path(node, kind, vmid);
    let Some(r) = current(ctx, vmid).await? else {
        return Ok(());
    };
    if !r.is_ours(&ctx.topo.name) {
        bail!("vmid {vmid} is not this lab's guest; not deleting it");
    }
    if r.running() {
        say(name, "stopping");
        let data = ctx
            .api
            .post(&format!("{base}/status/stop"), &Params::new())
            .await?;
        task::run(&ctx.api, data, TASK_TIMEOUT).await?;
    }
    say(name, format!("destroying {} {vmid}", kind.as_str()));
    let data = ctx
        .api
        .delete(
            &base,
            &Params::new()
                .flag("purge", purge)
                .flag("destroy-unreferenced-disks", true),
        )
        .await?;
    task::run(&ctx.api, data, TASK_TIMEOUT).await?;
    Ok(())
}

/// Uploads the VM image to the node's import storage unless it is there;
/// returns its volid. Guests sharing an image wait for one upload.
async fn ensure_image(ctx: &Ctx<'_>, d: &Desired) -> Result<String> {
    let s = &d.spec;
    let name = state::import_name(&ctx.topo.name, &s.image, &d.image_sha);
    upload_once(
        ctx,
        &s.node,
        &s.storage.import,
        "import",
        &name,
        &d.image_file,
        &s.name,
    )
    .await
}

/// Builds the guest's seed media (cidata ISO or personalized template) and
/// uploads it unless it is there; returns its volid.
async fn ensure_seed_media(ctx: &Ctx<'_>, d: &Desired) -> Result<String> {
    let s = &d.spec;
    let (storage, content, name) = d.seed_media(&ctx.topo.name);
    let volid = volid(storage, content, &name);
    if ctx
        .volumes
        .iter()
        .any(|v| v.volid == volid && v.node == s.node)
    {
        return Ok(volid);
    }
    let file = ctx.opts.work.join(&name);
    let lab = ctx.lab.clone();
    let guest = s.name.clone();
    let mac = s.mac.clone();
    let kind = s.kind;
    let image = d.image_file.clone();
    let out = file.clone();
    let want_hash = d.seed_hash.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        let g = lab.guest(&guest).context("guest left the lab")?;
        let seed = crate::seed::for_guest(&lab, &guest)?;
        if seed.instance_id() != want_hash {
            bail!(
                "the seed of {guest} changed while deploying (a secret changed?); run deploy again"
            );
        }
        match kind {
            GuestKind::Vm => crate::cidata::write_iso(
                &crate::cidata::for_guest(&lab, g, &seed, Some(&mac)),
                &out,
            ),
            GuestKind::Lxc => {
                crate::bake::personalize::personalize(&image, seed.to_yaml().as_bytes(), &out)
            }
        }
    })
    .await
    .map_err(|e| anyhow!("building seed media crashed: {e}"))??;
    let r = upload_once(ctx, &s.node, storage, content, &name, &file, &s.name).await;
    let _ = std::fs::remove_file(&file); // it holds secrets
    r
}

fn volid(storage: &str, content: &str, name: &str) -> String {
    format!("{storage}:{content}/{name}")
}

pub(super) async fn upload_once(
    ctx: &Ctx<'_>,
    node: &str,
    storage: &str,
    content: &str,
    name: &str,
    file: &Path,
    who: &str,
) -> Result<String> {
    let vid = volid(storage, content, name);
    let size = std::fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    let key = format!("{node}/{vid}");
    let slot = {
        let mut m = ctx.uploads.lock().await;
        m.entry(key)
            .or_insert_with(|| Arc::new(Mutex::new(false)))
            .clone()
    };
    let mut done = slot.lock().await;
    if *done
        || ctx
            .volumes
            .iter()
            .any(|v| v.volid == vid && v.node == node && v.size == size)
    {
        *done = true;
        return Ok(vid);
    }
    ctx.check_stop()?;
    let sha = sha256_file(file).await?;
    say(
        who,
        format!("uploading {name} ({}) to {storage} on {node}", human(size)),
    );
    let started = Instant::now();
    let who_s = who.to_string();
    let last = std::sync::Mutex::new(Instant::now());
    let data = ctx
        .api
        .upload(
            &super::api::Upload {
                node,
                storage,
                content,
                name,
                file,
                sha256: &sha,
            },
            move |n| {
                let mut l = last.lock().unwrap_or_else(|e| e.into_inner());
                if l.elapsed() >= Duration::from_secs(2) || n == size {
                    *l = Instant::now();
                    let pct = (n * 100).checked_div(size).unwrap_or(100);
                    eprintln!(
                        "{who_s}: upload {pct:>3}% ({} of {})",
                        human(n),
                        human(size)
                    );
                }
            },
        )
        .await
        .with_context(|| format!("uploading {name} to {storage} on {node}"))?;
    task::run(&ctx.api, data, CREATE_TIMEOUT)
        .await
        .with_context(|| format!("uploading {name} to {storage} on {node}"))?;
    let secs = started.elapsed().as_secs_f64().max(0.001);
    say(
        who,
        format!(
            "uploaded {name} in {secs:.1} s ({}/s)",
            human((size as f64 / secs) as u64)
        ),
    );
    *done = true;
    Ok(vid)
}

async fn sha256_file(file: &Path) -> Result<String> {
    let file = file.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<String> {
        use sha2::{Digest, Sha256};
        let mut f =
            std::fs::File::open(&file).with_context(|| format!("opening {}", file.display()))?;
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", file.display()))?;
        Ok(hex::encode(h.finalize()))
    })
    .await
    .map_err(|e| anyhow!("hashing crashed: {e}"))?
}

/// Removes the guest's seed media: detaches the ISO from a VM, then deletes
/// the volume (ISO or template). Both steps are skipped when already done.
async fn remove_media(ctx: &Ctx<'_>, d: &Desired) -> Result<()> {
    let s = &d.spec;
    let (storage, content, name) = d.seed_media(&ctx.topo.name);
    let vid = volid(storage, content, &name);
    if s.kind == GuestKind::Vm {
        let base = state::guest_path(&s.node, s.kind, s.vmid);
        let cfg: serde_json::Value = ctx
            .api
            .get(&format!("{base}/config"), &Params::new())
            .await?;
        if cfg
            .get("ide2")
            .and_then(|v| v.as_str())
            .is_some_and(|v| v.starts_with(&vid))
        {
            say(&s.name, "detaching its seed ISO (it holds secrets)");
            ctx.api
                .put(
                    &format!("{base}/config"),
                    &Params::new().set("delete", "ide2"),
                    Idempotence::Safe,
                )
                .await?;
        }
    }
    delete_volume(ctx, &s.node, storage, &vid).await
}

/// Deletes a volume if it exists (a 404-like answer counts as done).
pub async fn delete_volume(ctx: &Ctx<'_>, node: &str, storage: &str, vid: &str) -> Result<()> {
    let items: Vec<serde_json::Value> = ctx
        .api
        .get(
            &format!("/nodes/{node}/storage/{storage}/content"),
            &Params::new(),
        )
        .await?;
    if !items.iter().any(|i| i["volid"].as_str() == Some(vid)) {
        return Ok(());
    }
    let path = format!("/nodes/{node}/storage/{storage}/content/{vid}");
    let data = ctx.api.delete(&path, &Params::new()).await?;
    task::run(&ctx.api, data, TASK_TIMEOUT).await?;
    Ok(())
}

/// Deletes this lab's volumes that no wanted guest uses any more (old
/// images, seed media of replaced guests). Failures are reported, not fatal.
pub async fn cleanup(ctx: &Ctx<'_>, stale: &[Volume]) -> Vec<String> {
    let mut errors = Vec::new();
    for v in stale {
        if ctx.check_stop().is_err() {
            errors.push("interrupted before removing every stale volume".into());
            break;
        }
        eprintln!(
            "cleanup: removing {} on {} (no longer used)",
            v.volid, v.node
        );
        if let Err(e) = delete_volume(ctx, &v.node, &v.storage, &v.volid).await {
            errors.push(format!("removing {} on {}: {e:#}", v.volid, v.node));
        }
    }
    errors
}

pub fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}
