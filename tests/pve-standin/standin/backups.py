"""vzdump backups and restores, as PVE models them (issue 10).

- `POST /nodes/{node}/vzdump` (task `vzdump`): one backup volume per guest,
  `backup/vzdump-{qemu|lxc}-VMID-YYYY_MM_DD-HH_MM_SS.{vma|tar}[.zst|.gz|.lzo]`
  on a storage with `backup` content, listed by
  `GET .../storage/{storage}/content?content=backup&vmid=N` with `vmid`,
  `subtype`, `notes`, `format` (`vma.zst`, `tar.zst`). It records the guest's
  configuration and, per backed-up volume, its key, storage and size:
  a VM's disks except `backup=0` and CD-ROMs; a container's rootfs and the
  mount points with `backup=1` (pve-container's default for `mpN` is 0).
- Restore is a create: `POST /nodes/{node}/qemu` with `archive=<volid>`
  (qmrestore) or `POST /nodes/{node}/lxc` with `ostemplate=<volid>` and
  `restore=1` (pct restore). Over an existing guest only with `force=1`, and
  never over a running one; the old guest's volumes (unused ones too) are
  freed first. A VM's disks in the archive go back to their storage (or
  `storage`), those with `backup=0` are left out of the restored VM; a
  container's storage-backed mount points are all recreated on `storage`
  (default `local`: pct's "simple restore mode"), those not in the archive
  empty. The restored volumes carry `restored_from` in the
  state dump (there is no data to restore; that marks whose data it is).

Permissions as PVE checks them: vzdump needs `VM.Backup` on each guest and
`Datastore.AllocateSpace` on the storage; a restore over an existing guest
needs `VM.Backup` on it (else `VM.Allocate`), and reading the archive needs
`Datastore.Allocate` on its storage, or `Datastore.AllocateSpace` there and
`VM.Backup` on the guest it belongs to (PVE::Storage::check_volume_access).
"""
import re
import time

from . import schema
from .cluster import TaskError, die, param_exc, perm_exc, _node_online

BACKUP_RE = re.compile(r"backup/(vzdump-(qemu|lxc|openvz)-(\d+)-(\d{4}_\d\d_\d\d-\d\d_\d\d_\d\d)"
                       r"\.(tgz|tar|vma)(\.(?:gz|lzo|zst|bz2))?)")
COMPRESS_EXT = {"0": "", "1": ".lzo", "lzo": ".lzo", "gzip": ".gz", "zstd": ".zst"}


def parse_backup_volname(volname):
    """(kind, vmid, format) of a vzdump volume name, or None."""
    m = BACKUP_RE.fullmatch(volname)
    if not m:
        return None
    return m.group(2), int(m.group(3)), m.group(5) + (m.group(6) or "")


def _included(g):
    """(key, volid, size, storage) of what vzdump puts into the archive."""
    from .guests import parse_simple, CT_MP_RE, DRIVE_RE
    out = []
    for k, v in sorted(g.config.items()):
        if g.kind == "qemu" and DRIVE_RE.fullmatch(k):
            d = parse_simple(v, "file")
            if d.get("media") == "cdrom" or d["file"] in ("none", "cdrom") or d.get("backup") in ("0", "no", "off", "false"):
                continue
        elif g.kind == "lxc" and CT_MP_RE.fullmatch(k):
            d = parse_simple(v, "volume")
            if k != "rootfs" and d.get("backup") not in ("1", "yes", "on", "true"):
                continue
        else:
            continue
        volid = d.get("file") or d.get("volume")
        if ":" not in volid:
            continue
        out.append((k, volid, schema.parse_size(d.get("size", "0")) or 0, volid.split(":", 1)[0]))
    return out


def h_vzdump(c, p, user, fault):
    node = p["node"]
    _node_online(c, node)
    if p.get("all") == "1" or p.get("pool") or p.get("stdout") == "1" or p.get("dumpdir"):
        raise die("the stand-in implements vzdump of listed guests to a storage only\n")
    ids = [int(x) for x in schema.split_list(p.get("vmid", ""))]
    if not ids:
        raise param_exc({"vmid": "property is missing and it is not optional"})
    sid = p.get("storage") or "local"
    scfg = c.storage_check_enabled(sid, node)
    if "backup" not in c.content_of(scfg):
        raise die("can't use storage '%s' for backups - wrong content type\n" % sid)
    c.check(user, "/storage/" + sid, ["Datastore.AllocateSpace"])
    for vmid in ids:
        c.check(user, "/vms/%d" % vmid, ["VM.Backup"])
    if p.get("prune-backups") or p.get("remove") == "1" and p.get("prune-backups"):
        c.check(user, "/storage/" + sid, ["Datastore.Allocate"])
    for vmid in ids:
        g = c.guests.get(vmid)
        if not g or g.node != node:
            raise die("guest %d is not on node '%s'\n" % (vmid, node) if g else
                      "unable to find VM %d\n" % vmid)
    ext = COMPRESS_EXT.get(p.get("compress", "0"), "")
    template = p.get("notes-template")

    def work(task):
        for vmid in ids:
            g = c.guests.get(vmid)
            if not g:
                raise TaskError("unable to find VM %d\n" % vmid)
            if g.config.get("lock"):
                raise TaskError("VM is locked (%s)\n" % g.config["lock"])
            stamp = time.strftime("%Y_%m_%d-%H_%M_%S", time.gmtime())
            base = "vma" if g.kind == "qemu" else "tar"
            volname = "backup/vzdump-%s-%d-%s.%s%s" % (g.kind, vmid, stamp, base, ext)
            vols = c.vols(sid, node)
            while volname in vols:
                # Two backups in one second: PVE would overwrite; keep both apart.
                time.sleep(1)
                stamp = time.strftime("%Y_%m_%d-%H_%M_%S", time.gmtime())
                volname = "backup/vzdump-%s-%d-%s.%s%s" % (g.kind, vmid, stamp, base, ext)
            disks = _included(g)
            notes = None
            if template:
                notes = template.replace("{{guestname}}", g.name()).replace("{{vmid}}", str(vmid)) \
                    .replace("{{node}}", node).replace("{{cluster}}", "standin")
            vols[volname] = {"content": "backup", "format": base + ext,
                             "size": 4096 + sum(d[2] // 1024 for d in disks), "ctime": int(time.time()),
                             "vmid": vmid, "subtype": g.kind, "notes": notes,
                             "backup": {"kind": g.kind, "config": dict(g.config),
                                        "disks": [{"key": k, "volid": v, "size": s, "storage": st}
                                                  for k, v, s, st in disks]}}
            task.log.append("INFO: Starting Backup of VM %d (%s)" % (vmid, g.kind))
            for k, v, s, _ in disks:
                task.log.append("INFO: including %s '%s' %s" % (k, v, s))
            task.log.append("INFO: creating vzdump archive '%s'" % volname)
            task.log.append("INFO: Finished Backup of VM %d" % vmid)
    tid = str(ids[0]) if len(ids) == 1 else ""
    return c.start_task(node, "vzdump", tid, user, work, fail=fault)


def check_archive_access(c, user, volid):
    """PVE::Storage::check_volume_access for a backup volume."""
    storeid, volname, vtype = c.parse_volname(volid)
    if vtype != "backup":
        return None
    if c.check(user, "/storage/" + storeid, ["Datastore.Allocate"], noerr=True):
        return parse_backup_volname(volname)
    parsed = parse_backup_volname(volname)
    c.check(user, "/storage/" + storeid, ["Datastore.AllocateSpace"])
    if parsed:
        c.check(user, "/vms/%d" % parsed[1], ["VM.Backup"])
    return parsed


def prepare_restore(c, user, kind, vmid, node, volid, force):
    """The synchronous part of a restore: access, the archive's kind, and what
    may be overwritten. Returns the existing guest (or None)."""
    parsed = check_archive_access(c, user, volid)
    if parsed is None:
        raise die("unable to restore %s %d - %s is not a backup archive\n"
                  % ("VM" if kind == "qemu" else "CT", vmid, volid))
    if (parsed[0] == "qemu") != (kind == "qemu"):
        # qmrestore: "can't restore a container backup"; pct: unsupported archive
        raise die("unable to restore %s %d - archive '%s' is a %s backup\n"
                  % ("VM" if kind == "qemu" else "CT", vmid, volid,
                     "VM" if parsed[0] == "qemu" else "container"))
    g = c.guests.get(vmid)
    if g is not None:
        emsg = "unable to restore %s %d -" % ("VM" if kind == "qemu" else "CT", vmid)
        if not force:
            raise die("%s %s %d already exists on node '%s'\n" % (emsg, g.gtype, vmid, g.node))
        if g.kind != kind:
            raise die("%s %s %d already exists on node '%s'\n" % (emsg, g.gtype, vmid, g.node))
        if g.node != node:
            raise die("%s %s %d already exists on node '%s'\n" % (emsg, g.gtype, vmid, g.node))
        if g.status == "running":
            raise die("%s vm is running\n" % emsg if kind == "qemu" else "can't overwrite running container\n")
        if g.config.get("lock"):
            raise die("%s %s is locked (%s)\n" % (emsg, g.gtype, g.config["lock"]))
        if not c.check(user, "/vms/%d" % vmid, ["VM.Backup"], noerr=True):
            raise perm_exc("/vms/%d, VM.Backup" % vmid)
    elif not c.check(user, "/vms/%d" % vmid, ["VM.Allocate"], noerr=True):
        raise perm_exc("/vms/%d, VM.Allocate" % vmid)
    return g


def h_restore(c, p, user, info, fault, kind):
    """`POST /nodes/{node}/qemu` with `archive`, `POST /nodes/{node}/lxc` with
    `restore=1`: tasks `qmrestore` / `vzrestore`. Other configuration
    parameters override the archive's (drives conflict with the archive)."""
    from .guests import Guest, DRIVE_RE, CT_MP_RE, _fmt
    node = p.pop("node")
    vmid = int(p.pop("vmid"))
    _node_online(c, node)
    start = p.pop("start", None) == "1"
    force = p.pop("force", None) == "1"
    volid = p.pop("archive", None) if kind == "qemu" else p.pop("ostemplate", None)
    p.pop("restore", None)
    storage = p.pop("storage", None)
    for k in ("unique", "bwlimit", "live-restore", "ignore-unpack-errors", "pool", "ha-managed"):
        p.pop(k, None)
    for k in p:
        if (DRIVE_RE if kind == "qemu" else CT_MP_RE).fullmatch(k):
            raise param_exc({k: "option conflicts with option 'archive'"})
    if storage:
        c.storage_check_enabled(storage, node)
        c.check(user, "/storage/" + storage, ["Datastore.AllocateSpace"])
    if start:
        c.check(user, "/vms/%d" % vmid, ["VM.PowerMgmt"])
    existing = prepare_restore(c, user, kind, vmid, node, volid, force)
    emsg = "unable to restore %s %d -" % ("VM" if kind == "qemu" else "CT", vmid)
    g = existing or Guest(vmid, kind, node)
    g.config["lock"] = "create"
    c.guests[vmid] = g
    overrides = dict(p)

    def undo():
        if existing is None:
            c.guests.pop(vmid, None)
        else:
            g.config.pop("lock", None)

    def work(task):
        try:
            restore_work(c, task, g, kind, vmid, node, volid, storage, lambda k: _fmt(info, k))
        except TaskError as e:
            undo()
            raise TaskError("%s %s" % (emsg, e))
        g.config.update(overrides)
        if start:
            g.status = "running"
            g.started = time.monotonic()

    def failed(task):
        undo()
        raise TaskError("%s %s" % (emsg, fault))

    return c.start_task(node, "qmrestore" if kind == "qemu" else "vzrestore", str(vmid), user,
                        failed if fault else work, busy_key=vmid)


def restore_work(c, task, g, kind, vmid, node, volid, storage, fmt_of):
    """The restore task: free the old guest's volumes, recreate the archive's
    volumes, and take its configuration."""
    from .guests import print_property_string, parse_simple, format_size, DRIVE_RE, CT_MP_RE
    vol = c.volume(volid, node)
    if vol is None:
        raise TaskError("volume '%s' does not exist\n" % volid)
    b = vol.get("backup") or {"config": {}, "disks": []}
    conf = dict(b["config"])
    conf.pop("lock", None)
    conf.pop("parent", None)
    for _, old, _ in g.disks():
        try:
            c.free_volume(old, node)
            task.log.append("Removed volume '%s'" % old)
        except Exception:
            pass
    g.snapshots = {}
    included = {d["key"]: d for d in b["disks"]}
    dk = "file" if kind == "qemu" else "volume"
    disk_key = DRIVE_RE if kind == "qemu" else CT_MP_RE
    for k in sorted(conf):
        if re.fullmatch(r"unused\d+", k):
            del conf[k]
            continue
        if not disk_key.fullmatch(k):
            continue
        d = parse_simple(conf[k], dk)
        if ":" not in d.get(dk, "") or d.get("media") == "cdrom":
            continue
        if k not in included and kind == "qemu":
            # Not in the archive (backup=0): not part of the restored VM.
            del conf[k]
            task.log.append("%s was not in the backup: left out" % k)
            continue
        src = included.get(k)
        if kind == "lxc":
            sid = storage or "local"
        else:
            sid = storage or (src["storage"] if src else d[dk].split(":", 1)[0])
        size = src["size"] if src else (schema.parse_size(d.get("size", "0")) or 0)
        c.storage_check_enabled(sid, node)
        new = c.alloc_disk(sid, node, vmid, size)
        rec = c.volume(new, node)
        if src:
            rec["restored_from"] = volid
            rec["data_of"] = src["volid"]
        d = dict(d)
        d[dk] = new
        d["size"] = format_size(size)
        conf[k] = print_property_string(d, fmt_of(k))
        task.log.append("restore %s '%s' to '%s'%s" % (k, src["volid"] if src else "-", new,
                                                        "" if src else " (not in the archive: empty)"))
    g.config = conf
    g.status = "stopped"
    task.log.append("restore %s archive '%s' done" % ("vma" if kind == "qemu" else "tar", volid))
