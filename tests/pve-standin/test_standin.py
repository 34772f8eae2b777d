"""Self-tests of the PVE API stand-in: the real process, driven with curl.

Run: python3 -m unittest discover -s tests/pve-standin -p 'test_*.py'
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
STANDIN = os.path.join(HERE, "pve_standin.py")
SECRET = "8a1c0000-1111-2222-3333-444455556666"
TOKEN = "PVEAPIToken=root@pam!imgbuild=" + SECRET
WEAK = "PVEAPIToken=deploy@pve!weak=weak-secret"
UPID_RE = re.compile(r"UPID:pve:[0-9A-F]{8}:[0-9A-F]{8}:[0-9A-F]{8}:(\w+):(\d*):root@pam!imgbuild:")
ALL_PRIVS = ["VM.Allocate", "VM.Audit", "VM.Config.Disk", "VM.Config.CPU", "VM.Config.Memory",
             "VM.Config.Network", "VM.Config.Options", "VM.Config.Cloudinit", "VM.Config.CDROM",
             "VM.Config.HWType", "VM.PowerMgmt", "VM.Snapshot", "Datastore.Allocate",
             "Datastore.AllocateSpace", "Datastore.AllocateTemplate", "Datastore.Audit", "SDN.Use",
             "Sys.Audit", "Sys.Modify", "VM.Backup"]


def config(version="8.4.1"):
    return {
        "version": version,
        "nodes": [{"name": "pve", "online": True, "bridges": ["vmbr0"], "storages": [
            {"storage": "local", "type": "dir", "content": ["iso", "vztmpl", "import", "backup", "snippets"],
             "enabled": True, "shared": False, "total": 100000000000},
            {"storage": "local-lvm", "type": "lvmthin", "content": ["images", "rootdir"], "enabled": True,
             "shared": False, "total": 500000000000}]}],
        "tokens": [{"userid": "root@pam", "tokenid": "imgbuild", "secret": SECRET, "privileges": {"/": ALL_PRIVS}},
                   {"userid": "deploy@pve", "tokenid": "weak", "secret": "weak-secret",
                    "privileges": {"/": ["VM.Audit", "Datastore.Audit"], "/storage": ["Datastore.Audit"]}}],
        "task_ms": 150,
        "auth_fail_delay_ms": 0,
    }


class StandIn:
    def __init__(self, cfg):
        self.dir = tempfile.mkdtemp(prefix="pve-standin-test-")
        path = os.path.join(self.dir, "config.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        self.state = os.path.join(self.dir, "state")
        self.proc = subprocess.Popen([sys.executable, STANDIN, "--config", path, "--state", self.state],
                                     stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("stand-in did not start (exit %s)" % self.proc.wait())
        self.info = json.loads(line)
        self.base = "https://127.0.0.1:%d" % self.info["port"]

    def close(self):
        self.proc.terminate()
        self.proc.wait(10)
        self.proc.stdout.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def curl(self, method, path, *args, token=TOKEN, api=True):
        """(http status, parsed body or text, curl exit code)."""
        url = self.base + ("/api2/json" if api else "") + path
        cmd = ["curl", "-sS", "-k", "-X", method, "-o", "-", "-w", "\n%{http_code}", url]
        if token:
            cmd += ["-H", "Authorization: " + token]
        r = subprocess.run(cmd + list(args), capture_output=True, text=True)
        out, _, code = r.stdout.rpartition("\n")
        try:
            body = json.loads(out) if out else None
        except ValueError:
            body = out
        return int(code or 0), body, r.returncode

    def ok(self, method, path, *args, **kw):
        st, body, rc = self.curl(method, path, *args, **kw)
        if st != 200:
            raise AssertionError("%s %s: %s %s" % (method, path, st, body))
        return body["data"]

    def wait(self, upid, timeout=60):
        enc = urllib.parse.quote(upid, safe="")
        end = time.time() + timeout
        while time.time() < end:
            st = self.ok("GET", "/nodes/%s/tasks/%s/status" % (upid.split(":")[1], enc))
            if st["status"] == "stopped":
                return st
            time.sleep(0.05)
        raise AssertionError("task %s still running after %d s" % (upid, timeout))

    def until(self, what, cond, timeout=60):
        """Polls `cond` until it is true (a task's effect on a loaded machine)."""
        end = time.time() + timeout
        while not cond():
            if time.time() >= end:
                raise AssertionError("%s: not within %d s" % (what, timeout))
            time.sleep(0.05)

    def control(self, method, path, data=None):
        args = ["-H", "Content-Type: application/json", "--data-binary", json.dumps(data)] if data is not None else []
        st, body, _ = self.curl(method, "/__standin/" + path, *args, token=None, api=False)
        assert st == 200, (path, st, body)
        return body


def enc(**kw):
    return ["--data-urlencode", "%s=%s" % kw.popitem()] if len(kw) == 1 else \
        [x for k, v in kw.items() for x in ("--data-urlencode", "%s=%s" % (k, v))]


class StandInTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = StandIn(config())
        cls.tmp = tempfile.mkdtemp(prefix="pve-standin-files-")
        cls.qcow2 = os.path.join(cls.tmp, "debian.qcow2")
        with open(cls.qcow2, "wb") as f:  # a qcow2 v3 header: 3 GiB virtual size
            f.write(b"QFI\xfb" + (3).to_bytes(4, "big") + bytes(16) + (3 << 30).to_bytes(8, "big") + bytes(480))
        cls.iso = os.path.join(cls.tmp, "seed.iso")
        with open(cls.iso, "wb") as f:
            f.write(os.urandom(70000))

    @classmethod
    def tearDownClass(cls):
        cls.s.close()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.s.control("PUT", "faults", {"rate": 0})

    def upload(self, content, path, name=None, checksum=None, extra=(), token=TOKEN):
        args = ["-F", "content=" + content]
        if checksum:
            args += ["-F", "checksum-algorithm=sha256", "-F", "checksum=" + checksum]
        args += ["-F", "filename=@%s%s" % (path, ";filename=" + name if name else "")]
        return self.s.curl("POST", "/nodes/pve/storage/local/upload", *(args + list(extra)), token=token)

    def test_certificate_and_fingerprint(self):
        out = subprocess.run(["openssl", "x509", "-in", self.s.info["cert"], "-noout", "-fingerprint",
                              "-sha256", "-subject", "-ext", "subjectAltName"],
                             capture_output=True, text=True, check=True).stdout
        self.assertIn("Fingerprint=" + self.s.info["fingerprint"], out)
        self.assertIn("CN = pve", out)
        self.assertIn("IP Address:127.0.0.1", out)
        self.assertEqual(os.stat(os.path.join(self.s.state, "pve-ssl.key")).st_mode & 0o777, 0o600)
        # a real client verifying against the certificate (no -k)
        r = subprocess.run(["curl", "-sS", "--cacert", self.s.info["cert"], "-H", "Authorization: " + TOKEN,
                            self.s.base + "/api2/json/version"], capture_output=True, text=True)
        self.assertEqual(json.loads(r.stdout)["data"]["release"], "8.4", r.stderr)

    def test_schema_rejects_unknown_param_bad_enum_bad_net0_subkey(self):
        st, body, _ = self.s.curl("POST", "/nodes/pve/qemu", *enc(
            vmid="150", bogus="1", scsihw="nope", net0="virtio,bridge=vmbr0,colour=blue", onboot="true"))
        self.assertEqual(st, 400)
        self.assertEqual(body["message"], "Parameter verification failed.\n")
        e = body["errors"]
        self.assertEqual(e["bogus"], "property is not defined in schema and the schema does not allow additional properties")
        self.assertTrue(e["scsihw"].startswith("value 'nope' does not have a value in the enumeration 'lsi, "), e)
        self.assertEqual(e["net0"], "invalid format - invalid key in comma-separated list property: colour\n")
        self.assertEqual(e["onboot"], "type check ('boolean') failed - got 'true'")
        self.assertNotIn("150", self.s.control("GET", "state")["guests"])

    def test_form_body_splits_on_semicolon(self):
        upid = self.s.ok("POST", "/nodes/pve/qemu", "--data-binary", "vmid=151;cores=3;name=semi&memory=1024")
        self.assertEqual(self.s.wait(upid)["exitstatus"], "OK")
        conf = self.s.ok("GET", "/nodes/pve/qemu/151/config")
        self.assertEqual((conf["cores"], conf["name"], conf["memory"]), (3, "semi", "1024"))
        # an unencoded ';' inside a value cuts it: "tags=a;b" sends a parameter "b"
        st, body, _ = self.s.curl("PUT", "/nodes/pve/qemu/151/config", "--data-binary", "tags=a;b")
        self.assertEqual(st, 400)
        self.assertIn("b", body["errors"])

    def test_upload_checksums(self):
        import hashlib
        with open(self.qcow2, "rb") as f:
            good = hashlib.sha256(f.read()).hexdigest()
        st, body, _ = self.upload("import", self.qcow2, checksum=good)
        self.assertEqual(st, 200, body)
        self.assertRegex(body["data"], UPID_RE)
        self.assertEqual(UPID_RE.fullmatch(body["data"]).group(1), "imgcopy")
        self.assertEqual(self.s.wait(body["data"])["exitstatus"], "OK")
        st, body, _ = self.upload("iso", self.iso, name="bad.iso", checksum="00" * 32)
        self.assertEqual(st, 200, body)
        status = self.s.wait(body["data"])
        self.assertTrue(status["exitstatus"].startswith("checksum mismatch: got '"), status)
        self.assertTrue(status["exitstatus"].endswith("' != expect '%s'" % ("00" * 32)), status)
        vols = {v["volid"]: v for v in self.s.ok("GET", "/nodes/pve/storage/local/content")}
        self.assertEqual(vols["local:import/debian.qcow2"]["size"], os.path.getsize(self.qcow2))
        self.assertNotIn("local:iso/bad.iso", vols)
        self.assertEqual(os.listdir(os.path.join(self.s.state, "tmp")), [])

    def test_upload_needs_content_length(self):
        st, body, _ = self.upload("iso", self.iso, extra=["-H", "Transfer-Encoding: chunked"])
        self.assertEqual((st, body), (501, "chunked transfer encoding not supported"))
        # no Content-Length and no chunking: the body is not read as an upload at all
        st, body, _ = self.s.curl("POST", "/nodes/pve/storage/local/upload", "--http1.0", "-H", "Content-Length:",
                                  "-H", "Content-Type: multipart/form-data; boundary=x", "--data-binary", "@" + self.iso)
        self.assertEqual(st, 400)
        self.assertEqual(body["errors"]["content"], "property is missing and it is not optional")
        # the file part before `content`: PVE's parser never sees `content`
        st, body, _ = self.s.curl("POST", "/nodes/pve/storage/local/upload",
                                  "-F", "filename=@" + self.iso, "-F", "content=iso")
        self.assertEqual((st, body["errors"]), (400, {"content": "property is missing and it is not optional"}))
        # a file part not named `filename`
        st, body, _ = self.s.curl("POST", "/nodes/pve/storage/local/upload", "-F", "content=iso", "-F", "file=@" + self.iso)
        self.assertEqual(st, 500)
        self.assertEqual(body, "wrong field name 'file' for file upload, expected 'filename'")

    def test_create_task_lifecycle(self):
        # long enough to see the task running and the lock on a loaded machine
        self.s.control("PUT", "config", {"task_ms": 1500})
        self.addCleanup(self.s.control, "PUT", "config", {"task_ms": 150})
        upid = self.s.ok("POST", "/nodes/pve/qemu", *enc(vmid="152", cores="2", name="life",
                                                        scsi0="local-lvm:4", net0="virtio,bridge=vmbr0"))
        m = UPID_RE.fullmatch(upid)
        self.assertEqual(m.groups(), ("qmcreate", "152"))
        enc_upid = urllib.parse.quote(upid, safe="")
        st = self.s.ok("GET", "/nodes/pve/tasks/%s/status" % enc_upid)
        self.assertEqual((st["status"], st["user"], st["tokenid"], st["type"]), ("running", "root@pam", "imgbuild", "qmcreate"))
        res = [r for r in self.s.ok("GET", "/cluster/resources", "-G", "-d", "type=vm") if r["vmid"] == 152]
        self.assertEqual(res[0]["lock"], "create")
        st = self.s.wait(upid)
        self.assertEqual(st["exitstatus"], "OK")
        log = self.s.ok("GET", "/nodes/pve/tasks/%s/log" % enc_upid)
        self.assertEqual(log[-1], {"n": len(log), "t": "TASK OK"})
        res = [r for r in self.s.ok("GET", "/cluster/resources", "-G", "-d", "type=vm") if r["vmid"] == 152][0]
        self.assertNotIn("lock", res)
        self.assertEqual((res["name"], res["maxcpu"], res["maxdisk"], res["status"]), ("life", 2, 4 << 30, "stopped"))
        conf = self.s.ok("GET", "/nodes/pve/qemu/152/config")
        self.assertEqual(conf["scsi0"], "local-lvm:vm-152-disk-0,size=4G")
        self.assertRegex(conf["net0"], r"^virtio=BC:24:11:[0-9A-F:]{8},bridge=vmbr0$")
        st, body, _ = self.s.curl("POST", "/nodes/pve/qemu", *enc(vmid="152"))
        self.assertEqual((st, body["message"]), (500, "unable to create VM 152 - VM 152 already exists on node 'pve'\n"))
        # start, destroy refused while running, stop, destroy
        self.assertEqual(self.s.wait(self.s.ok("POST", "/nodes/pve/qemu/152/status/start"))["exitstatus"], "OK")
        st, body, _ = self.s.curl("DELETE", "/nodes/pve/qemu/152")
        self.assertEqual((st, body["message"]), (500, "VM 152 is running - destroy failed\n"))
        self.s.wait(self.s.ok("POST", "/nodes/pve/qemu/152/status/stop"))
        self.s.wait(self.s.ok("DELETE", "/nodes/pve/qemu/152", "-G", "-d", "purge=1", "-d", "destroy-unreferenced-disks=1"))
        state = self.s.control("GET", "state")
        self.assertNotIn("152", state["guests"])
        self.assertNotIn("local-lvm:vm-152-disk-0", state["volumes"]["pve"]["local-lvm"])

    def test_import_from_and_resize(self):
        self.s.wait(self.upload("import", self.qcow2, name="vm.qcow2")[1]["data"])
        self.s.wait(self.upload("iso", self.iso, name="seed-160.iso")[1]["data"])
        upid = self.s.ok("POST", "/nodes/pve/qemu", *enc(
            vmid="160", scsi0="local-lvm:0,import-from=local:import/vm.qcow2,discard=on",
            ide2="local:iso/seed-160.iso,media=cdrom", start="1", serial0="socket",
            sshkeys=urllib.parse.quote("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a@b\n", safe="")))
        self.assertEqual(self.s.wait(upid)["exitstatus"], "OK")
        conf = self.s.ok("GET", "/nodes/pve/qemu/160/config")
        self.assertEqual(conf["scsi0"], "local-lvm:vm-160-disk-0,discard=on,size=3G")
        self.assertEqual(self.s.ok("GET", "/nodes/pve/qemu/160/status/current")["status"], "running")
        st = self.s.wait(self.s.ok("PUT", "/nodes/pve/qemu/160/resize", *enc(disk="scsi0", size="+2G")))
        self.assertEqual(st["exitstatus"], "OK")
        self.assertEqual(self.s.ok("GET", "/nodes/pve/qemu/160/config")["scsi0"], "local-lvm:vm-160-disk-0,discard=on,size=5G")
        st = self.s.wait(self.s.ok("PUT", "/nodes/pve/qemu/160/resize", *enc(disk="scsi0", size="4G")))
        self.assertEqual(st["exitstatus"], "shrinking disks is not supported")
        # raw spaces in sshkeys are refused (it must itself be percent-encoded)
        st, body, _ = self.s.curl("PUT", "/nodes/pve/qemu/160/config", *enc(sshkeys="ssh-ed25519 AAAA a@b"))
        self.assertEqual(st, 400)
        self.assertTrue(body["errors"]["sshkeys"].startswith("invalid format - invalid urlencoded string"))

    def test_lxc_create(self):
        tmpl = os.path.join(self.tmp, "debian-12-standard_12.7-1_amd64.tar.zst")
        with open(tmpl, "wb") as f:
            f.write(b"\x28\xb5\x2f\xfd" + os.urandom(1000))
        self.s.wait(self.upload("vztmpl", tmpl)[1]["data"])
        upid = self.s.ok("POST", "/nodes/pve/lxc", *enc(
            vmid="200", ostemplate="local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst", rootfs="local-lvm:8",
            net0="name=eth0,bridge=vmbr0,ip=192.168.1.200/24,gw=192.168.1.1,hwaddr=BC:24:11:00:00:01",
            unprivileged="1", features="nesting=1", nameserver="192.168.1.1", hostname="minio",
            onboot="1", start="1", tags="imgbuild;lab", cores="2", memory="2048",
            **{"ssh-public-keys": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a@b"}))
        self.assertEqual(self.s.wait(upid)["exitstatus"], "OK")
        conf = self.s.ok("GET", "/nodes/pve/lxc/200/config")
        self.assertEqual(conf["rootfs"], "local-lvm:vm-200-disk-0,size=8G")
        self.assertEqual(conf["net0"], "name=eth0,bridge=vmbr0,gw=192.168.1.1,hwaddr=BC:24:11:00:00:01,ip=192.168.1.200/24,type=veth")
        res = [r for r in self.s.ok("GET", "/cluster/resources", "-G", "-d", "type=vm") if r["vmid"] == 200][0]
        self.assertEqual((res["type"], res["name"], res["status"], res["tags"]), ("lxc", "minio", "running", "imgbuild;lab"))
        # a missing bridge fails the start task with PVE's text
        self.s.wait(self.s.ok("POST", "/nodes/pve/lxc/200/status/stop"))
        self.s.ok("PUT", "/nodes/pve/lxc/200/config", *enc(net0="name=eth0,bridge=vmbr9"))
        st = self.s.wait(self.s.ok("POST", "/nodes/pve/lxc/200/status/start"))
        self.assertEqual(st["exitstatus"], "bridge 'vmbr9' does not exist")

    def test_auth_401_and_403(self):
        st, body, _ = self.s.curl("GET", "/version", token=None)
        self.assertEqual(st, 401)
        st, body, _ = self.s.curl("GET", "/version", token="PVEAPIToken=root@pam!imgbuild=wrong")
        self.assertEqual(st, 401)
        self.assertEqual(self.s.curl("GET", "/version", token="PVEAPIToken root@pam!imgbuild=" + SECRET)[0], 200)
        st, body, _ = self.s.curl("POST", "/nodes/pve/qemu", *enc(vmid="170"), token=WEAK)
        self.assertEqual((st, body["message"]), (403, "Permission check failed\n"))
        st, body, _ = self.s.curl("DELETE", "/nodes/pve/qemu/170", token=WEAK)
        self.assertEqual((st, body["message"]), (403, "Permission check failed (/vms/170, VM.Allocate)\n"))
        st, body, _ = self.upload("iso", self.iso, token=WEAK)
        self.assertEqual(st, 403)  # checked before the body is read, no JSON body
        perms = self.s.ok("GET", "/access/permissions", token=WEAK)
        weak = {"Datastore.Audit": 1, "VM.Audit": 1}
        self.assertEqual(perms, {"/": weak, "/access": weak, "/access/groups": weak, "/nodes": weak, "/pool": weak,
                                 "/sdn": weak, "/storage": {"Datastore.Audit": 1}, "/vms": weak})
        self.assertEqual(self.s.ok("GET", "/access/permissions", "-G", "-d", "path=/storage/local", token=WEAK),
                         {"/storage/local": {"Datastore.Audit": 1}})

    def test_unknown_path_501(self):
        st, body, _ = self.s.curl("GET", "/nodes/pve/nosuch")
        self.assertEqual((st, body["message"]), (501, "Method 'GET /nodes/pve/nosuch' not implemented\n"))

    def test_fault_drop_after_applies_the_effect(self):
        self.s.control("POST", "requests/reset")
        self.s.control("PUT", "faults", {"rate": 1.0, "seed": 7, "kinds": ["drop_after"]})
        st, body, rc = self.s.curl("POST", "/nodes/pve/qemu", *enc(vmid="180", cores="1"))
        self.assertEqual((st, rc), (0, 52), body)  # curl: empty reply from server
        self.s.control("PUT", "faults", {"rate": 0})
        reqs = self.s.control("GET", "requests")
        self.assertEqual(reqs[0]["fault"], "drop_after")
        self.assertTrue(reqs[0]["mutating"])
        self.s.until("guest 180 created", lambda: "180" in self.s.control("GET", "state")["guests"])
        self.assertEqual(self.s.control("GET", "state")["guests"]["180"]["config"]["cores"], "1")

    def test_fault_task_fail_has_no_effect(self):
        self.s.control("PUT", "faults", {"rate": 1.0, "seed": 1, "kinds": ["task_fail"]})
        upid = self.s.ok("POST", "/nodes/pve/qemu", *enc(vmid="181"))
        self.s.control("PUT", "faults", {"rate": 0})
        st = self.s.wait(upid)
        self.assertNotEqual(st["exitstatus"], "OK")
        self.assertNotIn("181", self.s.control("GET", "state")["guests"])


    def test_json_body_and_config_update(self):
        body = json.dumps({"vmid": 190, "cores": 1, "onboot": True, "name": "js", "scsi0": "local-lvm:2"})
        upid = self.s.ok("POST", "/nodes/pve/qemu", "-H", "Content-Type: application/json", "--data-binary", body)
        self.assertEqual(self.s.wait(upid)["exitstatus"], "OK")
        conf = self.s.ok("GET", "/nodes/pve/qemu/190/config")
        self.assertEqual((conf["onboot"], conf["cores"]), (1, 1))
        st, b2, _ = self.s.curl("PUT", "/nodes/pve/qemu/190/config", "-H", "Content-Type: application/json",
                                "--data-binary", json.dumps({"cores": "two"}))
        self.assertEqual(b2["errors"], {"cores": "type check ('integer') failed - got 'two'"})
        self.assertIsNone(self.s.ok("PUT", "/nodes/pve/qemu/190/config", *enc(cores="4", delete="onboot")))
        conf = self.s.ok("GET", "/nodes/pve/qemu/190/config")
        self.assertEqual(conf["cores"], 4)
        self.assertNotIn("onboot", conf)
        st, b3, _ = self.s.curl("PUT", "/nodes/pve/qemu/190/config", *enc(cores="2", digest="0" * 40))
        self.assertEqual((st, b3["message"]), (500, "detected modified configuration - file changed by other user? Try again.\n"))
        upid = self.s.ok("POST", "/nodes/pve/qemu/190/config", *enc(memory="4096"))
        self.assertEqual(self.s.wait(upid)["exitstatus"], "OK")
        self.assertEqual(self.s.ok("GET", "/nodes/pve/qemu/190/config")["memory"], "4096")

    def test_snapshots(self):
        self.s.wait(self.s.ok("POST", "/nodes/pve/qemu", *enc(vmid="191", cores="1")))
        self.s.wait(self.s.ok("POST", "/nodes/pve/qemu/191/snapshot", *enc(snapname="before", description="pre")))
        self.s.ok("PUT", "/nodes/pve/qemu/191/config", *enc(cores="8"))
        snaps = self.s.ok("GET", "/nodes/pve/qemu/191/snapshot")
        self.assertEqual([x["name"] for x in snaps], ["before", "current"])
        self.assertEqual(snaps[1]["parent"], "before")
        st = self.s.wait(self.s.ok("POST", "/nodes/pve/qemu/191/snapshot", *enc(snapname="before")))
        self.assertEqual(st["exitstatus"], "snapshot name 'before' already used")
        self.assertEqual(self.s.wait(self.s.ok("POST", "/nodes/pve/qemu/191/snapshot/before/rollback"))["exitstatus"], "OK")
        self.assertEqual(self.s.ok("GET", "/nodes/pve/qemu/191/config")["cores"], 1)
        self.s.wait(self.s.ok("DELETE", "/nodes/pve/qemu/191/snapshot/before"))
        self.assertEqual([x["name"] for x in self.s.ok("GET", "/nodes/pve/qemu/191/snapshot")], ["current"])

    def test_backup_jobs(self):
        self.assertIsNone(self.s.ok("POST", "/cluster/backup", *enc(
            id="imgbuild-lab", vmid="100,200", storage="local", schedule="sun 01:00", mode="snapshot",
            **{"prune-backups": "keep-last=3"})))
        job = self.s.ok("GET", "/cluster/backup/imgbuild-lab")
        self.assertEqual((job["vmid"], job["schedule"], job["enabled"]), ("100,200", "sun 01:00", 1))
        self.assertEqual([j["id"] for j in self.s.ok("GET", "/cluster/backup")], ["imgbuild-lab"])
        st, body, _ = self.s.curl("POST", "/cluster/backup", *enc(id="imgbuild-lab", vmid="100"))
        self.assertEqual(st, 500)
        self.s.ok("PUT", "/cluster/backup/imgbuild-lab", *enc(vmid="100"))
        self.assertEqual(self.s.ok("GET", "/cluster/backup/imgbuild-lab")["vmid"], "100")
        self.s.ok("DELETE", "/cluster/backup/imgbuild-lab")
        self.assertEqual(self.s.ok("GET", "/cluster/backup"), [])

    def test_reassign_disk_to_another_vm(self):
        self.s.wait(self.s.ok("POST", "/nodes/pve/qemu", *enc(vmid="193", scsi1="local-lvm:2,serial=imgbuild-data")))
        self.s.wait(self.s.ok("POST", "/nodes/pve/qemu", *enc(vmid="194")))
        vol = self.s.ok("GET", "/nodes/pve/qemu/193/config")["scsi1"].split(",")[0]
        # a snapshot refers to it: no reassigning, no freeing
        self.s.wait(self.s.ok("POST", "/nodes/pve/qemu/193/snapshot", *enc(snapname="s1")))
        st, body, _ = self.s.curl("POST", "/nodes/pve/qemu/193/move_disk", *enc(**{"disk": "scsi1", "target-vmid": "194"}))
        self.assertEqual(st, 500, body)
        self.assertIn("snapshot", body["message"])
        self.s.wait(self.s.ok("DELETE", "/nodes/pve/qemu/193/snapshot/s1"))
        st = self.s.wait(self.s.ok("POST", "/nodes/pve/qemu/193/move_disk",
                                   *enc(**{"disk": "scsi1", "target-vmid": "194", "target-disk": "scsi1"})))
        self.assertEqual(st["exitstatus"], "OK")
        self.assertNotIn("scsi1", self.s.ok("GET", "/nodes/pve/qemu/193/config"))
        moved = self.s.ok("GET", "/nodes/pve/qemu/194/config")["scsi1"]
        self.assertTrue(moved.startswith("local-lvm:vm-194-disk-0,"), moved)
        self.assertIn("serial=imgbuild-data", moved)
        vols = self.s.control("GET", "state")["volumes"]["pve"]["local-lvm"]
        self.assertNotIn(vol, vols)
        self.assertIn("local-lvm:vm-194-disk-0", vols)
        # destroying the source leaves the moved volume alone
        self.s.wait(self.s.ok("DELETE", "/nodes/pve/qemu/193?purge=1&destroy-unreferenced-disks=1"))
        self.assertIn("local-lvm:vm-194-disk-0", self.s.control("GET", "state")["volumes"]["pve"]["local-lvm"])
        # an unused entry is freed when deleted
        self.s.ok("PUT", "/nodes/pve/qemu/194/config", *enc(delete="scsi1"))
        self.assertEqual(self.s.ok("GET", "/nodes/pve/qemu/194/config")["unused0"], "local-lvm:vm-194-disk-0")
        self.s.ok("PUT", "/nodes/pve/qemu/194/config", *enc(delete="unused0"))
        self.assertNotIn("local-lvm:vm-194-disk-0", self.s.control("GET", "state")["volumes"]["pve"]["local-lvm"])

    def test_vzdump_and_restore(self):
        """Backups as vzdump volumes; restores over the guest (force) and from nothing."""
        s = self.s
        s.wait(s.ok("POST", "/nodes/pve/qemu", *enc(vmid="181", cores="2", scsi0="local-lvm:3",
                                                     scsi1="local-lvm:2,serial=imgbuild-data",
                                                     scsi2="local-lvm:1,backup=0")))
        tmpl = os.path.join(self.tmp, "backup-test_1.0_amd64.tar.zst")
        with open(tmpl, "wb") as f:
            f.write(b"\x28\xb5\x2f\xfd" + os.urandom(100))
        s.wait(self.upload("vztmpl", tmpl)[1]["data"])
        s.wait(s.ok("POST", "/nodes/pve/lxc", *enc(vmid="281", ostemplate="local:vztmpl/backup-test_1.0_amd64.tar.zst",
                                                   rootfs="local-lvm:4", mp0="local-lvm:2,mp=/var/lib/minio,backup=1",
                                                   mp1="local-lvm:1,mp=/scratch", hostname="ct281", cores="1")))
        # not onto a storage without backup content
        st, body, _ = s.curl("POST", "/nodes/pve/vzdump", *enc(vmid="181", storage="local-lvm"))
        self.assertEqual(st, 500, body)
        self.assertIn("wrong content type", body["message"])
        upid = s.ok("POST", "/nodes/pve/vzdump", *enc(**{"vmid": "181,281", "storage": "local", "mode": "snapshot",
                                                         "compress": "zstd", "notes-template": "{{guestname}} {{vmid}}"}))
        self.assertEqual(UPID_RE.match(upid).group(1), "vzdump")
        self.assertEqual(s.wait(upid)["exitstatus"], "OK")
        backups = s.ok("GET", "/nodes/pve/storage/local/content", "-G", "-d", "content=backup", "-d", "vmid=281")
        self.assertEqual(len(backups), 1, backups)
        b = backups[0]
        self.assertRegex(b["volid"], r"^local:backup/vzdump-lxc-281-\d{4}_\d\d_\d\d-\d\d_\d\d_\d\d\.tar\.zst$")
        self.assertEqual((b["format"], b["subtype"], b["vmid"], b["notes"]), ("tar.zst", "lxc", 281, "ct281 281"))
        vm_backup = s.ok("GET", "/nodes/pve/storage/local/content", "-G", "-d", "content=backup", "-d", "vmid=181")[0]
        self.assertTrue(vm_backup["volid"].endswith(".vma.zst"), vm_backup)
        # the wrong kind of archive, an existing guest without force, a running guest
        st, body, _ = s.curl("POST", "/nodes/pve/qemu", *enc(vmid="181", archive=b["volid"], force="1"))
        self.assertEqual(st, 500, body)
        st, body, _ = s.curl("POST", "/nodes/pve/lxc", *enc(vmid="281", ostemplate=b["volid"], restore="1"))
        self.assertEqual(st, 500, body)
        self.assertIn("already exists", body["message"])
        s.wait(s.ok("POST", "/nodes/pve/lxc/281/status/start"))
        st, body, _ = s.curl("POST", "/nodes/pve/lxc", *enc(vmid="281", ostemplate=b["volid"], restore="1", force="1"))
        self.assertEqual((st, body["message"]), (500, "can't overwrite running container\n"))
        s.wait(s.ok("POST", "/nodes/pve/lxc/281/status/stop"))
        # changed since the backup: restore brings the backup's configuration back
        s.ok("PUT", "/nodes/pve/lxc/281/config", *enc(cores="3"))
        upid = s.ok("POST", "/nodes/pve/lxc", *enc(vmid="281", ostemplate=b["volid"], restore="1", force="1",
                                                   storage="local-lvm"))
        self.assertEqual(UPID_RE.match(upid).group(1), "vzrestore")
        self.assertEqual(s.wait(upid)["exitstatus"], "OK")
        conf = s.ok("GET", "/nodes/pve/lxc/281/config")
        self.assertEqual(conf["cores"], 1)
        self.assertEqual(conf["mp0"], "%s,mp=/var/lib/minio,backup=1,size=2G" % conf["mp0"].split(",")[0])
        vols = s.control("GET", "state")["volumes"]["pve"]["local-lvm"]
        mine = sorted(v for v, r in vols.items() if r.get("vmid") == 281)
        self.assertEqual(mine, sorted(conf[k].split(",")[0] for k in ("rootfs", "mp0", "mp1")),
                         "the old volumes were freed, the archive's recreated")
        self.assertEqual(vols[conf["rootfs"].split(",")[0]]["restored_from"], b["volid"])
        mp0 = vols[conf["mp0"].split(",")[0]]
        self.assertEqual((mp0["restored_from"], mp0["size"]), (b["volid"], 2 << 30))
        self.assertNotIn("restored_from", vols[conf["mp1"].split(",")[0]], "mp1 (backup=0) comes back empty")
        # a VM from nothing: its backed-up disks only (scsi2 had backup=0)
        s.wait(s.ok("DELETE", "/nodes/pve/qemu/181?purge=1"))
        st = s.wait(s.ok("POST", "/nodes/pve/qemu", *enc(vmid="181", archive=vm_backup["volid"], force="1")))
        self.assertEqual(st["exitstatus"], "OK")
        conf = s.ok("GET", "/nodes/pve/qemu/181/config")
        self.assertEqual((conf["cores"], "scsi2" in conf), (2, False))
        self.assertIn("serial=imgbuild-data", conf["scsi1"])
        # a weak token may not read the archive
        st, body, _ = s.curl("POST", "/nodes/pve/qemu", *enc(vmid="182", archive=vm_backup["volid"]), token=WEAK)
        self.assertEqual(st, 403, body)

    def test_fault_500_and_drop_before_do_nothing(self):
        self.s.control("PUT", "faults", {"rate": 1.0, "seed": 3, "kinds": ["500"]})
        st, body, _ = self.s.curl("POST", "/nodes/pve/qemu", *enc(vmid="182"))
        self.assertEqual(st, 500)
        self.s.control("PUT", "faults", {"rate": 1.0, "seed": 3, "kinds": ["drop_before"]})
        st, body, rc = self.s.curl("POST", "/nodes/pve/qemu", *enc(vmid="182"))
        self.assertEqual((st, rc), (0, 52))
        self.s.control("PUT", "faults", {"rate": 0})
        time.sleep(0.3)
        self.assertNotIn("182", self.s.control("GET", "state")["guests"])

    def test_faults_are_deterministic(self):
        def run():
            self.s.control("PUT", "faults", {"rate": 0.5, "seed": 42, "kinds": ["500", "latency"], "latency_ms": 1})
            self.s.control("POST", "requests/reset")
            for _ in range(12):
                self.s.curl("GET", "/version")
            return [r["fault"] for r in self.s.control("GET", "requests")]
        first = run()
        self.assertEqual(first, run())
        self.assertIn("500", first)
        self.assertIn(None, first)


class MultiNodeTest(unittest.TestCase):
    def test_three_nodes_shared_storage_offline_node(self):
        cfg = config()
        shared = {"storage": "nfs", "type": "nfs", "content": ["iso", "import", "images"], "shared": True,
                  "path": "/mnt/pve/nfs"}
        cfg["nodes"][0]["storages"].append(shared)
        for name in ("pve2", "pve3"):
            cfg["nodes"].append({"name": name, "online": name != "pve3", "bridges": ["vmbr0"],
                                 "storages": [dict(cfg["nodes"][0]["storages"][1])]})
        s = StandIn(cfg)
        try:
            self.assertEqual([(n["node"], n["status"]) for n in s.ok("GET", "/nodes")],
                             [("pve", "online"), ("pve2", "online"), ("pve3", "offline")])
            iso = os.path.join(s.dir, "a.iso")
            with open(iso, "wb") as f:
                f.write(b"x" * 4096)
            st, body, _ = s.curl("POST", "/nodes/pve/storage/nfs/upload", "-F", "content=iso", "-F", "filename=@" + iso)
            s.wait(body["data"])
            self.assertEqual([v["volid"] for v in s.ok("GET", "/nodes/pve2/storage/nfs/content")], ["nfs:iso/a.iso"])
            upid = s.ok("POST", "/nodes/pve2/qemu", *enc(vmid="300", ide2="nfs:iso/a.iso,media=cdrom", scsi0="local-lvm:1"))
            self.assertTrue(upid.startswith("UPID:pve2:"))
            st = s.curl("GET", "/nodes/pve/tasks/%s/status" % urllib.parse.quote(upid, safe=""))
            self.assertEqual(st[0], 400)  # a task is looked up on its own node
            self.assertEqual(s.wait(upid)["node"], "pve2")
            vm = [r for r in s.ok("GET", "/cluster/resources", "-G", "-d", "type=vm")][0]
            self.assertEqual((vm["vmid"], vm["node"]), (300, "pve2"))
            st, body, _ = s.curl("GET", "/nodes/pve3/storage")
            self.assertEqual(st, 595)
            st, body, _ = s.curl("GET", "/nodes/pve/qemu/300/config")
            self.assertEqual((st, body["message"]), (500, "Configuration file 'nodes/pve/qemu-server/300.conf' does not exist\n"))
        finally:
            s.close()


class VersionTest(unittest.TestCase):
    def test_pve_9_1_uses_its_schema(self):
        s = StandIn(config("9.1.2"))
        try:
            self.assertEqual(s.ok("GET", "/version")["release"], "9.1")
            upid = s.ok("POST", "/nodes/pve/qemu", *enc(vmid="100", **{"allow-ksm": "0"}))
            self.assertEqual(s.wait(upid)["exitstatus"], "OK")
            s.control("PUT", "config", {"version": "8.4.1"})
            st, body, _ = s.curl("POST", "/nodes/pve/qemu", *enc(vmid="101", **{"allow-ksm": "0"}))
            self.assertEqual(body["errors"]["allow-ksm"],
                             "property is not defined in schema and the schema does not allow additional properties")
        finally:
            s.close()


class OldVersionTest(unittest.TestCase):
    def test_pve_8_3_has_no_import(self):
        s = StandIn(config("8.3.5"))
        try:
            storages = s.ok("GET", "/nodes/pve/storage")
            self.assertEqual([x["content"] for x in storages if x["storage"] == "local"], ["backup,iso,snippets,vztmpl"])
            st, body, _ = s.curl("GET", "/nodes/pve/storage", "-G", "-d", "content=import")
            self.assertEqual((st, body["errors"]), (400, {"content": "invalid format - invalid content type 'import'\n"}))
            path = os.path.join(s.dir, "x.qcow2")
            with open(path, "wb") as f:
                f.write(b"QFI\xfb" + bytes(508))
            st, body, _ = s.curl("POST", "/nodes/pve/storage/local/upload", "-F", "content=import", "-F", "filename=@" + path)
            self.assertEqual(st, 400)
            self.assertEqual(body["errors"]["content"], "value 'import' does not have a value in the enumeration 'iso, vztmpl'")
            st, body, _ = s.curl("POST", "/nodes/pve/qemu", *enc(vmid="100", scsi0="local-lvm:0,import-from=local:import/x.qcow2"))
            self.assertEqual(st, 500)
            self.assertIn("import/x.qcow2", body["message"])
        finally:
            s.close()


FAKE_RUNNER = r"""#!/usr/bin/env python3
import json, os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
args = sys.argv[1:]
with open(os.path.join(here, "calls.jsonl"), "a") as f:
    f.write(json.dumps(args) + "\n")
def opt(name):
    return [args[i + 1] for i, a in enumerate(args) if a == name]
if "--config" in args:
    with open(opt("--config")[0]) as f:
        with open(os.path.join(here, "%s.conf" % args[1]), "w") as out:
            out.write(f.read())
# While the test holds the runner (a file `hold` beside it), it waits, so
# the test sees the task running and the guest locked however loaded the
# machine is; at most a minute.
end = time.time() + 60
while os.path.exists(os.path.join(here, "hold")) and time.time() < end:
    time.sleep(0.02)
if args[1] == "start" and os.path.exists(os.path.join(here, "fail")):
    sys.exit("error: bridge 'vmbr0' does not exist (in network namespace ns1)")
if args[1] == "create":
    for v in opt("--volume"):
        os.makedirs(v.split("=", 1)[1] + "/etc", exist_ok=True)
"""


class HandoffTest(unittest.TestCase):
    """The hand-off plumbing with a recording runner in place of
    `imgbuild pve-guest` (builder/tests/e2e_deploy.rs runs the real one)."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="pve-standin-handoff-")
        self.runner = os.path.join(self.tmp, "imgbuild")
        with open(self.runner, "w") as f:
            f.write(FAKE_RUNNER)
        os.chmod(self.runner, 0o755)
        cfg = config()
        cfg["task_ms"] = 50
        cfg["handoff"] = {"imgbuild": self.runner, "netns": "ns1"}
        self.s = StandIn(cfg)

    def tearDown(self):
        self.s.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def calls(self):
        with open(os.path.join(self.tmp, "calls.jsonl")) as f:
            return [json.loads(line) for line in f]

    def test_containers_go_to_the_runner_with_their_config(self):
        tmpl = os.path.join(self.tmp, "ubuntu-22.04-x.tar.zst")
        with open(tmpl, "wb") as f:
            f.write(b"\x28\xb5\x2f\xfd" + os.urandom(1000))
        self.s.wait(self.s.curl("POST", "/nodes/pve/storage/local/upload", "-F", "content=vztmpl",
                                "-F", "filename=@" + tmpl)[1]["data"])
        key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a@b"
        hold = os.path.join(self.tmp, "hold")
        open(hold, "w").close()
        upid = self.s.ok("POST", "/nodes/pve/lxc", *enc(
            vmid="200", ostemplate="local:vztmpl/ubuntu-22.04-x.tar.zst", rootfs="local-lvm:8",
            mp0="local-lvm:2,mp=/var/lib/minio,backup=1", hostname="minio", ostype="ubuntu",
            net0="name=eth0,bridge=vmbr0,ip=192.168.1.200/24,gw=192.168.1.1,hwaddr=02:00:00:00:00:01",
            **{"ssh-public-keys": key}))
        # the runner is held: the task is still running, the guest locked
        self.assertEqual(self.s.ok("GET", "/nodes/pve/tasks/%s/status" % urllib.parse.quote(upid, safe=""))["status"],
                         "running")
        self.assertEqual(self.s.ok("GET", "/nodes/pve/lxc/200/config")["lock"], "create")
        os.remove(hold)
        self.assertEqual(self.s.wait(upid)["exitstatus"], "OK")
        self.assertNotIn("lock", self.s.ok("GET", "/nodes/pve/lxc/200/config"))
        create = self.calls()[0]
        self.assertEqual(create[:2], ["pve-guest", "create"])
        stored = create[create.index("--ostemplate") + 1]
        with open(stored, "rb") as a, open(tmpl, "rb") as b:
            self.assertEqual(a.read(), b.read(), "the uploaded bytes, as stored")
        vols = dict(v.split("=", 1) for v in
                    [create[i + 1] for i, a in enumerate(create) if a == "--volume"])
        self.assertEqual(sorted(vols), ["local-lvm:vm-200-disk-0", "local-lvm:vm-200-disk-1"])
        with open(create[create.index("--ssh-public-keys") + 1]) as f:
            self.assertEqual(f.read(), key)

        self.assertEqual(self.s.wait(self.s.ok("POST", "/nodes/pve/lxc/200/status/start"))["exitstatus"], "OK")
        start = self.calls()[1]
        self.assertEqual(start[start.index("--netns") + 1], "ns1")
        with open(os.path.join(self.tmp, "start.conf")) as f:
            conf = f.read().splitlines()
        self.assertIn("net0: name=eth0,bridge=vmbr0,gw=192.168.1.1,hwaddr=02:00:00:00:00:01,"
                      "ip=192.168.1.200/24,type=veth", conf)
        self.assertIn("mp0: local-lvm:vm-200-disk-1,mp=/var/lib/minio,backup=1,size=2G", conf)
        self.assertEqual(self.s.control("GET", "state")["guests"]["200"]["status"], "running")

        # a runner failure fails the start task with its message; the guest stays stopped
        self.assertEqual(self.s.wait(self.s.ok("POST", "/nodes/pve/lxc/200/status/stop"))["exitstatus"], "OK")
        self.assertEqual(self.calls()[2][:2], ["pve-guest", "stop"])
        open(os.path.join(self.tmp, "fail"), "w").close()
        st = self.s.wait(self.s.ok("POST", "/nodes/pve/lxc/200/status/start"))
        self.assertIn("bridge 'vmbr0' does not exist (in network namespace ns1)", st["exitstatus"])
        self.assertEqual(self.s.control("GET", "state")["guests"]["200"]["status"], "stopped")

        # destroy: the runner stops it, the volume directories and run directory go
        self.assertTrue(all(os.path.isdir(p) for p in vols.values()))
        self.assertEqual(self.s.wait(self.s.ok("DELETE", "/nodes/pve/lxc/200"))["exitstatus"], "OK")
        self.assertEqual(self.calls()[-1][:2], ["pve-guest", "stop"])
        self.assertFalse(any(os.path.exists(p) for p in vols.values()))
        self.assertFalse(os.path.exists(os.path.join(self.s.state, "handoff", "run", "200")))


    def qemu_img_info(self, path):
        return json.loads(subprocess.run(["qemu-img", "info", "--output=json", path], check=True,
                                         capture_output=True, text=True).stdout)

    def test_vms_get_qcow2_disks_from_their_import_and_go_to_the_runner(self):
        img = os.path.join(self.tmp, "base.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "1G"], check=True)
        iso = os.path.join(self.tmp, "seed.iso")
        with open(iso, "wb") as f:
            f.write(os.urandom(4096))
        for content, path in (("import", img), ("iso", iso)):
            self.s.wait(self.s.curl("POST", "/nodes/pve/storage/local/upload", "-F", "content=" + content,
                                    "-F", "filename=@" + path)[1]["data"])
        upid = self.s.ok("POST", "/nodes/pve/qemu", *enc(
            vmid="100", name="devlab", cores="2", memory="2048", scsihw="virtio-scsi-single",
            scsi0="local-lvm:0,import-from=local:import/base.qcow2,discard=on",
            scsi1="local-lvm:1,serial=imgbuild-data,discard=on,backup=1",
            ide2="local:iso/seed.iso,media=cdrom", net0="virtio=02:00:00:00:00:02,bridge=vmbr0,firewall=0"))
        self.assertEqual(self.s.wait(upid)["exitstatus"], "OK")
        conf = self.s.ok("GET", "/nodes/pve/qemu/100/config")
        d0 = os.path.join(self.s.state, "handoff", "volumes", "local-lvm", conf["scsi0"].split(",")[0].split(":")[1])
        d1 = os.path.join(self.s.state, "handoff", "volumes", "local-lvm", conf["scsi1"].split(",")[0].split(":")[1])
        self.assertEqual([self.qemu_img_info(p)["virtual-size"] for p in (d0, d1)], [1 << 30, 1 << 30])
        self.assertEqual(self.s.wait(self.s.ok("PUT", "/nodes/pve/qemu/100/resize",
                                               *enc(disk="scsi0", size="3G")))["exitstatus"], "OK")
        self.assertEqual(self.qemu_img_info(d0)["virtual-size"], 3 << 30)

        self.assertEqual(self.s.wait(self.s.ok("POST", "/nodes/pve/qemu/100/status/start"))["exitstatus"], "OK")
        start = self.calls()[-1]
        self.assertEqual(start[start.index("--kind") + 1], "qemu")
        vols = dict(v.split("=", 1) for v in [start[i + 1] for i, a in enumerate(start) if a == "--volume"])
        self.assertEqual(sorted(vols.values())[:2], sorted([d0, d1]))
        with open(vols["local:iso/seed.iso"], "rb") as a, open(iso, "rb") as b:
            self.assertEqual(a.read(), b.read())
        self.assertEqual(self.s.wait(self.s.ok("POST", "/nodes/pve/qemu/100/status/stop"))["exitstatus"], "OK")
        self.assertEqual(self.calls()[-1][:2], ["pve-guest", "stop"])
        self.assertEqual(self.s.wait(self.s.ok("DELETE", "/nodes/pve/qemu/100"))["exitstatus"], "OK")
        self.assertFalse(os.path.exists(d0) or os.path.exists(d1))


class UploadMemoryTest(unittest.TestCase):
    def test_1gib_sparse_upload_keeps_rss_flat(self):
        s = StandIn(config())
        try:
            path = os.path.join(s.dir, "big.raw")
            with open(path, "wb") as f:
                f.truncate(1 << 30)
            st, body, _ = s.curl("POST", "/nodes/pve/storage/local/upload", "-F", "content=import",
                                 "-F", "filename=@" + path)
            self.assertEqual(st, 200, body)
            self.assertEqual(s.wait(body["data"], timeout=60)["exitstatus"], "OK")
            with open("/proc/%d/status" % s.proc.pid) as f:
                hwm = int(re.search(r"VmHWM:\s+(\d+) kB", f.read()).group(1))
            sys.stderr.write("\nstand-in VmHWM after a 1 GiB upload: %.1f MiB\n" % (hwm / 1024))
            self.assertLess(hwm, 64 * 1024)
            vols = {v["volid"]: v for v in s.ok("GET", "/nodes/pve/storage/local/content")}
            self.assertEqual(vols["local:import/big.raw"]["size"], 1 << 30)
        finally:
            s.close()


if __name__ == "__main__":
    unittest.main()
