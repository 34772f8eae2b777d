"""The stand-in's cluster: nodes, storages and their volumes, tokens and
their ACLs, worker tasks with real UPIDs, and the handlers of the
node/storage/cluster/access/task endpoints. Guests live in guests.py.

Every mutation happens under `Cluster.lock`. Long operations are tasks: the
synchronous checks run in the request (as PVE does before fork_worker), the
effect runs when the task ends `task_ms` later (per guest, one after the
other, like PVE's config lock).
"""
import hashlib
import heapq
import os
import random
import re
import shutil
import threading
import time
import traceback

from . import schema


class ApiError(Exception):
    """An error response: `die "msg\\n"` is 500, raise_param_exc 400,
    raise_perm_exc 403."""

    def __init__(self, status, message, errors=None):
        super().__init__(message)
        self.status = status
        self.message = message if message.endswith("\n") else message + "\n"
        self.errors = errors


def die(msg):
    return ApiError(500, msg)


def param_exc(errors):
    return ApiError(400, "Parameter verification failed.\n", errors)


def perm_exc(what=None):
    return ApiError(403, "Permission check failed" + (" (%s)" % what if what else "") + "\n")


class TaskError(Exception):
    """A worker's die: the task's exitstatus."""


ALL_CONTENT = ["images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import"]
CONTENT_DIR = {"iso": "template/iso", "vztmpl": "template/cache", "import": "import",
               "images": "images", "rootdir": "images", "backup": "dump", "snippets": "snippets"}


def version_tuple(v):
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])


class Task:
    def __init__(self, upid, node, ttype, tid, user, starttime, pid, pstart):
        self.upid, self.node, self.type, self.id, self.user = upid, node, ttype, tid, user
        self.starttime, self.pid, self.pstart = starttime, pid, pstart
        self.status = "running"
        self.exitstatus = None
        self.log = []
        self.warnings = 0

    def warn(self, msg):
        self.warnings += 1
        self.log.append("WARN: " + msg.rstrip("\n"))


class Deferred:
    """What a task's work returns when its effect needs a slow step outside
    the cluster lock (handoff.py): `slow()` returns an error text or None,
    then `post(task, err, exc)` runs under the lock and ends the task."""

    def __init__(self, slow, post):
        self.slow = slow
        self.post = post


class Cluster:
    def __init__(self, config, state_dir):
        self.lock = threading.RLock()
        self.state_dir = state_dir
        self.guests = {}        # vmid -> guests.Guest
        self.volumes = {}       # storage key -> {volname: {...}}
        self.tasks = {}         # upid -> Task
        self.backup_jobs = {}   # id -> job dict
        self.uploads_in_progress = 0
        self.handoff_log = []   # runner calls (handoff.py)
        self._pid = random.Random(os.getpid()).randint(20000, 90000)
        self._pstart = int(time.monotonic() * 100) + 1000
        self._timers = []
        self._timer_seq = 0
        self._timer_cv = threading.Condition(self.lock)
        self._busy = {}         # vmid -> monotonic time its last queued task ends
        self.apply_config(config)
        threading.Thread(target=self._run_timers, daemon=True, name="tasks").start()

    # ------------------------------------------------------------ config

    def apply_config(self, config):
        with self.lock:
            self.version = str(config.get("version", "8.4.1"))
            self.task_ms = int(config.get("task_ms", 150))
            self.auth_fail_delay_ms = int(config.get("auth_fail_delay_ms", 3000))
            self.nodes = {}
            shared = {}
            for n in config.get("nodes", []):
                self.nodes[n["name"]] = {"name": n["name"], "online": bool(n.get("online", True)),
                                         "bridges": list(n.get("bridges", [])),
                                         "storages": {}, "maxcpu": int(n.get("maxcpu", 8)),
                                         "maxmem": int(n.get("maxmem", 32 << 30))}
                for s in n.get("storages", []):
                    s = dict(s)
                    s.setdefault("enabled", True)
                    s.setdefault("shared", False)
                    s.setdefault("total", 100 << 30)
                    if s["shared"]:
                        shared[s["storage"]] = s
                    self.nodes[n["name"]]["storages"][s["storage"]] = s
            for node in self.nodes.values():
                for sid, s in shared.items():
                    node["storages"].setdefault(sid, s)
            self.tokens = {}
            for t in config.get("tokens", []):
                full = "%s!%s" % (t["userid"], t["tokenid"])
                self.tokens[full] = {"full": full, "userid": t["userid"], "tokenid": t["tokenid"],
                                     "secret": t["secret"], "privileges": dict(t.get("privileges", {}))}
            self.config = config

    @property
    def has_import(self):
        return version_tuple(self.version) >= (8, 4)

    def schema_version(self):
        return "9.1" if version_tuple(self.version) >= (9,) else "8.4"

    # ------------------------------------------------------------ ACLs

    def privs(self, user, path):
        """Privileges of a token on a path: the most specific ACL path that
        is a prefix of it wins (PVE ACLs with propagate=1)."""
        tok = self.tokens.get(user)
        if not tok:
            return set()
        best = None
        for p in tok["privileges"]:
            q = p.rstrip("/") or "/"
            if q == "/" or path == q or path.startswith(q + "/"):
                if best is None or len(q) > len(best[0]):
                    best = (q, p)
        return set(tok["privileges"][best[1]]) if best else set()

    def check(self, user, path, privs, any_=False, noerr=False):
        have = self.privs(user, path)
        if any_:
            if any(p in have for p in privs):
                return True
            if noerr:
                return False
            raise perm_exc("%s, %s" % (path, "|".join(privs)))
        for p in privs:
            if p not in have:
                if noerr:
                    return False
                raise perm_exc("%s, %s" % (path, p))
        return True

    def check_api2(self, perm, user, params):
        """RPCEnvironment::check_api2_permissions for the cases our endpoints use."""
        if perm and perm.get("user") == "all":
            return
        if not perm:
            raise perm_exc("user != root@pam")
        if perm.get("check"):
            self._exec_check(perm["check"], user, params)
            return
        raise perm_exc()

    def _exec_check(self, check, user, params, noerr=False):
        op = check[0]
        if op in ("and", "or"):
            for sub in check[1:]:
                ok = self._exec_check(sub, user, params, noerr=(op == "or") or noerr)
                if op == "or" and ok:
                    return True
                if op == "and" and not ok:
                    return False
            if op == "or":
                if noerr:
                    return False
                raise perm_exc()
            return True
        if op == "perm":
            path = re.sub(r"\{(\w+)\}", lambda m: str(params.get(m.group(1), "")), check[1])
            opts = dict(zip(check[3::2], check[4::2]))
            return self.check(user, path, check[2], any_=bool(opts.get("any")), noerr=noerr)
        if op == "userid-param" and check[1] == "self":
            if params.get("userid") in (None, user):
                return True
            if noerr:
                return False
            raise perm_exc("invalid userid parameter")
        raise perm_exc()

    # ------------------------------------------------------------ storage

    def node(self, name):
        n = self.nodes.get(name)
        if not n:
            # proxyto: PVE::Cluster::check_node_exists
            raise die("no such cluster node '%s'\n" % name)
        return n

    def storage_cfg(self, storeid):
        for n in self.nodes.values():
            if storeid in n["storages"]:
                return n["storages"][storeid]
        raise die("storage '%s' does not exist\n" % storeid)

    def storage_check_enabled(self, storeid, node):
        scfg = self.storage_cfg(storeid)
        if not scfg.get("enabled", True):
            raise die("storage '%s' is disabled\n" % storeid)
        if storeid not in self.node(node)["storages"]:
            raise die("storage '%s' is not available on node '%s'\n" % (storeid, node))
        return scfg

    def content_of(self, scfg):
        c = [x for x in scfg.get("content", []) if x in ALL_CONTENT]
        if not self.has_import:
            c = [x for x in c if x != "import"]
        return c

    def skey(self, storeid, node):
        scfg = self.storage_cfg(storeid)
        return "shared/%s" % storeid if scfg.get("shared") else "%s/%s" % (node, storeid)

    def vols(self, storeid, node):
        return self.volumes.setdefault(self.skey(storeid, node), {})

    def storage_dir(self, storeid, node, content):
        d = os.path.join(self.state_dir, "storage", self.skey(storeid, node), CONTENT_DIR[content])
        os.makedirs(d, exist_ok=True)
        return d

    def parse_volname(self, volid):
        """(storeid, volname, vtype); raises like PVE::Storage::parse_volname."""
        m = re.fullmatch(r"([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)", volid, re.I | re.S)
        if not m:
            raise die("unable to parse volume ID '%s'\n" % volid)
        storeid, volname = m.group(1), m.group(2)
        scfg = self.storage_cfg(storeid)
        vtype = None
        if re.fullmatch(r"iso/[^/]+\.(?:iso|img)", volname, re.I):
            vtype = "iso"
        elif re.fullmatch(r"vztmpl/[^/]+\.tar\.(?:gz|xz|zst|bz2)", volname, re.I) or \
                re.fullmatch(r"vztmpl/[^/]+\.tar", volname, re.I) and version_tuple(self.version) >= (9,):
            vtype = "vztmpl"
        elif self.has_import and re.fullmatch(r"import/[a-zA-Z0-9\-.+=_]+\.(?:ova|ovf|qcow2|raw|vmdk)", volname):
            vtype = "import"
        elif re.fullmatch(r"(?:\d+/)?(?:vm|base|subvol)-\d+-[^/]+", volname):
            vtype = "images"
        elif re.fullmatch(r"backup/[^/]+", volname):
            vtype = "backup"
        if vtype is None:
            kind = "directory" if scfg["type"] == "dir" else scfg["type"]
            raise die("unable to parse %s volume name '%s'\n" % (kind, volname))
        return storeid, volname, vtype

    def volume(self, volid, node):
        storeid, volname, vtype = self.parse_volname(volid)
        return self.vols(storeid, node).get(volname)

    def alloc_disk(self, storeid, node, vmid, size, fmt=None, subvol=False):
        """vdisk_alloc: the next free vm-VMID-disk-N on the storage."""
        scfg = self.storage_cfg(storeid)
        vols = self.vols(storeid, node)
        n = 0
        while True:
            base = "%s-%d-disk-%d" % ("subvol" if subvol else "vm", vmid, n)
            if not any(re.fullmatch(r"(?:\d+/)?%s(?:\.\w+)?" % base, v) for v in vols):
                break
            n += 1
        if scfg["type"] == "dir":
            fmt = "subvol" if subvol else (fmt or "raw")
            volname = "%d/%s%s" % (vmid, base, "" if subvol else "." + fmt)
        else:
            fmt = "raw"
            volname = base
        vols[volname] = {"content": "images" if not subvol else "rootdir", "format": fmt,
                         "size": int(size), "ctime": int(time.time()), "vmid": vmid}
        return "%s:%s" % (storeid, volname)

    def free_volume(self, volid, node):
        storeid, volname, vtype = self.parse_volname(volid)
        vol = self.vols(storeid, node).pop(volname, None)
        if vol and vol.get("path") and vol.get("is_dir"):
            shutil.rmtree(vol["path"], ignore_errors=True)  # a hand-off volume (handoff.py)
        elif vol and vol.get("path"):
            try:
                os.unlink(vol["path"])
            except FileNotFoundError:
                pass
        return vol

    def used(self, storeid, node):
        return sum(v["size"] for v in self.vols(storeid, node).values())

    # ------------------------------------------------------------ tasks

    def start_task(self, node, ttype, tid, user, work, fail=None, busy_key=None, log=None):
        """fork_worker: returns the UPID; `work(task)` runs when the task ends
        (it raises TaskError to fail). `fail` (a message) makes the task fail
        without running `work` (the task_fail fault)."""
        with self.lock:
            self._pid += 1
            start = int(time.time())
            upid = "UPID:%s:%08X:%08X:%08X:%s:%s:%s:" % (node, self._pid, self._pstart + self._pid,
                                                         start, ttype, tid or "", user)
            task = Task(upid, node, ttype, tid or "", user, start, self._pid, self._pstart + self._pid)
            task.log.extend(log or [])
            self.tasks[upid] = task
            now = time.monotonic()
            begin = now
            if busy_key is not None:
                begin = max(now, self._busy.get(busy_key, 0))
            end = begin + self.task_ms / 1000.0
            if busy_key is not None:
                self._busy[busy_key] = end
            self._schedule(end, lambda: self._finish(task, work, fail))
            return upid

    def _finish(self, task, work, fail):
        with self.lock:
            try:
                if fail:
                    raise TaskError(fail)
                res = work(task)
                if isinstance(res, Deferred):
                    threading.Thread(target=self._finish_later, args=(task, res), daemon=True).start()
                    return
            except TaskError as e:
                msg = str(e).rstrip("\n")
                task.log.append("TASK ERROR: " + msg)
                task.exitstatus = msg
            except ApiError as e:
                msg = e.message.rstrip("\n")
                task.log.append("TASK ERROR: " + msg)
                task.exitstatus = msg
            except Exception as e:  # a stand-in bug: fail the task, keep serving
                traceback.print_exc()
                msg = "stand-in internal error: %r" % e
                task.log.append("TASK ERROR: " + msg)
                task.exitstatus = msg
            else:
                if task.warnings:
                    task.log.append("TASK WARNINGS: %d" % task.warnings)
                    task.exitstatus = "WARNINGS: %d" % task.warnings
                else:
                    task.log.append("TASK OK")
                    task.exitstatus = "OK"
            task.status = "stopped"

    def _finish_later(self, task, d):
        """A Deferred's slow part runs without the lock while the task stays
        running; its `post` then ends the task like any work."""
        err, exc = None, None
        try:
            err = d.slow()
        except Exception as e:  # noqa: BLE001 - reported as the task's error
            exc = e
        self._finish(task, lambda t: d.post(t, err, exc), None)

    def _schedule(self, when, fn):
        with self._timer_cv:
            self._timer_seq += 1
            heapq.heappush(self._timers, (when, self._timer_seq, fn))
            self._timer_cv.notify()

    def _run_timers(self):
        while True:
            with self._timer_cv:
                while not self._timers or self._timers[0][0] > time.monotonic():
                    timeout = self._timers[0][0] - time.monotonic() if self._timers else None
                    self._timer_cv.wait(timeout)
                _, _, fn = heapq.heappop(self._timers)
                fn()


UPID_RE = re.compile(r"UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):"
                     r"([0-9A-Fa-f]{8}):([^:\s]+):([^:\s]*):([^:\s]+):")


# ---------------------------------------------------------------- handlers

def h_version(c, p, user):
    v = c.version
    mm = ".".join(v.split(".")[:2])
    return {"version": v, "release": mm, "repoid": hashlib.sha1(v.encode()).hexdigest()[:8]}


def h_nodes(c, p, user):
    out = []
    for n in c.nodes.values():
        e = {"node": n["name"], "status": "online" if n["online"] else "offline", "type": "node",
             "id": "node/" + n["name"], "level": "", "ssl_fingerprint": c.fingerprint}
        if n["online"]:
            e.update({"maxcpu": n["maxcpu"], "maxmem": n["maxmem"], "cpu": 0.01, "mem": 1 << 30,
                      "uptime": int(time.monotonic()), "disk": 0, "maxdisk": 100 << 30})
        out.append(e)
    return out


def _node_online(c, name):
    n = c.node(name)
    if not n["online"]:
        # pveproxy cannot proxy to a node that is down
        raise ApiError(595, "Connection refused\n")
    return n


def h_network(c, p, user):
    n = _node_online(c, p["node"])
    t = p.get("type")
    out = []
    for i, br in enumerate(n["bridges"]):
        e = {"iface": br, "type": "bridge", "active": 1, "autostart": 1, "method": "manual",
             "families": ["inet"], "priority": 3 + i, "bridge_ports": "eno1" if i == 0 else "",
             "bridge_stp": "off", "bridge_fd": "0"}
        if t in (None, "bridge", "any_bridge", "any_local_bridge"):
            out.append(e)
    if t in (None, "eth"):
        out.append({"iface": "eno1", "type": "eth", "active": 1, "method": "manual",
                    "families": ["inet"], "priority": 1, "exists": 1})
    return out


def _storage_status(c, sid, scfg, node):
    total = int(scfg.get("total", 100 << 30))
    used = c.used(sid, node) if scfg.get("enabled", True) else 0
    e = {"storage": sid, "type": scfg["type"], "content": ",".join(sorted(c.content_of(scfg))),
         "enabled": 1 if scfg.get("enabled", True) else 0, "shared": 1 if scfg.get("shared") else 0,
         "active": 1 if scfg.get("enabled", True) else 0}
    if scfg.get("enabled", True):
        e.update({"total": total, "used": used, "avail": max(total - used, 0),
                  "used_fraction": (used / total) if total else 0})
    return e


def h_node_storage(c, p, user):
    n = _node_online(c, p["node"])
    out = []
    want = p.get("content")
    for sid, scfg in sorted(n["storages"].items()):
        if p.get("storage") and p["storage"] != sid:
            continue
        if not (c.check(user, "/storage/" + sid, ["Datastore.Audit", "Datastore.AllocateSpace"], any_=True, noerr=True)):
            continue
        if p.get("enabled") == "1" and not scfg.get("enabled", True):
            continue
        if want:
            wanted = schema.split_list(want)
            if not all(w in c.content_of(scfg) for w in wanted):
                continue
        out.append(_storage_status(c, sid, scfg, p["node"]))
    return out


def h_storage_config(c, p, user):
    scfg = c.storage_cfg(p["storage"])
    e = {"storage": p["storage"], "type": scfg["type"], "content": ",".join(sorted(c.content_of(scfg))),
         "digest": hashlib.sha1(repr(sorted(scfg.items())).encode()).hexdigest()}
    if scfg["type"] == "dir":
        e["path"] = scfg.get("path", "/var/lib/vz")
    elif scfg["type"] == "lvmthin":
        e.update({"vgname": "pve", "thinpool": "data"})
    if scfg.get("shared"):
        e["shared"] = 1
    if not scfg.get("enabled", True):
        e["disable"] = 1
    return e


def _vol_entry(sid, volname, v):
    e = {"volid": "%s:%s" % (sid, volname), "content": v["content"], "format": v["format"],
         "size": v["size"], "ctime": v["ctime"]}
    if v.get("vmid"):
        e["vmid"] = v["vmid"]
    for k in ("subtype", "notes"):
        if v.get(k):
            e[k] = v[k]
    return e


def h_content(c, p, user):
    _node_online(c, p["node"])
    sid = p["storage"]
    c.storage_check_enabled(sid, p["node"])
    out = []
    for volname, v in sorted(c.vols(sid, p["node"]).items()):
        if p.get("content") and v["content"] != p["content"]:
            continue
        if p.get("vmid") and str(v.get("vmid")) != p["vmid"]:
            continue
        out.append(_vol_entry(sid, volname, v))
    return out


def h_content_delete(c, p, user, fault):
    node = p["node"]
    _node_online(c, node)
    volume = p["volume"]
    sid = p.get("storage")
    # real_volume_id: a volume without "storage:" is taken from the path's storage
    if ":" not in volume or not re.match(r"[a-z][a-z0-9\-_.]*[a-z0-9]:", volume, re.I):
        if not sid:
            raise param_exc({"storage": "storage ID missing"})
        volid = "%s:%s" % (sid, volume)
    else:
        volid = volume
        vsid = volid.split(":", 1)[0]
        if sid and vsid != sid:
            raise die("storage ID mismatch (%s != %s)\n" % (sid, vsid))
    storeid, volname, vtype = c.parse_volname(volid)
    vol = c.vols(storeid, node).get(volname)
    c.check(user, "/storage/" + storeid, ["Datastore.Allocate"])
    scfg = c.storage_cfg(storeid)
    shown = "%s/%s" % (scfg.get("path", "/var/lib/vz"), volname.replace("vztmpl/", "template/cache/")
                       .replace("iso/", "template/iso/"))
    if vol is None:
        # PVE::Storage::path succeeds for any parsable name; vdisk_free fails in the worker
        def work(task):
            raise TaskError("unlink '%s' failed - No such file or directory\n" % shown)
    else:
        def work(task):
            if volname not in c.vols(storeid, node):
                raise TaskError("unlink '%s' failed - No such file or directory\n" % shown)
            c.free_volume(volid, node)
            task.log.append("Removed volume '%s'" % volid)
    ownervm = vol.get("vmid") if vol else None
    tid = ("%s@" % ownervm if ownervm else "") + storeid
    return c.start_task(node, "imgdel", tid, user, work, fail=fault)


def h_resources(c, p, user):
    t = p.get("type")
    out = []
    if t in (None, "vm"):
        for vmid in sorted(c.guests):
            g = c.guests[vmid]
            if not c.check(user, "/vms/%d" % vmid, ["VM.Audit"], noerr=True):
                continue
            out.append(g.resource())
    if t in (None, "node"):
        for n in h_nodes(c, {}, user):
            out.append(n)
    if t in (None, "storage"):
        for name, n in c.nodes.items():
            for sid, scfg in sorted(n["storages"].items()):
                if not c.check(user, "/storage/" + sid, ["Datastore.Audit", "Datastore.AllocateSpace"], any_=True, noerr=True):
                    continue
                st = _storage_status(c, sid, scfg, name)
                out.append({"id": "storage/%s/%s" % (name, sid), "storage": sid, "node": name,
                            "type": "storage", "status": "available" if n["online"] else "unknown",
                            "content": st["content"], "plugintype": scfg["type"],
                            "shared": st["shared"], "maxdisk": st.get("total", 0), "disk": st.get("used", 0)})
    return out


DEFAULT_PERM_PATHS = ["/", "/access", "/access/groups", "/nodes", "/pool", "/sdn", "/storage", "/vms"]


def h_permissions(c, p, user):
    """get_effective_permissions: the default top-level paths and every ACL
    path, each with its effective privileges, empty ones left out; with
    `path`, only that path (even if empty)."""
    target = p.get("userid") or user
    if target != user and target.split("!")[0] != user:
        c.check(user, "/access", ["Sys.Audit"])
    tok = c.tokens.get(target)
    if p.get("path"):
        return {p["path"]: {pr: 1 for pr in sorted(c.privs(target, p["path"]))}}
    paths = set(DEFAULT_PERM_PATHS) | set((tok or {}).get("privileges", {}))
    res = {}
    for path in sorted(paths):
        privs = c.privs(target, path)
        if privs:
            res[path] = {pr: 1 for pr in sorted(privs)}
    return res


def _task(c, p, user):
    m = UPID_RE.fullmatch(p["upid"])
    if not m:
        raise param_exc({"upid": "unable to parse worker upid"})
    task = c.tasks.get(p["upid"])
    if not task or task.node != p["node"]:
        raise param_exc({"upid": "no such task"})
    owner = task.user
    if not (user == owner or user == owner.split("!")[0]):
        c.check(user, "/nodes/" + p["node"], ["Sys.Audit"])
    return task


def h_task_status(c, p, user):
    task = _task(c, p, user)
    u, _, tokenid = task.user.partition("!")
    e = {"upid": task.upid, "node": task.node, "pid": task.pid, "pstart": task.pstart,
         "starttime": task.starttime, "type": task.type, "id": task.id, "user": u,
         "status": task.status}
    if tokenid:
        e["tokenid"] = tokenid
    if task.status == "stopped":
        e["exitstatus"] = task.exitstatus
    return e


def h_task_log(c, p, user):
    task = _task(c, p, user)
    start = int(p.get("start") or 0)
    limit = int(p.get("limit") if p.get("limit") is not None else 50)
    lines = [{"n": i + 1, "t": t} for i, t in enumerate(task.log)]
    total = len(lines)
    if not lines:
        lines, total = [{"n": 1, "t": "no content"}], 1
    sel = lines[start:] if limit == 0 else lines[start:start + limit]
    return sel, {"total": total}


# ---------------------------------------------------------------- backup jobs

BACKUP_INTERNAL = ("node", "id")


def _job_out(job):
    out = dict(job)
    for k in ("enabled", "all"):
        if k in out:
            out[k] = int(out[k])
    return out


def h_backup_list(c, p, user):
    return [_job_out(j) for _, j in sorted(c.backup_jobs.items())]


def h_backup_get(c, p, user):
    job = c.backup_jobs.get(p["id"])
    if not job:
        raise die("Job '%s' does not exist\n" % p["id"])
    return _job_out(job)


def _check_job(job):
    if not (job.get("vmid") or job.get("all") == "1" or job.get("pool")):
        raise param_exc({"vmid": "please specify one of 'vmid', 'all' or 'pool'"})
    if job.get("all") == "1" and job.get("vmid"):
        raise param_exc({"vmid": "option conflicts with option 'all'"})


def h_backup_create(c, p, user):
    job = {k: v for k, v in p.items() if v is not None}
    jid = job.pop("id", None) or "backup-%08x-%04x" % (random.getrandbits(32), random.getrandbits(16))
    if jid in c.backup_jobs:
        raise die("Job '%s' already exists\n" % jid)
    job.setdefault("schedule", job.pop("starttime", None) or "00:00")
    job.setdefault("enabled", "1")
    job["type"] = "vzdump"
    job["id"] = jid
    _check_job(job)
    if job.get("storage"):
        c.storage_cfg(job["storage"])
    c.backup_jobs[jid] = job
    return None


def h_backup_update(c, p, user):
    job = c.backup_jobs.get(p["id"])
    if not job:
        raise die("job '%s' does not exist\n" % p["id"])
    new = dict(job)
    for k in schema.split_list(p.get("delete") or ""):
        new.pop(k, None)
    for k, v in p.items():
        if k in ("id", "delete", "digest") or v is None:
            continue
        new[k] = v
    _check_job(new)
    c.backup_jobs[p["id"]] = new
    return None


def h_backup_delete(c, p, user):
    if p["id"] not in c.backup_jobs:
        raise die("job '%s' does not exist\n" % p["id"])
    del c.backup_jobs[p["id"]]
    return None


# ---------------------------------------------------------------- upload

FILE_STORAGE_TYPES = ("dir", "nfs", "cifs", "cephfs", "btrfs", "glusterfs")


def normalize_content_filename(name):
    name = name[:-1] if name.endswith("\n") else name
    name = re.sub(r"^.*[/\\]", "", name, flags=re.S)
    return re.sub(r"[^a-zA-Z0-9_.-]", "_", name)


def vztmpl_format(name):
    m = re.search(r"\.tar(?:\.(gz|xz|zst|bz2))?$", name, re.I)
    return "t" + m.group(1).lower() if m and m.group(1) else "tar"


def qcow2_info(path):
    """(virtual size, has backing file) from a qcow2 header, or None."""
    with open(path, "rb") as f:
        h = f.read(32)
    if len(h) < 32 or h[:4] != b"QFI\xfb":
        return None
    backing = int.from_bytes(h[8:16], "big")
    return int.from_bytes(h[24:32], "big"), backing != 0


def upload_check(c, p, user):
    """The synchronous part of the upload API call (before fork_worker)."""
    node, storeid, content = p["node"], p["storage"], p["content"]
    scfg = c.storage_check_enabled(storeid, node)
    if scfg["type"] not in FILE_STORAGE_TYPES:
        raise die("can't upload to storage type '%s'\n" % scfg["type"])
    filename = normalize_content_filename(p["filename"])
    if content == "iso":
        if not re.search(r"[^/]+\.(?:iso|img)$", filename, re.I):
            raise param_exc({"filename": "wrong file extension"})
    elif content == "vztmpl":
        rx = r"[^/]+\.(?:(tar)(?!\.)|tar\.(gz|xz|zst|bz2))$" if c.schema_version() == "9.1" \
            else r"[^/]+\.tar\.(gz|xz|zst|bz2)$"
        if not re.search(rx, filename, re.I):
            raise param_exc({"filename": "wrong file extension"})
    elif content == "import":
        if not re.search(r"[a-zA-Z0-9\-.+=_]+\.(ova|qcow2|raw|vmdk)$", filename):
            raise param_exc({"filename": "invalid filename or wrong extension"})
    else:
        raise param_exc({"content": "upload content type '%s' not allowed" % content})
    if content not in c.content_of(scfg):
        raise die("storage '%s' does not support '%s' content\n" % (storeid, content))
    return filename


def h_upload(c, p, user, tmp_path, digest, fault):
    """Called once the whole body is on disk at tmp_path. `digest` is the
    hex digest of the algorithm named in checksum-algorithm (or None)."""
    node, storeid, content = p["node"], p["storage"], p["content"]
    try:
        filename = upload_check(c, p, user)
    except ApiError:
        _unlink(tmp_path)
        raise
    sub = {"iso": "template/iso", "vztmpl": "template/cache", "import": "import"}[content]
    scfg = c.storage_cfg(storeid)
    dest_shown = "%s/%s/%s" % (scfg.get("path", "/var/lib/vz"), sub, filename)
    size = os.path.getsize(tmp_path)

    def work(task):
        task.log.append("starting file import from: %s" % tmp_path)
        try:
            if p.get("checksum-algorithm"):
                if digest.lower() == p["checksum"].lower():
                    task.log.append("calculating checksum...OK, checksum verified")
                else:
                    task.log.append("calculating checksum...")
                    raise TaskError("checksum mismatch: got '%s' != expect '%s'\n" % (digest, p["checksum"]))
            if content == "import" and filename.endswith(".qcow2"):
                info = qcow2_info(tmp_path)
                if info is None:
                    raise TaskError("qemu-img: Could not open '%s': Image is not in qcow2 format\n" % tmp_path)
                if info[1]:
                    raise TaskError("backing file not allowed for untrusted image '%s'!\n" % tmp_path)
        except TaskError:
            _unlink(tmp_path)
            raise
        task.log.extend(["target node: %s" % node, "target file: %s" % dest_shown,
                         "file size is: %d" % size, "command: cp -- %s %s" % (tmp_path, dest_shown)])
        dest = os.path.join(c.storage_dir(storeid, node, content), filename)
        os.replace(tmp_path, dest)
        fmt = {"iso": "iso", "vztmpl": vztmpl_format(filename)}.get(content) or filename.rsplit(".", 1)[-1]
        vol = {"content": content, "format": fmt, "size": size, "ctime": int(time.time()), "path": dest}
        if content == "import" and fmt == "qcow2":
            vol["virtual_size"] = qcow2_info(dest)[0]
        elif content == "import":
            vol["virtual_size"] = size
        c.vols(storeid, node)["%s/%s" % (content, filename)] = vol
        task.log.append("finished file import successfully")

    def failed_cleanup(task):
        _unlink(tmp_path)
        raise TaskError(fault)

    if fault:
        return c.start_task(node, "imgcopy", "", user, failed_cleanup)
    return c.start_task(node, "imgcopy", "", user, work)


def _unlink(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
