"""Hand-off: with `"handoff": {"imgbuild": PATH, "netns": NAME}` in the
config (or PUT /__standin/config), the containers the stand-in creates and
starts really run on this machine, through the product's own runner
`imgbuild pve-guest` (builder/src/target/local/pve.rs):

- create (`vzcreate`): the uploaded template, as stored, is extracted into
  the root volume (a directory under the state dir), mount points get their
  directories, the SSH keys go to root's authorized_keys (pct create);
- start (`vzstart`): the guest's config, written as Proxmox stores it
  (`/etc/pve/lxc/<vmid>.conf`), is booted in systemd-nspawn on the net0
  bridge inside network namespace NAME (which the test creates);
- stop/shutdown stop it; destroy stops it and removes its volumes.

VMs too (`"accel": "tcg"|"kvm"` in the hand-off config, default tcg), but
no test boots one (5-9 min under TCG): a `qmcreate` converts each
`import-from` source into a qcow2 volume file with qemu-img (as PVE's
storage import does; new empty disks are created), a resize resizes it, and
`qmstart` boots the stored config with its disks and ISO in QEMU.

The slow part runs outside the cluster lock while the task stays
`running` (cluster.Deferred), as a real task does.
"""
import os
import re
import shutil
import subprocess
import time

from .cluster import Deferred, TaskError

RUNNER_TIMEOUT = 900


def enabled(c):
    return bool(c.config.get("handoff"))


def _cfg(c):
    return c.config["handoff"]


def run_dir(c, g):
    return os.path.join(c.state_dir, "handoff", "run", str(g.vmid))


def conf_text(g):
    """The config as /etc/pve/lxc/<vmid>.conf holds it: the description as
    leading comment lines, then `key: value` sorted."""
    out = []
    for line in (g.config.get("description") or "").splitlines():
        out.append("#" + line)
    for k in sorted(g.config):
        if k != "description":
            out.append("%s: %s" % (k, g.config[k]))
    return "\n".join(out) + "\n"


def _volume_path(c, g, volid):
    """The directory (container) or qcow2 file (VM) that stands for a guest
    volume, kept in the volume's `path` so freeing the volume removes it;
    uploaded volumes (ISO, template) have theirs already."""
    vol = c.volume(volid, g.node)
    if vol is None:
        raise TaskError("volume '%s' does not exist\n" % volid)
    if not vol.get("path"):
        storeid, volname, _ = c.parse_volname(volid)
        vol["path"] = os.path.join(c.state_dir, "handoff", "volumes", storeid, volname)
        vol["is_dir"] = g.kind == "lxc"
        os.makedirs(os.path.dirname(vol["path"]), exist_ok=True)
    return vol["path"]


def _volume_args(c, g):
    args = []
    for k, v in sorted(g.config.items()):
        disk = g.kind == "lxc" and (k == "rootfs" or re.fullmatch(r"mp\d+", k)) or \
            g.kind == "qemu" and re.fullmatch(r"(scsi|virtio|sata|ide)\d+", k)
        if not disk:
            continue
        volid = v.split(",")[0]
        if "=" in volid:  # volume=... / file=...
            volid = volid.split("=", 1)[1]
        if volid in ("none", "cdrom") or volid.startswith("/"):
            continue
        args += ["--volume", "%s=%s" % (volid, _volume_path(c, g, volid))]
    return args


def _qemu_img(*args):
    p = subprocess.run(["qemu-img"] + list(args), stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=RUNNER_TIMEOUT)
    if p.returncode != 0:
        return "qemu-img %s failed: %s" % (args[0], p.stderr.strip())
    return None


def on_qemu_create(c, g, imports):
    """After the config exists: each new disk becomes a qcow2 file, an
    `import-from` source converted into it (outside the lock)."""
    if not enabled(c):
        return None
    steps = []
    for ds, src in sorted(imports.items()):
        volid = g.config[ds].split(",")[0]
        vol = c.volume(volid, g.node)
        if vol is None or vol.get("path"):
            continue  # an existing volume attached as is
        path = _volume_path(c, g, volid)
        src_path = c.volume(src, g.node)["path"] if src and not src.startswith("/") else src
        steps.append((path, src_path, vol["size"]))
    if not steps:
        return None
    g.config["lock"] = "create"

    def slow():
        for path, src, size in steps:
            err = _qemu_img("convert", "-O", "qcow2", src, path) if src else \
                _qemu_img("create", "-q", "-f", "qcow2", path, str(size))
            if err:
                return err
        return None

    def post(task, err, exc):
        g.config.pop("lock", None)
        if exc or err:
            for _, volid, _ in g.disks():
                c.free_volume(volid, g.node)
            c.guests.pop(g.vmid, None)
            raise TaskError("unable to create VM %d - %s\n" % (g.vmid, err or exc))
        task.log.append("hand-off: %d disk(s) written as qcow2" % len(steps))
    return Deferred(slow, post)


def on_resize(c, g, vol, newsize):
    """A VM disk file follows its volume's size (quick: no data moves)."""
    if enabled(c) and g.kind == "qemu" and vol and vol.get("path") and not vol.get("is_dir"):
        err = _qemu_img("resize", "-q", vol["path"], str(newsize))
        if err:
            raise TaskError(err + "\n")


def _write(path, text, mode=0o600):
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _runner(c, args):
    cmd = [_cfg(c)["imgbuild"], "pve-guest"] + args
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=RUNNER_TIMEOUT)
    except subprocess.TimeoutExpired:
        return "imgbuild pve-guest %s: still running after %d s" % (args[0], RUNNER_TIMEOUT)
    except OSError as e:
        return "imgbuild pve-guest %s: %s" % (args[0], e)
    c.handoff_log.append({"args": args, "rc": p.returncode, "stderr": p.stderr,
                          "secs": round(time.monotonic() - t0, 2)})
    if p.returncode != 0:
        tail = "\n".join(p.stderr.strip().splitlines()[-15:])
        return "imgbuild pve-guest %s failed (exit %d): %s" % (args[0], p.returncode, tail)
    return None


def on_lxc_create(c, g, ostemplate_path, ssh_keys):
    """After the config exists: extract the template (outside the lock)."""
    if not enabled(c):
        return None
    d = run_dir(c, g)
    shutil.rmtree(d, ignore_errors=True)
    conf = os.path.join(d, "%d.conf" % g.vmid)
    _write(conf, conf_text(g))
    args = ["create", "--config", conf, "--vmid", str(g.vmid)] + _volume_args(c, g) + \
        ["--ostemplate", ostemplate_path]
    if ssh_keys:
        keys = os.path.join(d, "ssh-public-keys")
        _write(keys, ssh_keys)
        args += ["--ssh-public-keys", keys]
    lock_before = g.config.get("lock")
    g.config["lock"] = "create"

    def post(task, err, exc):
        if lock_before is None:
            g.config.pop("lock", None)
        else:
            g.config["lock"] = lock_before
        if exc or err:
            for _, volid, _ in g.disks():
                c.free_volume(volid, g.node)
            c.guests.pop(g.vmid, None)
            raise TaskError("unable to create CT %d - %s\n" % (g.vmid, err or exc))
        task.log.append("handed to the local runner: template extracted")
    return Deferred(lambda: _runner(c, args), post)


def on_start(c, g):
    if not enabled(c):
        return None
    d = run_dir(c, g)
    conf = os.path.join(d, "%d.conf" % g.vmid)
    _write(conf, conf_text(g))
    args = ["start", "--config", conf, "--vmid", str(g.vmid)] + _volume_args(c, g) + \
        ["--netns", _cfg(c)["netns"], "--run-dir", d,
         "--kind", g.kind, "--accel", _cfg(c).get("accel", "tcg")]

    def post(task, err, exc):
        if exc or err:
            g.status = "stopped"
            g.started = None
            what = "container" if g.kind == "lxc" else "VM"
            raise TaskError("start of %s %d failed: %s\n" % (what, g.vmid, err or exc))
        task.log.append("handed to the local runner: running in network namespace %s" % _cfg(c)["netns"])
    return Deferred(lambda: _runner(c, args), post)


def on_stop(c, g):
    if not enabled(c):
        return None
    args = ["stop", "--run-dir", run_dir(c, g)]

    def post(task, err, exc):
        if exc or err:
            raise TaskError("%s\n" % (err or exc))
    return Deferred(lambda: _runner(c, args), post)


def on_destroy(c, g):
    """Called with the volumes freed: the run directory goes too."""
    if enabled(c):
        _runner(c, ["stop", "--run-dir", run_dir(c, g)])
        shutil.rmtree(run_dir(c, g), ignore_errors=True)


def stop_all(c):
    """On the stand-in's exit: nothing it started keeps running."""
    if not enabled(c):
        return
    base = os.path.join(c.state_dir, "handoff", "run")
    for vmid in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        _runner(c, ["stop", "--run-dir", os.path.join(base, vmid)])
