"""Guests (qemu VMs and lxc containers): create, config, resize, power,
destroy and snapshots, with the synchronous checks and error texts of
qemu-server and pve-container, and the effect applied when the task ends.
"""
import base64
import hashlib
import json
import random
import re
import time
import urllib.parse
import uuid

from . import backups, handoff, schema
from .cluster import ApiError, TaskError, die, param_exc, perm_exc, _node_online

DRIVE_RE = re.compile(r"(ide\d+|sata\d+|scsi\d+|virtio\d+|efidisk0|tpmstate0)")
NEW_DISK_RE = re.compile(r"(([^/:\s]+):)?(\d+(\.\d+)?)")
CT_MP_RE = re.compile(r"(rootfs|mp\d+)")

QEMU_CPU = {"cores", "cpu", "cpulimit", "cpuunits", "sockets", "vcpus", "affinity", "numa", "smp"}
QEMU_MEM = {"memory", "balloon", "shares"}
QEMU_HW = {"acpi", "hotplug", "kvm", "machine", "scsihw", "smbios1", "tablet", "vga", "watchdog",
           "audio0", "keyboard", "localtime", "tdf", "rng0", "spice_enhancements", "args"}
QEMU_CLOUDINIT = {"cicustom", "cipassword", "citype", "ciuser", "ciupgrade", "nameserver",
                  "searchdomain", "sshkeys"}
QEMU_DISKOPT = {"boot", "bootdisk", "vmstatestorage"}


def format_size(size):
    size = int(size)
    for unit in ("", "K", "M", "G"):
        if size % 1024 or size == 0:
            return "%d%s" % (size, unit)
        size //= 1024
    return "%dT" % size


def print_property_string(data, fmt):
    """PVE::JSONSchema::print_property_string: default key first (as the
    bare value, or `value=alias` for keyAlias), then required keys, then the
    rest sorted."""
    default_key = None
    key_alias = {}
    for k, s in fmt.items():
        if s.get("default_key"):
            default_key = k
        if s.get("keyAlias"):
            key_alias[s["keyAlias"]] = s["alias"]
    out, done = [], set()

    def add(k, isdefault=False):
        if k in done or data.get(k) is None:
            return
        done.add(k)
        if k in key_alias and data.get(key_alias[k]) is not None:
            out.append("%s=%s" % (data[k], data[key_alias[k]]))
            done.add(key_alias[k])
        elif isdefault:
            out.append(str(data[k]))
        else:
            out.append("%s=%s" % (k, data[k]))
    if default_key:
        add(default_key, True)
    for k in sorted(data):
        if fmt.get(k) and not fmt[k].get("optional") and not fmt[k].get("alias"):
            add(k)
    for k in sorted(data):
        add(k)
    return ",".join(out)


def random_mac():
    # PVE's default OUI BC:24:11 (Proxmox Server Solutions GmbH)
    return "BC:24:11:%02X:%02X:%02X" % tuple(random.getrandbits(8) for _ in range(3))


def unique_tags(tags):
    seen, res = set(), []
    for t in sorted(schema.split_list(tags or ""), key=str.lower):
        t = t.lower()
        if t not in seen:
            seen.add(t)
            res.append(t)
    return ";".join(res)


class Guest:
    def __init__(self, vmid, kind, node):
        self.vmid = vmid
        self.kind = kind   # "qemu" | "lxc"
        self.node = node
        self.config = {}
        self.status = "stopped"
        self.started = None
        self.snapshots = {}

    @property
    def gtype(self):
        return "VM" if self.kind == "qemu" else "CT"

    def name(self):
        if self.kind == "qemu":
            return self.config.get("name") or "VM %d" % self.vmid
        return self.config.get("hostname") or "CT%d" % self.vmid

    def disks(self):
        """(key, volid, size in bytes) of the guest's own volumes."""
        out = []
        for k, v in self.config.items():
            if self.kind == "qemu" and (DRIVE_RE.fullmatch(k) or re.fullmatch(r"unused\d+", k)):
                d = parse_simple(v, "file")
                if d.get("media") == "cdrom" or d["file"] in ("none", "cdrom"):
                    continue
                out.append((k, d["file"], schema.parse_size(d.get("size", "0")) or 0))
            elif self.kind == "lxc" and (CT_MP_RE.fullmatch(k) or re.fullmatch(r"unused\d+", k)):
                d = parse_simple(v, "volume")
                out.append((k, d["volume"], schema.parse_size(d.get("size", "0")) or 0))
        return out

    def maxdisk(self):
        key = "rootfs" if self.kind == "lxc" else None
        if self.kind == "qemu":
            boot = parse_simple(self.config.get("boot", ""), "legacy").get("order", "")
            for dev in boot.split(";") + sorted(k for k, _, _ in self.disks()):
                if any(k == dev for k, _, _ in self.disks()):
                    key = dev
                    break
        for k, _, size in self.disks():
            if k == key:
                return size
        return 0

    def maxmem(self):
        m = re.match(r"(?:current=)?(\d+)", self.config.get("memory", "512"))
        return int(m.group(1)) << 20 if m else 512 << 20

    def maxcpu(self, node_cpus):
        if self.kind == "qemu":
            return int(self.config.get("cores", 1)) * int(self.config.get("sockets", 1))
        return int(self.config.get("cores", node_cpus))

    def uptime(self):
        return int(time.monotonic() - self.started) if self.status == "running" else 0

    def resource(self, node_cpus=8):
        e = {"id": "%s/%d" % (self.kind, self.vmid), "vmid": self.vmid, "node": self.node,
             "type": self.kind, "name": self.name(), "status": self.status,
             "maxcpu": self.maxcpu(node_cpus), "maxmem": self.maxmem(), "maxdisk": self.maxdisk(),
             "template": 1 if self.config.get("template") == "1" else 0, "uptime": self.uptime(),
             "cpu": 0.0, "mem": (self.maxmem() // 4) if self.status == "running" else 0, "disk": 0,
             "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0, "hastate": None}
        del e["hastate"]
        if self.config.get("tags"):
            e["tags"] = self.config["tags"]
        if self.config.get("lock"):
            e["lock"] = self.config["lock"]
        return e


def parse_simple(value, default_key):
    """A lenient k=v,k=v split for values already validated and normalized."""
    res = {}
    for part in value.split(","):
        if not part:
            continue
        if "=" in part:
            k, v = part.split("=", 1)
            res[k] = v
        else:
            res[default_key] = part
    res.setdefault(default_key, "")
    return res


# ---------------------------------------------------------------- helpers

def _guest(c, p, kind):
    vmid = int(p["vmid"])
    g = c.guests.get(vmid)
    if not g or g.kind != kind or g.node != p["node"]:
        # the config file does not exist on this node
        what = "qemu-server" if kind == "qemu" else "lxc"
        raise die("Configuration file 'nodes/%s/%s/%d.conf' does not exist\n" % (p["node"], what, vmid))
    return g


def _check_lock(g, p):
    if g.config.get("lock") and p.get("skiplock") != "1":
        raise die("%s is locked (%s)\n" % (g.gtype, g.config["lock"]))


def _opt_priv(kind, opt):
    if kind == "qemu":
        if DRIVE_RE.fullmatch(opt) or re.fullmatch(r"(unused|serial|usb|hostpci|virtiofs)\d+", opt) or \
                opt in ("cdrom", "tags"):
            return None
        if opt in QEMU_CPU or re.fullmatch(r"numa\d+", opt):
            return ["VM.Config.CPU"]
        if opt in QEMU_MEM:
            return ["VM.Config.Memory"]
        if opt in QEMU_HW:
            return ["VM.Config.HWType"]
        if opt in QEMU_DISKOPT:
            return ["VM.Config.Disk"]
        if re.fullmatch(r"net\d+", opt):
            return ["VM.Config.Network"]
        if opt in QEMU_CLOUDINIT or re.fullmatch(r"ipconfig\d+", opt):
            return ("any", ["VM.Config.Cloudinit", "VM.Config.Network"])
        return ["VM.Config.Options"]
    if opt in ("cores", "cpulimit", "cpuunits"):
        return ["VM.Config.CPU"]
    if opt in ("memory", "swap"):
        return ["VM.Config.Memory"]
    if re.fullmatch(r"net\d+", opt) or opt in ("nameserver", "searchdomain", "hostname"):
        return ["VM.Config.Network"]
    if CT_MP_RE.fullmatch(opt) or re.fullmatch(r"unused\d+", opt):
        return ["VM.Config.Disk"]
    if opt == "tags":
        return None
    return ["VM.Config.Options"]


def _check_config_perms(c, user, kind, vmid, keys):
    for opt in keys:
        need = _opt_priv(kind, opt)
        if need is None:
            continue
        if need[0] == "any":
            c.check(user, "/vms/%d" % vmid, need[1], any_=True)
        else:
            c.check(user, "/vms/%d" % vmid, need)


def _check_bridge_access(c, user, nets):
    for net in nets:
        br = net.get("bridge")
        if br is None:
            continue
        if net.get("tag"):
            c.check(user, "/sdn/zones/localnetwork/%s/%s" % (br, net["tag"]), ["SDN.Use"])
        else:
            c.check(user, "/sdn/zones/localnetwork/%s" % br, ["SDN.Use"])


def _check_volume_access(c, user, volid, vmid):
    storeid, volname, vtype = c.parse_volname(volid)
    if vtype in ("iso", "vztmpl", "import"):
        c.check(user, "/storage/" + storeid, ["Datastore.AllocateSpace", "Datastore.Audit"], any_=True)
    elif vtype == "images":
        owner = re.search(r"-(\d+)-", volname)
        if not owner or int(owner.group(1)) != vmid:
            c.check(user, "/storage/" + storeid, ["Datastore.Allocate"])
    return storeid, volname, vtype


def _fmt(info, key):
    props = info["parameters"]["properties"]
    s = schema.prop_schema(props, key)
    return s.get("format") if s else None


def _typed(info, conf):
    """Config values as the API returns them (integers and booleans as numbers)."""
    props = info["parameters"]["properties"]
    out = {}
    for k, v in conf.items():
        s = schema.prop_schema(props, k) or {}
        t = s.get("type")
        if t in ("integer", "boolean") and re.fullmatch(r"-?\d+", str(v)):
            out[k] = int(v)
        elif t == "number" and schema.is_number(str(v)):
            out[k] = float(v) if "." in str(v) else int(v)
        else:
            out[k] = v
    return out


def _digest(conf):
    return hashlib.sha1(json.dumps(conf, sort_keys=True).encode()).hexdigest()


def _check_vmid_unused(c, vmid, emsg):
    g = c.guests.get(vmid)
    if g:
        raise die("%s %s %d already exists on node '%s'\n" % (emsg, g.gtype, vmid, g.node))


# ---------------------------------------------------------------- create

def h_qemu_create(c, p, user, info, fault):
    node = p.pop("node")
    vmid = int(p.pop("vmid"))
    _node_online(c, node)
    if p.get("archive"):
        p.update(node=node, vmid=str(vmid))
        return backups.h_restore(c, p, user, info, fault, "qemu")
    start = p.pop("start", None) == "1"
    default_storage = p.pop("storage", None)
    pool = p.pop("pool", None)
    for k in ("force", "unique", "bwlimit", "live-restore", "ha-managed", "import-working-storage"):
        p.pop(k, None)
    if p.get("sshkeys") is not None:
        keys = urllib.parse.unquote(p["sshkeys"])
        _validate_ssh_keys(keys)
    if pool is not None:
        raise die("pool '%s' does not exist\n" % pool)
    if default_storage:
        c.check(user, "/storage/" + default_storage, ["Datastore.AllocateSpace"])
    if start:
        c.check(user, "/vms/%d" % vmid, ["VM.PowerMgmt"])
    if not c.check(user, "/vms/%d" % vmid, ["VM.Allocate"], noerr=True):
        raise perm_exc()

    drives = {}
    for k in sorted(p):
        if k == "cdrom":
            p["ide2"] = p.pop("cdrom") + ",media=cdrom"
    for k in sorted(p):
        if DRIVE_RE.fullmatch(k):
            drives[k] = schema.parse_property_string(_fmt(info, k), p[k], k)
    for ds, d in drives.items():
        _check_drive_access(c, user, vmid, ds, d, default_storage)
    _check_config_perms(c, user, "qemu", vmid, list(p))
    nets = {}
    for k in sorted(p):
        if re.fullmatch(r"net\d+", k):
            nets[k] = schema.parse_property_string(_fmt(info, k), p[k], k)
    _check_bridge_access(c, user, nets.values())
    for k, n in nets.items():
        if not n.get("macaddr"):
            n["macaddr"] = random_mac()
        p[k] = print_property_string(n, _fmt(info, k))

    emsg = "unable to create VM %d -" % vmid
    _check_vmid_unused(c, vmid, emsg)
    g = Guest(vmid, "qemu", node)
    g.config = {"lock": "create"}
    c.guests[vmid] = g

    def work(task):
        conf = dict(p)
        created = []
        try:
            for ds, d in sorted(drives.items()):
                conf[ds] = _create_drive(c, task, g, ds, d, default_storage, _fmt(info, ds), created)
            if conf.get("tags"):
                conf["tags"] = unique_tags(conf["tags"])
            if not conf.get("boot"):
                order = [k for k in sorted(drives) if drives[k].get("media") != "cdrom"] + \
                        [k for k in sorted(drives) if drives[k].get("media") == "cdrom"] + sorted(nets)
                conf["boot"] = "order=" + ";".join(order)
            conf.setdefault("smbios1", "uuid=%s" % uuid.uuid4())
            conf.setdefault("vmgenid", str(uuid.uuid4()))
            conf["meta"] = "creation-qemu=9.2.0,ctime=%d" % int(time.time())
        except TaskError as e:
            for volid in created:
                c.free_volume(volid, node)
            c.guests.pop(vmid, None)
            raise TaskError("%s %s" % (emsg, e))
        g.config = conf
        if not start:
            return handoff.on_qemu_create(c, g, {ds: d.get("import-from") for ds, d in drives.items()
                                                 if d.get("media") != "cdrom"})
        if start:
            task.log.append("Execute autostart")
            try:
                _qemu_start_effect(c, g, task)
            except TaskError as e:
                task.warn(str(e))

    def failed(task):
        c.guests.pop(vmid, None)
        raise TaskError("%s %s" % (emsg, fault))

    return c.start_task(node, "qmcreate", str(vmid), user, failed if fault else work,
                        busy_key=vmid)


def _validate_ssh_keys(raw):
    for line in raw.split("\n"):
        if re.fullmatch(r"\s*", line):
            continue
        m = re.match(r"(?:\S+\s+)*?((?:ssh|ecdsa|sk)-[\w@.-]+)\s+([A-Za-z0-9+/=]+)(\s.*)?$", line.strip())
        ok = False
        if m:
            try:
                blob = base64.b64decode(m.group(2), validate=True)
                n = int.from_bytes(blob[:4], "big")
                ok = blob[4:4 + n].decode() == m.group(1)
            except (ValueError, UnicodeError):
                ok = False
        if not ok:
            raise die("SSH public key validation error\n")


def _check_drive_access(c, user, vmid, ds, d, default_storage):
    volid = d.get("file", "")
    cdrom = d.get("media") == "cdrom"
    if not volid or volid == "none" or volid == "cloudinit" or volid.endswith(":cloudinit"):
        pass
    elif cdrom and volid == "cdrom":
        c.check(user, "/", ["Sys.Console"])
    elif not cdrom and NEW_DISK_RE.fullmatch(volid):
        storeid = NEW_DISK_RE.fullmatch(volid).group(2) or default_storage
        if not storeid:
            raise die("no storage ID specified (and no default storage)\n")
        c.check(user, "/storage/" + storeid, ["Datastore.AllocateSpace"])
        scfg = c.storage_cfg(storeid)
        if "images" not in c.content_of(scfg):
            raise param_exc({"storage": "storage '%s' does not support vm images" % storeid})
    elif not volid.startswith("/"):
        _, _, vtype = _check_volume_access(c, user, volid, vmid)
        if vtype not in ("images", "iso"):
            raise param_exc({ds: "content type needs to be 'images' or 'iso'"})
    src = d.get("import-from")
    if src:
        if not NEW_DISK_RE.fullmatch(volid or ""):
            raise param_exc({ds: "'import-from' requires special syntax - use <storage ID>:0,import-from=<source>"})
        if not src.startswith("/"):
            storeid, volname, vtype = c.parse_volname(src)
            if vtype not in ("images", "import"):
                raise param_exc({ds: "%s has wrong type '%s' - needs to be 'images' or 'import'" % (src, vtype)})
            _check_volume_access(c, user, src, vmid)
        else:
            raise die("only root can pass arbitrary filesystem paths\n")


def _create_drive(c, task, g, ds, d, default_storage, fmt, created):
    volid = d.get("file", "")
    d = dict(d)
    if d.get("media") == "cdrom":
        if volid not in ("", "none", "cdrom") and c.volume(volid, g.node) is None:
            raise TaskError("volume '%s' does not exist\n" % volid)
        return print_property_string(d, fmt)
    m = NEW_DISK_RE.fullmatch(volid)
    if not m:
        return print_property_string(d, fmt)
    storeid = m.group(2) or default_storage
    c.storage_check_enabled(storeid, g.node)
    src = d.pop("import-from", None)
    if src:
        vol = c.volume(src, g.node)
        if vol is None:
            raise TaskError("volume '%s' does not exist\n" % src)
        size = vol.get("virtual_size", vol["size"])
        new = c.alloc_disk(storeid, g.node, g.vmid, size)
        task.log.append("importing disk '%s' to VM %d ..." % (src, g.vmid))
        task.log.append("transferred %s of %s (100.00%%)" % (_human(size), _human(size)))
    else:
        size = int(float(m.group(3)) * (1 << 30))
        new = c.alloc_disk(storeid, g.node, g.vmid, size)
    created.append(new)
    d["file"] = new
    d["size"] = format_size(size)
    s = print_property_string(d, fmt)
    task.log.append("%s: successfully created disk '%s'" % (ds, s))
    return s


def _human(n):
    return "%.1f GiB" % (n / (1 << 30))


def h_lxc_create(c, p, user, info, fault):
    node = p.pop("node")
    vmid = int(p.pop("vmid"))
    _node_online(c, node)
    if p.get("restore") == "1":
        p.update(node=node, vmid=str(vmid))
        return backups.h_restore(c, p, user, info, fault, "lxc")
    start = p.pop("start", None) == "1"
    for k in ("force", "unique", "bwlimit", "ignore-unpack-errors", "restore", "pool"):
        p.pop(k, None)
    unprivileged = p.get("unprivileged") == "1"
    if start:
        c.check(user, "/vms/%d" % vmid, ["VM.PowerMgmt"])
    if not c.check(user, "/vms/%d" % vmid, ["VM.Allocate"], noerr=True):
        raise perm_exc()
    ostemplate = p.pop("ostemplate")
    storage = p.pop("storage", None) or "local"
    ssh_keys = p.pop("ssh-public-keys", None)
    p.pop("password", None)
    if ssh_keys is not None:
        _validate_ssh_keys(ssh_keys)
    _check_config_perms(c, user, "lxc", vmid, [k for k in p if k != "unprivileged"])
    _check_volume_access(c, user, ostemplate, vmid)

    mps = {}
    for k in list(p):
        if CT_MP_RE.fullmatch(k):
            v = p.pop(k)
            if re.fullmatch(r"\d+(\.\d+)?", v):
                v = "%s:%s" % (storage, v)
            mps[k] = schema.parse_property_string(_fmt(info, k), v, k)
    if "rootfs" not in mps:
        if mps:
            raise die("mount points configured, but 'rootfs' not set - aborting\n")
        mps["rootfs"] = {"volume": "%s:4" % storage}
    for k, mp in mps.items():
        sid = mp["volume"].split(":", 1)[0]
        scfg = c.storage_check_enabled(sid, node)
        if "rootdir" not in c.content_of(scfg):
            raise param_exc({"storage": "storage '%s' does not support container directories" % sid})
        c.check(user, "/storage/" + sid, ["Datastore.AllocateSpace"])
    nets = {}
    for k in sorted(p):
        if re.fullmatch(r"net\d+", k):
            n = schema.parse_property_string(_fmt(info, k), p[k], k)
            n.setdefault("type", "veth")
            if not n.get("hwaddr"):
                n["hwaddr"] = random_mac()
            nets[k] = n
            p[k] = print_property_string(n, _fmt(info, k))

    emsg = "unable to create CT %d -" % vmid
    _check_vmid_unused(c, vmid, emsg)
    g = Guest(vmid, "lxc", node)
    g.config = {"lock": "create"}
    c.guests[vmid] = g

    def work(task):
        conf = dict(p)
        created = []
        try:
            if c.volume(ostemplate, node) is None:
                raise TaskError("volume '%s' does not exist\n" % ostemplate)
            # mountpoint_names: rootfs first, then mp0, mp1, ... (so rootfs is disk-0)
            for k, mp in sorted(mps.items(), key=lambda kv: -1 if kv[0] == "rootfs" else int(kv[0][2:])):
                m = re.fullmatch(r"([^:]+):(\d+(\.\d+)?)", mp["volume"])
                if m:
                    size = int(float(m.group(2)) * (1 << 30))
                    scfg = c.storage_cfg(m.group(1))
                    new = c.alloc_disk(m.group(1), node, vmid, size, subvol=(scfg["type"] == "dir" and size == 0))
                    created.append(new)
                    d = dict(mp, volume=new, size=format_size(size))
                    conf[k] = print_property_string(d, _fmt(info, k))
                else:
                    conf[k] = print_property_string(mp, _fmt(info, k))
            task.log.append("extracting archive '%s'" % c.volume(ostemplate, node).get("path", ostemplate))
            task.log.append("Total bytes read: %d" % c.volume(ostemplate, node)["size"])
            if ssh_keys:
                task.log.append("Writing SSH public keys to /root/.ssh/authorized_keys")
        except TaskError as e:
            for volid in created:
                c.free_volume(volid, node)
            c.guests.pop(vmid, None)
            raise TaskError("%s %s" % (emsg, e))
        conf.setdefault("arch", "amd64")
        conf.setdefault("ostype", "debian")
        conf.setdefault("hostname", "CT%d" % vmid)
        if conf.get("tags"):
            conf["tags"] = unique_tags(conf["tags"])
        g.config = conf
        g.ssh_keys = ssh_keys
        if start:
            _lxc_start_effect(c, g, task)
        else:
            return handoff.on_lxc_create(c, g, c.volume(ostemplate, node)["path"], ssh_keys)

    def failed(task):
        c.guests.pop(vmid, None)
        raise TaskError("%s %s" % (emsg, fault))

    return c.start_task(node, "vzcreate", str(vmid), user, failed if fault else work, busy_key=vmid)


# ---------------------------------------------------------------- power

def _check_bridges(c, g):
    for k, v in sorted(g.config.items()):
        if re.fullmatch(r"net\d+", k):
            br = parse_simple(v, "model").get("bridge")
            if br and br not in c.nodes[g.node]["bridges"]:
                raise TaskError("bridge '%s' does not exist\n" % br)


def _qemu_start_effect(c, g, task):
    if g.status == "running":
        raise TaskError("VM %d already running\n" % g.vmid)
    for k, v in sorted(g.config.items()):
        if DRIVE_RE.fullmatch(k):
            d = parse_simple(v, "file")
            if d["file"] not in ("none", "cdrom", "") and not d["file"].startswith("/") and \
                    c.volume(d["file"], g.node) is None:
                raise TaskError("volume '%s' does not exist\n" % d["file"])
    _check_bridges(c, g)
    g.status = "running"
    g.started = time.monotonic()


def _lxc_start_effect(c, g, task):
    _check_bridges(c, g)
    g.status = "running"
    g.started = time.monotonic()


def h_start(c, p, user, kind, fault):
    g = _guest(c, p, kind)
    _check_lock(g, p)
    if kind == "lxc" and g.status == "running":
        raise die("CT %d already running\n" % g.vmid)

    def work(task):
        if kind == "qemu":
            _qemu_start_effect(c, g, task)
        else:
            _lxc_start_effect(c, g, task)
        return handoff.on_start(c, g)
    return c.start_task(g.node, "qmstart" if kind == "qemu" else "vzstart", str(g.vmid), user, work,
                        fail=fault, busy_key=g.vmid)


def h_stop(c, p, user, kind, fault, shutdown=False):
    g = _guest(c, p, kind)
    if p.get("skiplock") != "1" and g.config.get("lock") and kind == "qemu":
        _check_lock(g, p)
    if kind == "lxc" and g.status != "running":
        raise die("CT %d not running\n" % g.vmid)
    if kind == "qemu" and shutdown and g.status != "running":
        raise die("VM %d not running\n" % g.vmid)

    def work(task):
        g.status = "stopped"
        g.started = None
        return handoff.on_stop(c, g)
    ttype = {("qemu", False): "qmstop", ("qemu", True): "qmshutdown",
             ("lxc", False): "vzstop", ("lxc", True): "vzshutdown"}[(kind, shutdown)]
    return c.start_task(g.node, ttype, str(g.vmid), user, work, fail=fault, busy_key=g.vmid)


def h_status_current(c, p, user, kind):
    g = _guest(c, p, kind)
    e = {"vmid": g.vmid, "status": g.status, "name": g.name(), "uptime": g.uptime(),
         "cpus": g.maxcpu(c.nodes[g.node]["maxcpu"]), "maxmem": g.maxmem(), "maxdisk": g.maxdisk(),
         "cpu": 0.0, "mem": g.maxmem() // 4 if g.status == "running" else 0, "disk": 0,
         "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0, "ha": {"managed": 0}}
    if kind == "qemu":
        e["qmpstatus"] = g.status
        e["agent"] = 0
    else:
        e["type"] = "lxc"
        e["maxswap"] = int(g.config.get("swap", 512)) << 20
    if g.config.get("tags"):
        e["tags"] = g.config["tags"]
    if g.config.get("lock"):
        e["lock"] = g.config["lock"]
    if g.status == "running":
        e["pid"] = 10000 + g.vmid
    return e


# ---------------------------------------------------------------- destroy

def h_destroy(c, p, user, kind, fault):
    g = _guest(c, p, kind)
    _check_lock(g, p)
    if g.status == "running":
        if kind == "qemu":
            raise die("VM %d is running - destroy failed\n" % g.vmid)
        if p.get("force") != "1":
            raise die("unable to destroy CT %d - container is running\n" % g.vmid)
    purge = p.get("purge") == "1"
    unref = p.get("destroy-unreferenced-disks") == "1"

    def work(task):
        if g.config.get("lock") and p.get("skiplock") != "1":
            raise TaskError("%s is locked (%s)\n" % (g.gtype, g.config["lock"]))
        if g.status == "running" and kind == "qemu":
            raise TaskError("VM %d is running - destroy failed\n" % g.vmid)
        handoff.on_destroy(c, g)  # stopped before its volumes go
        for _, volid, _ in g.disks():
            try:
                c.free_volume(volid, g.node)
                task.log.append("Removed volume '%s'" % volid)
            except ApiError:
                pass
        if unref:
            for sid in c.nodes[g.node]["storages"]:
                for volname, v in list(c.vols(sid, g.node).items()):
                    if v.get("vmid") == g.vmid and v["content"] in ("images", "rootdir"):
                        c.free_volume("%s:%s" % (sid, volname), g.node)
        if purge:
            task.log.append("purging VM %d from related configurations.." % g.vmid)
            for job in c.backup_jobs.values():
                if job.get("vmid"):
                    ids = [x for x in schema.split_list(job["vmid"]) if x != str(g.vmid)]
                    job["vmid"] = ",".join(ids)
        g.status = "stopped"
        c.guests.pop(g.vmid, None)
    return c.start_task(g.node, "qmdestroy" if kind == "qemu" else "vzdestroy", str(g.vmid), user,
                        work, fail=fault, busy_key=g.vmid)


# ---------------------------------------------------------------- config

def h_config_get(c, p, user, kind, info):
    g = _guest(c, p, kind)
    if p.get("snapshot"):
        snap = g.snapshots.get(p["snapshot"])
        if not snap:
            raise die("snapshot '%s' does not exist\n" % p["snapshot"])
        conf = dict(snap["config"])
    else:
        conf = dict(g.config)
    out = _typed(c.schemas[c.schema_version()]["POST /nodes/{node}/%s" % kind], conf)
    out["digest"] = _digest(g.config)
    return out


def _apply_config(c, g, p, user, info, task=None):
    """update_vm_api / update_pct_config: `delete`, then the new values."""
    kind = g.kind
    if p.get("digest") and p["digest"] != _digest(g.config):
        raise die("detected modified configuration - file changed by other user? Try again.\n")
    conf = dict(g.config)
    deletes = schema.split_list(p.get("delete") or "")
    for k in deletes:
        if k in ("lock",):
            continue
        if re.fullmatch(r"unused\d+", k) and conf.get(k):
            # try_deallocate_drive / delete_mountpoint_volume: an owned volume is
            # freed unless a snapshot still refers to it
            volid = parse_simple(conf[k], "file" if kind == "qemu" else "volume")["file" if kind == "qemu" else "volume"]
            if re.search(r"(?:^|[:/])(?:vm|subvol)-%d-" % g.vmid, volid):
                if _in_snapshots(g, volid):
                    raise die("unable to delete '%s' - volume is still in use (snapshot?)\n" % volid)
                c.free_volume(volid, g.node)
            conf.pop(k, None)
            continue
        if CT_MP_RE.fullmatch(k) and kind == "lxc" and k != "rootfs" and conf.get(k):
            n = 0
            while "unused%d" % n in conf:
                n += 1
            conf["unused%d" % n] = parse_simple(conf[k], "volume")["volume"]
            conf.pop(k, None)
            continue
        if DRIVE_RE.fullmatch(k) and kind == "qemu":
            d = parse_simple(conf.get(k, ""), "file")
            if conf.get(k) and d.get("media") != "cdrom" and d["file"] not in ("none", "cdrom"):
                n = 0
                while "unused%d" % n in conf:
                    n += 1
                conf["unused%d" % n] = d["file"]
        conf.pop(k, None)
    for k, v in p.items():
        if k in ("node", "vmid", "delete", "digest", "skiplock", "revert", "force",
                 "background_delay") or v is None:
            continue
        fmt = _fmt(info, k)
        if re.fullmatch(r"net\d+", k):
            n = schema.parse_property_string(fmt, v, k)
            macaddr = "macaddr" if kind == "qemu" else "hwaddr"
            if kind == "lxc":
                n.setdefault("type", "veth")
            if not n.get(macaddr):
                old = parse_simple(conf.get(k, ""), "model")
                old_mac = old.get(macaddr) or next((old[m] for m in old if re.fullmatch(r"[0-9A-Fa-f:]{17}", old.get(m, ""))), None)
                n[macaddr] = old_mac or random_mac()
            v = print_property_string(n, fmt)
        elif kind == "qemu" and DRIVE_RE.fullmatch(k):
            d = schema.parse_property_string(fmt, v, k)
            _check_drive_access(c, user, g.vmid, k, d, None)
            if NEW_DISK_RE.fullmatch(d.get("file", "")) and d.get("media") != "cdrom":
                created = []
                v = _create_drive(c, task or _NullTask(), g, k, d, None, fmt, created)
            elif d.get("media") == "cdrom" and d.get("file") not in ("none", "cdrom", "") and \
                    c.volume(d["file"], g.node) is None:
                raise die("volume '%s' does not exist\n" % d["file"])
            else:
                v = print_property_string(d, fmt)
        elif k == "tags":
            v = unique_tags(v)
        elif k == "sshkeys":
            _validate_ssh_keys(urllib.parse.unquote(v))
        conf[k] = v
    g.config = conf


class _NullTask:
    log = []

    def warn(self, msg):
        pass


def h_config_put(c, p, user, kind, info):
    g = _guest(c, p, kind)
    _check_lock(g, p)
    _check_config_perms(c, user, kind, g.vmid, [k for k in p if k not in
                        ("node", "vmid", "delete", "digest", "skiplock", "revert", "background_delay")] +
                        schema.split_list(p.get("delete") or ""))
    _check_bridge_access(c, user, [parse_simple(v, "model") for k, v in p.items()
                                   if re.fullmatch(r"net\d+", k) and v])
    _apply_config(c, g, p, user, info)
    return None


def h_config_post(c, p, user, info, fault):
    g = _guest(c, p, "qemu")
    _check_lock(g, p)
    _check_config_perms(c, user, "qemu", g.vmid, [k for k in p if k not in
                        ("node", "vmid", "delete", "digest", "skiplock", "revert", "background_delay")] +
                        schema.split_list(p.get("delete") or ""))
    _check_bridge_access(c, user, [parse_simple(v, "model") for k, v in p.items()
                                   if re.fullmatch(r"net\d+", k) and v])
    if p.get("digest") and p["digest"] != _digest(g.config):
        raise die("detected modified configuration - file changed by other user? Try again.\n")

    def work(task):
        try:
            _apply_config(c, g, p, user, info, task)
        except ApiError as e:
            raise TaskError(e.message)
    return c.start_task(g.node, "qmconfig", str(g.vmid), user, work, fail=fault, busy_key=g.vmid)


def h_resize(c, p, user, kind, fault):
    g = _guest(c, p, kind)
    _check_lock(g, p)
    disk = p["disk"]
    if kind == "qemu":
        c.check(user, "/vms/%d" % g.vmid, ["VM.Config.Disk"])
    m = re.fullmatch(r"(\+)?(\d+(\.\d+)?)([KMGT])?", p["size"])
    if not m:
        raise die("invalid size string\n") if kind == "lxc" else param_exc({"size": "unable to parse size"})

    def work(task):
        if not g.config.get(disk):
            raise TaskError("disk '%s' does not exist\n" % disk)
        key = "file" if kind == "qemu" else "volume"
        d = parse_simple(g.config[disk], key)
        if kind == "qemu" and d.get("media") == "cdrom":
            raise TaskError("you can't resize a cdrom\n")
        size = schema.parse_size(d.get("size", "0")) or 0
        amount = schema.parse_size(m.group(2) + (m.group(4) or ""))
        newsize = size + amount if m.group(1) else amount
        if newsize < size:
            raise TaskError("shrinking disks is not supported\n" if kind == "qemu" else "unable to shrink disk size\n")
        if newsize == size:
            if kind == "lxc":
                raise TaskError("disk is already at specified size\n")
            return
        storeid, volname, _ = c.parse_volname(d[key])
        vol = c.vols(storeid, g.node).get(volname)
        if vol:
            vol["size"] = newsize
        d["size"] = format_size(newsize)
        parts = [d.pop(key)] + ["%s=%s" % (k, d[k]) for k in sorted(d)]
        g.config[disk] = ",".join(parts)
        task.log.append("Size of logical volume %s changed from %s to %s." % (volname, size, newsize))
        handoff.on_resize(c, g, vol, newsize)
    ttype = "resize"
    return c.start_task(g.node, ttype, str(g.vmid), user, work, fail=fault, busy_key=g.vmid)


# ---------------------------------------------------------------- snapshots

def h_snapshot_list(c, p, user, kind):
    g = _guest(c, p, kind)
    out = []
    for name, s in g.snapshots.items():
        e = {"name": name, "snaptime": s["snaptime"], "description": s.get("description", "")}
        if s.get("parent"):
            e["parent"] = s["parent"]
        if kind == "qemu":
            e["vmstate"] = 0
        out.append(e)
    cur = {"name": "current", "digest": _digest(g.config), "description": "You are here!",
           "running": 1 if g.status == "running" else 0}
    if g.config.get("parent"):
        cur["parent"] = g.config["parent"]
    out.append(cur)
    return out


def h_snapshot_create(c, p, user, kind, fault):
    g = _guest(c, p, kind)
    _check_lock(g, p)
    name = p["snapname"]
    if name in ("current", "pending"):
        raise die("unable to use snapshot name '%s' (reserved name)\n" % name)
    if p.get("vmstate") == "1":
        raise die("the stand-in does not save VM state\n")

    def work(task):
        if name in g.snapshots:
            raise TaskError("snapshot name '%s' already used\n" % name)
        if not _can_snapshot(c, g):
            raise TaskError("snapshot feature is not available\n")
        conf = {k: v for k, v in g.config.items() if k not in ("parent", "lock")}
        s = {"config": conf, "snaptime": int(time.time()), "description": p.get("description", "")}
        if g.config.get("parent"):
            s["parent"] = g.config["parent"]
        g.snapshots[name] = s
        g.config["parent"] = name
        task.log.append("snapshot '%s' created" % name)
    return c.start_task(g.node, "qmsnapshot" if kind == "qemu" else "vzsnapshot", str(g.vmid), user,
                        work, fail=fault, busy_key=g.vmid)


def _can_snapshot(c, g):
    """has_feature('snapshot'): every volume's storage can snapshot it
    (LVM-thin, ZFS, RBD, btrfs; qcow2 files on directory-like storages)."""
    for _, volid, _ in g.disks():
        storeid, volname, _ = c.parse_volname(volid)
        t = c.storage_cfg(storeid)["type"]
        if t in ("lvmthin", "zfspool", "rbd", "btrfs"):
            continue
        if t in ("dir", "nfs", "cifs", "glusterfs", "cephfs") and volname.endswith(".qcow2"):
            continue
        return False
    return True


def h_snapshot_delete(c, p, user, kind, fault):
    g = _guest(c, p, kind)
    name = p["snapname"]
    if p.get("force") != "1":
        _check_lock(g, p)

    def work(task):
        if name not in g.snapshots:
            raise TaskError("snapshot '%s' does not exist\n" % name)
        parent = g.snapshots[name].get("parent")
        for s in g.snapshots.values():
            if s.get("parent") == name:
                s["parent"] = parent
        if g.config.get("parent") == name:
            if parent:
                g.config["parent"] = parent
            else:
                g.config.pop("parent", None)
        del g.snapshots[name]
    return c.start_task(g.node, "qmdelsnapshot" if kind == "qemu" else "vzdelsnapshot", str(g.vmid), user,
                        work, fail=fault, busy_key=g.vmid)


def h_snapshot_rollback(c, p, user, kind, fault):
    g = _guest(c, p, kind)
    _check_lock(g, p)
    name = p["snapname"]
    if name not in g.snapshots:
        raise die("snapshot '%s' does not exist\n" % name)

    def work(task):
        s = g.snapshots.get(name)
        if not s:
            raise TaskError("snapshot '%s' does not exist\n" % name)
        was_running = g.status == "running"
        conf = dict(s["config"])
        conf["parent"] = name
        g.config = conf
        g.status = "stopped"
        if p.get("start") == "1":
            g.status = "running"
            g.started = time.monotonic()
        elif was_running:
            task.log.append("VM %d stopped for rollback" % g.vmid)
    return c.start_task(g.node, "qmrollback" if kind == "qemu" else "vzrollback", str(g.vmid), user,
                        work, fail=fault, busy_key=g.vmid)


# ---------------------------------------------------------------- reassign volumes

def _in_snapshots(g, volid):
    """is_volume_in_use_by_snapshots: a snapshot's config refers to the volume."""
    for s in g.snapshots.values():
        for k, v in s["config"].items():
            if (DRIVE_RE.fullmatch(k) or CT_MP_RE.fullmatch(k) or re.fullmatch(r"unused\d+", k)) and \
                    isinstance(v, str) and v.split(",")[0] == volid:
                return True
    return False


def _rename_to_owner(c, volid, node, target_vmid):
    """PVE::Storage::rename_volume: the volume gets the next free
    vm-<target>-disk-N name on the same storage (its data stays)."""
    storeid, volname, _ = c.parse_volname(volid)
    vols = c.vols(storeid, node)
    vol = vols.pop(volname)
    m = re.fullmatch(r"(?:(\d+)/)?(vm|subvol)-(\d+)-disk-\d+(\.\w+)?", volname)
    prefix, ext = (m.group(2), m.group(4) or "") if m else ("vm", "")
    n = 0
    while True:
        base = "%s-%d-disk-%d" % (prefix, target_vmid, n)
        if not any(re.fullmatch(r"(?:\d+/)?%s(?:\.\w+)?" % base, v) for v in vols):
            break
        n += 1
    scfg = c.storage_cfg(storeid)
    new = ("%d/%s%s" % (target_vmid, base, ext)) if scfg["type"] == "dir" else base
    vol["vmid"] = target_vmid
    vols[new] = vol
    return "%s:%s" % (storeid, new)


def _reassign(c, p, user, kind, fault, key_param, target_key_param):
    """lxc move_volume / qemu move_disk with target-vmid: the volume moves to
    another guest on the same node under its new owner's name. Moving to
    another storage is not modelled."""
    g = _guest(c, p, kind)
    src_key = p[key_param]
    if not p.get("target-vmid"):
        raise die("the stand-in implements only reassigning to another guest (target-vmid)\n")
    tvmid = int(p["target-vmid"])
    if tvmid == g.vmid:
        raise die("Cannot move volume to the same guest\n")
    t = c.guests.get(tvmid)
    if not t or t.kind != kind or t.node != g.node:
        what = "qemu-server" if kind == "qemu" else "lxc"
        raise die("Configuration file 'nodes/%s/%s/%d.conf' does not exist\n" % (g.node, what, tvmid))
    c.check(user, "/vms/%d" % tvmid, ["VM.Config.Disk"])
    _check_lock(g, p)
    _check_lock(t, p)
    tkey = p.get(target_key_param) or src_key
    if p.get("digest") and p["digest"] != _digest(g.config):
        raise die("VM %d: detected modified configuration - file changed by other user? Try again.\n" % g.vmid)
    if p.get("target-digest") and p["target-digest"] != _digest(t.config):
        raise die("VM %d: detected modified configuration - file changed by other user? Try again.\n" % tvmid)
    if src_key not in g.config:
        raise die("volume '%s' for %s '%d' does not exist\n" % (src_key, "container" if kind == "lxc" else "VM", g.vmid))
    if tkey in t.config:
        raise die("Target volume key '%s' is already in use for %s '%d'\n" %
                  (tkey, "container" if kind == "lxc" else "VM", tvmid))
    if src_key == "rootfs" or tkey == "rootfs":
        raise die("Cannot move rootfs to another container\n")
    dk = "volume" if kind == "lxc" else "file"
    d = parse_simple(g.config[src_key], dk)
    volid = d[dk]
    if _in_snapshots(g, volid):
        raise die("Cannot move volume used by a snapshot to another container\n" if kind == "lxc"
                  else "Can't move disk used by a snapshot to another VM\n")
    if g.status == "running" and not re.fullmatch(r"unused\d+", src_key):
        raise die("Cannot move in-use volume while the source CT is running - detach or shutdown first\n"
                  if kind == "lxc" else "Can't move disk of running VM to another VM - detach first\n")
    if t.status == "running" and kind == "lxc":
        raise die("Cannot move volume to a running container\n")

    def work(task):
        if src_key not in g.config or tkey in t.config:
            raise TaskError("configuration changed while the task waited\n")
        new = _rename_to_owner(c, volid, g.node, tvmid)
        task.log.append("rename volume '%s' to '%s'" % (volid, new))
        val = g.config.pop(src_key)
        if re.fullmatch(r"unused\d+", tkey):
            t.config[tkey] = new
        else:
            t.config[tkey] = ",".join([new] + val.split(",")[1:]) if "," in val else new
    ttype = "move_volume" if kind == "lxc" else "qmmove"
    return c.start_task(g.node, ttype, str(g.vmid), user, work, fail=fault, busy_key=g.vmid)


def h_move_volume(c, p, user, fault):
    return _reassign(c, p, user, "lxc", fault, "volume", "target-volume")


def h_move_disk(c, p, user, fault):
    return _reassign(c, p, user, "qemu", fault, "disk", "target-disk")
