#!/usr/bin/env python3
"""Proxmox VE API stand-in for imgbuild's deploy tests (test-only).

    pve_standin.py --config CONFIG.json --state DIR [--listen 127.0.0.1:0]

Serves /api2/json over HTTPS on loopback with a self-signed certificate made
into DIR, validates every request against the real schema of the configured
PVE version (tests/fixtures/pve-api/), keeps nodes, storages, volumes, guests
and tasks, and offers a control API under /__standin/. Prints one JSON line
{"port", "fingerprint", "cert"} once it listens. See README.md.
"""
import argparse
import hashlib
import json
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True  # write nothing outside the state directory

from standin import cluster as cl  # noqa: E402
from standin import backups as bk  # noqa: E402
from standin import guests as gu  # noqa: E402
from standin import handoff  # noqa: E402
from standin import schema  # noqa: E402
from standin.multipart import MultipartUpload, UploadError, parse_content_type  # noqa: E402

SCHEMA_DIR = os.path.join(HERE, "..", "fixtures", "pve-api")
LIMIT_MAX_POST = 512 * 1024
CHUNK = 64 * 1024
FAULT_MSG = {"task_fail": "injected fault (stand-in task_fail)\n"}


def load_schemas():
    out = {}
    for v in ("8.4", "9.1"):
        with open(os.path.join(SCHEMA_DIR, "pve-%s.json" % v), encoding="utf-8") as f:
            out[v] = json.load(f)
    return out


def content_enum_for(c, info):
    """Below 8.4 the upload `content` enum has no `import` (the schema of
    the version itself, as far as the stand-in models it)."""
    if c.has_import:
        return info
    info = json.loads(json.dumps(info))
    props = info["parameters"]["properties"]
    for k in ("content",):
        if k in props and "enum" in props[k]:
            props[k]["enum"] = [x for x in props[k]["enum"] if x != "import"]
    return info


def build_routes():
    """endpoint key -> (handler, kind) with kind "sync", "task" or "upload"."""
    R = {
        "GET /version": (lambda c, p, u, i, f: cl.h_version(c, p, u), "sync"),
        "GET /nodes": (lambda c, p, u, i, f: cl.h_nodes(c, p, u), "sync"),
        "GET /nodes/{node}/network": (lambda c, p, u, i, f: cl.h_network(c, p, u), "sync"),
        "GET /nodes/{node}/storage": (lambda c, p, u, i, f: cl.h_node_storage(c, p, u), "sync"),
        "GET /storage/{storage}": (lambda c, p, u, i, f: cl.h_storage_config(c, p, u), "sync"),
        "GET /nodes/{node}/storage/{storage}/content": (lambda c, p, u, i, f: cl.h_content(c, p, u), "sync"),
        "DELETE /nodes/{node}/storage/{storage}/content/{volume}":
            (lambda c, p, u, i, f: cl.h_content_delete(c, p, u, f), "task"),
        "POST /nodes/{node}/storage/{storage}/upload": (None, "upload"),
        "GET /cluster/resources": (lambda c, p, u, i, f: cl.h_resources(c, p, u), "sync"),
        "GET /access/permissions": (lambda c, p, u, i, f: cl.h_permissions(c, p, u), "sync"),
        "GET /nodes/{node}/tasks/{upid}/status": (lambda c, p, u, i, f: cl.h_task_status(c, p, u), "sync"),
        "GET /nodes/{node}/tasks/{upid}/log": (lambda c, p, u, i, f: cl.h_task_log(c, p, u), "sync"),
        "GET /cluster/backup": (lambda c, p, u, i, f: cl.h_backup_list(c, p, u), "sync"),
        "POST /cluster/backup": (lambda c, p, u, i, f: cl.h_backup_create(c, p, u), "sync"),
        "GET /cluster/backup/{id}": (lambda c, p, u, i, f: cl.h_backup_get(c, p, u), "sync"),
        "PUT /cluster/backup/{id}": (lambda c, p, u, i, f: cl.h_backup_update(c, p, u), "sync"),
        "DELETE /cluster/backup/{id}": (lambda c, p, u, i, f: cl.h_backup_delete(c, p, u), "sync"),
        "POST /nodes/{node}/qemu": (lambda c, p, u, i, f: gu.h_qemu_create(c, p, u, i, f), "task"),
        "POST /nodes/{node}/lxc": (lambda c, p, u, i, f: gu.h_lxc_create(c, p, u, i, f), "task"),
        "POST /nodes/{node}/qemu/{vmid}/config": (lambda c, p, u, i, f: gu.h_config_post(c, p, u, i, f), "task"),
        "POST /nodes/{node}/lxc/{vmid}/move_volume": (lambda c, p, u, i, f: gu.h_move_volume(c, p, u, f), "task"),
        "POST /nodes/{node}/qemu/{vmid}/move_disk": (lambda c, p, u, i, f: gu.h_move_disk(c, p, u, f), "task"),
        "POST /nodes/{node}/vzdump": (lambda c, p, u, i, f: bk.h_vzdump(c, p, u, f), "task"),
    }
    for kind in ("qemu", "lxc"):
        b = "/nodes/{node}/%s/{vmid}" % kind
        R.update({
            "DELETE " + b: ((lambda k: lambda c, p, u, i, f: gu.h_destroy(c, p, u, k, f))(kind), "task"),
            "GET %s/config" % b: ((lambda k: lambda c, p, u, i, f: gu.h_config_get(c, p, u, k, i))(kind), "sync"),
            "PUT %s/config" % b: ((lambda k: lambda c, p, u, i, f: gu.h_config_put(c, p, u, k, i))(kind), "sync"),
            "PUT %s/resize" % b: ((lambda k: lambda c, p, u, i, f: gu.h_resize(c, p, u, k, f))(kind), "task"),
            "POST %s/status/start" % b: ((lambda k: lambda c, p, u, i, f: gu.h_start(c, p, u, k, f))(kind), "task"),
            "POST %s/status/stop" % b: ((lambda k: lambda c, p, u, i, f: gu.h_stop(c, p, u, k, f))(kind), "task"),
            "POST %s/status/shutdown" % b:
                ((lambda k: lambda c, p, u, i, f: gu.h_stop(c, p, u, k, f, shutdown=True))(kind), "task"),
            "GET %s/status/current" % b:
                ((lambda k: lambda c, p, u, i, f: gu.h_status_current(c, p, u, k))(kind), "sync"),
            "GET %s/snapshot" % b: ((lambda k: lambda c, p, u, i, f: gu.h_snapshot_list(c, p, u, k))(kind), "sync"),
            "POST %s/snapshot" % b:
                ((lambda k: lambda c, p, u, i, f: gu.h_snapshot_create(c, p, u, k, f))(kind), "task"),
            "DELETE %s/snapshot/{snapname}" % b:
                ((lambda k: lambda c, p, u, i, f: gu.h_snapshot_delete(c, p, u, k, f))(kind), "task"),
            "POST %s/snapshot/{snapname}/rollback" % b:
                ((lambda k: lambda c, p, u, i, f: gu.h_snapshot_rollback(c, p, u, k, f))(kind), "task"),
        })
    return R


ROUTES = build_routes()


def compile_paths(endpoints):
    """Path templates as regexes; `{volume}` takes the rest of the URI
    (PVE's content subclass has fragmentDelimiter '')."""
    out = []
    for key in endpoints:
        method, path = key.split(" ", 1)
        rx = ""
        for comp in [x for x in path.split("/") if x]:
            m = re.fullmatch(r"\{([\w-]+)\}", comp)
            if m and m.group(1) == "volume":
                rx += "/(?P<volume>.+)"
            elif m:
                rx += "/(?P<%s>[^/]+)" % m.group(1).replace("-", "_")
            else:
                rx += "/" + re.escape(comp)
        out.append((method, re.compile(rx), key))
    return out


class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.set({})

    def set(self, f):
        with self.lock:
            self.conf = {"rate": float(f.get("rate", 0.0)), "seed": f.get("seed", 1),
                         "kinds": list(f.get("kinds", ["500", "drop_before", "drop_after", "latency", "task_fail"])),
                         "latency_ms": int(f.get("latency_ms", 300))}
            self.rng = random.Random(self.conf["seed"])

    def draw(self):
        with self.lock:
            r, k = self.rng.random(), self.rng.random()
            if self.conf["kinds"] and r < self.conf["rate"]:
                return self.conf["kinds"][int(k * len(self.conf["kinds"]))]
            return None


class HttpError(Exception):
    """An error of the HTTP layer (AnyEvent.pm's error()): plain-text body."""

    def __init__(self, status, msg):
        super().__init__(msg)
        self.status = status
        self.msg = msg


class Drop(Exception):
    """Close the connection without a response."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pve-api-daemon/3.0"
    sys_version = ""
    timeout = 120

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("pve-standin: " + (fmt % args) + "\n")

    def setup(self):
        super().setup()
        try:
            self.connection.do_handshake()
        except (ssl.SSLError, OSError):
            self.close_connection = True
            raise

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_DELETE(self):
        self.dispatch("DELETE")

    # -------------------------------------------------------- responses

    def respond(self, status, body=None, reason=None, close=None, text=None):
        """Write a response the way pve-http-server does: reason = first line
        of the message, JSON content (or, for errors of the HTTP layer, the
        message as plain text), connection closed on status >= 400."""
        if text is not None:
            data = text.encode("utf-8")
        else:
            data = b"" if body is None else json.dumps(body, separators=(",", ":")).encode("utf-8")
        reason = (reason or self.responses.get(status, ("",))[0]).split("\n")[0]
        close = (status >= 400) if close is None else close
        self.rec["status"] = status
        self.send_response_only(status, reason.encode("latin-1", "replace").decode("latin-1"))
        self.send_header("Date", self.date_time_string())
        self.send_header("Server", self.server_version)
        self.send_header("Cache-Control", "max-age=0")
        self.send_header("Pragma", "no-cache")
        self.send_header("Expires", self.date_time_string())
        if body is not None and text is None:
            self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close" if close else "Keep-Alive")
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
        if close:
            self.close_connection = True

    def error(self, status, msg):
        """AnyEvent.pm's error(): the message is the reason and the body."""
        self.respond(status, None, reason=msg, text=msg)

    def respond_error(self, e):
        body = {"data": None, "message": e.message}
        if e.errors:
            body["errors"] = e.errors
        self.respond(e.status, body, reason=e.message)

    def drop(self):
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -------------------------------------------------------- dispatch

    def dispatch(self, method):
        url = urllib.parse.urlsplit(self.path)
        path = schema.url_unescape(url.path)
        if path.startswith("/__standin/"):
            self.rec = {}
            return self.control(method, path, url.query)
        self.rec = {"method": method, "path": path,
                    "query_keys": list(schema.decode_urlencoded(url.query)),
                    "status": None, "mutating": method != "GET" and path.startswith("/api2/"),
                    "fault": None}
        srv = self.server
        with srv.reqlock:
            srv.requests.append(self.rec)
        try:
            self.api(method, path, url.query)
        except Drop:
            self.drop()
        except (ConnectionError, ssl.SSLError, TimeoutError, socket.timeout):
            self.close_connection = True
        except cl.ApiError as e:
            self.respond_error(e)
        except schema.ParamError as e:
            self.respond_error(cl.ApiError(400, e.message, e.errors))
        except HttpError as e:
            self.error(e.status, e.msg)
        except Exception as e:  # a stand-in bug: answer 500, keep serving
            import traceback
            traceback.print_exc()
            self.respond_error(cl.ApiError(500, "stand-in internal error: %r\n" % e))

    def api(self, method, path, query):
        srv, c = self.server, self.server.cluster
        te = self.headers.get("Transfer-Encoding")
        if te:
            msg = "chunked transfer encoding not supported" if te.lower() == "chunked" \
                else "Unknown transfer encoding '%s'" % te
            return self.error(501, msg)
        fault = None
        if path.startswith("/api2/"):
            fault = srv.faults.draw()
        if fault == "task_fail" and not self.rec["mutating"]:
            fault = None
        self.rec["fault"] = fault
        if fault == "latency":
            time.sleep(srv.faults.conf["latency_ms"] / 1000.0)
        elif fault == "500":
            return self.respond(500, {"data": None, "message": "injected fault (stand-in 500)\n"},
                                reason="injected fault (stand-in 500)", close=True)
        elif fault == "drop_before":
            raise Drop()
        task_fault = FAULT_MSG["task_fail"] if fault == "task_fail" else None

        m = re.fullmatch(r"/api2/([^/]+)(/.*)?", path)
        if not m or m.group(1) != "json":
            return self.error(501, "no such uri")
        rel = m.group(2) or "/"

        user = self.authenticate(method, rel)
        if user is None:
            return

        length = self.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else 0
        ctype = self.headers.get("Content-Type")
        ct, boundary = parse_content_type(ctype) if ctype else (None, None)
        is_upload = method == "POST" and re.fullmatch(r"/nodes/([^/]+)/storage/([^/]+)/upload", rel)
        if length:
            if method not in ("PUT", "POST"):
                return self.error(501, "Unexpected content for method '%s'" % method)
            if is_upload:
                return self.upload(rel, query, length, ct, boundary, ctype, user, fault, task_fault)
            if length > LIMIT_MAX_POST:
                return self.error(501, "for data too large")
            if ct not in (None, "application/x-www-form-urlencoded", "application/json"):
                return self.error(506, "upload 'Content-Type '%s' not implemented" % ctype)
            body = self.rfile.read(length)
        else:
            body = b""
        try:
            if ct == "application/json" and body:
                params = schema.decode_json_body(body)
            else:
                params = schema.decode_urlencoded(body.decode("latin-1"))
        except ValueError as e:
            raise cl.die("%s\n" % e)
        for k, v in schema.decode_urlencoded(query).items():
            params[k] = v
        params.pop("_dc", None)
        self.call(method, rel, params, user, fault, task_fault)

    def authenticate(self, method, rel):
        """PVE::HTTPServer::auth_handler for API tokens. Returns the token id
        or None after answering 401/403 (delayed like PVE)."""
        c = self.server.cluster
        auth = self.headers.get("Authorization")
        cookie = self.headers.get("Cookie")
        ticket = extract_auth_value(cookie, "PVEAuthCookie") or extract_auth_value(auth, "PVEAuthCookie")
        token = None if ticket else extract_auth_value(auth, "PVEAPIToken")
        err = None
        user = None
        if not token and not ticket:
            err = (401, "No ticket")
        elif ticket:
            err = (401, "Authentication failed!")
        else:
            m = re.fullmatch(r"(.*)=(.*)", token, re.S)
            tok = c.tokens.get(m.group(1)) if m else None
            if not tok or tok["secret"] != m.group(2):
                err = (401, "Authentication failed!")
            else:
                user = tok["full"]
        if err is None and method == "POST":
            m = re.fullmatch(r"/nodes/([^/]+)/storage/([^/]+)/upload", rel)
            if m and not c.check(user, "/storage/" + m.group(2), ["Datastore.AllocateTemplate"], noerr=True):
                err = (403, "Permission check failed (/storage/%s, Datastore.AllocateTemplate)" % m.group(2))
        if err:
            time.sleep(c.auth_fail_delay_ms / 1000.0)
            self.respond(err[0], None, reason=err[1], close=True)
            return None
        return user

    def find(self, method, rel):
        for m, rx, key in self.server.paths[self.server.cluster.schema_version()]:
            if m != method:
                continue
            mm = rx.fullmatch(re.sub(r"/+", "/", rel.rstrip("/")) or "/")
            if mm:
                return key, mm.groupdict()
        return None, None

    def call(self, method, rel, params, user, fault, task_fault, upload=None):
        """rest_handler: find the handler, merge URI parameters, check
        permissions, validate, run."""
        srv, c = self.server, self.server.cluster
        key, uri = self.find(method, rel)
        if key is None:
            if upload:
                upload["cleanup"]()
            return self.respond(501, {"data": None, "message": "Method '%s %s' not implemented\n" % (method, rel)},
                                reason="Method '%s %s' not implemented" % (method, rel))
        info = srv.schemas[c.schema_version()][key]
        for k, v in params.items():
            if k in uri and uri[k] != v:
                raise cl.param_exc({k: "duplicate parameter (already defined in URI) with conflicting values!"})
        uri.update(params)
        params = uri
        if not info.get("allowtoken", 1):
            raise cl.perm_exc("URI '%s' not available with API token, need proper ticket." % rel)
        if key == "POST /nodes/{node}/storage/{storage}/upload":
            info = content_enum_for(c, info)
        handler, kind = ROUTES[key]
        with c.lock:
            c.check_api2(info.get("permissions"), user, params)
            schema.validate(params, info)
            params = schema.normalize(params)
            if not c.has_import:
                self.reject_import(params)
            if kind == "upload":
                data = cl.h_upload(c, params, user, upload["tmp"], upload["digest"], task_fault)
                upload["taken"] = True
                extra = {}
            else:
                res = handler(c, params, user, info, task_fault)
                data, extra = res if isinstance(res, tuple) else (res, {})
        if kind == "sync" and self.rec["fault"] == "task_fail":
            self.rec["fault"] = None
        if self.rec["fault"] == "drop_after":
            self.rec["status"] = None
            raise Drop()
        body = {"data": data}
        body.update(extra)
        self.respond(200, body, reason="OK", close=bool(upload))

    @staticmethod
    def reject_import(params):
        """Below 8.4 there is no `import` content type: the content formats
        refuse it and `import-from` of an import volume does not parse."""
        if "import" in schema.split_list(params.get("content") or "") and not isinstance(params.get("content"), list):
            raise cl.param_exc({"content": "invalid format - invalid content type 'import'\n"})
        for k, v in params.items():
            if isinstance(v, str) and re.search(r"(^|,)import-from=[^,]*:import/", v):
                vol = re.search(r"import-from=([^,]*)", v).group(1)
                raise cl.die("unable to parse directory volume name '%s'\n" % vol.split(":", 1)[1])

    # -------------------------------------------------------- upload

    def upload(self, rel, query, length, ct, boundary, ctype, user, fault, task_fault):
        srv, c = self.server, self.server.cluster
        if not (boundary and ct == "multipart/form-data"):
            raise HttpError(500, "upload 'Content-Type '%s' not implemented\n" % ctype)
        params = schema.decode_urlencoded(query)
        if "tmpfilename" in params:
            raise HttpError(500, "'tmpfilename' query parameter is not allowed for file uploads\n")
        tmpdir = os.path.join(srv.state_dir, "tmp")
        os.makedirs(tmpdir, exist_ok=True)
        tmp = os.path.join(tmpdir, "pveupload-" + hashlib.md5(os.urandom(16)).hexdigest())
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        done = False
        with c.lock:
            c.uploads_in_progress += 1
        try:
            with os.fdopen(fd, "wb") as out:
                up = MultipartUpload(boundary, length, out, params)
                remaining = length
                try:
                    while not up.done:
                        if remaining <= 0:
                            raise UploadError("upload failed")
                        chunk = self.rfile.read(min(CHUNK, remaining))
                        if not chunk:
                            raise ConnectionError("client closed the connection during the upload")
                        remaining -= len(chunk)
                        up.feed(chunk)
                except UploadError as e:
                    raise HttpError(500, str(e))
            # the rest of the body (epilogue) is read and discarded
            while remaining > 0:
                chunk = self.rfile.read(min(CHUNK, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
            digest = up.hash.hexdigest() if up.hash else None
            done = True
        finally:
            with c.lock:
                c.uploads_in_progress -= 1
            if not done:
                cl._unlink(tmp)
        self.close_connection = True
        upload = {"tmp": tmp, "digest": digest, "cleanup": lambda: cl._unlink(tmp), "taken": False}
        try:
            self.call("POST", rel, up.params, user, fault, task_fault, upload=upload)
        except BaseException:
            if not upload["taken"]:
                cl._unlink(tmp)  # no task took the file
            raise

    # -------------------------------------------------------- control API

    def control(self, method, path, query):
        srv, c = self.server, self.server.cluster
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            arg = json.loads(body) if body else {}
        except ValueError:
            return self.respond(400, {"error": "body is not JSON"})
        if method == "GET" and path == "/__standin/requests":
            with srv.reqlock:
                return self.respond(200, list(srv.requests))
        if method == "POST" and path == "/__standin/requests/reset":
            with srv.reqlock:
                srv.requests.clear()
            return self.respond(200, None)
        if method == "PUT" and path == "/__standin/faults":
            srv.faults.set(arg)
            return self.respond(200, srv.faults.conf)
        if method == "GET" and path == "/__standin/faults":
            return self.respond(200, srv.faults.conf)
        if method == "GET" and path == "/__standin/state":
            with c.lock:
                return self.respond(200, state_dump(c))
        if method == "GET" and path == "/__standin/handoff":
            return self.respond(200, list(c.handoff_log))
        if method == "PUT" and path == "/__standin/config":
            new = dict(c.config)
            new.update(arg)
            c.apply_config(new)
            return self.respond(200, None)
        return self.respond(404, {"error": "no such control endpoint %s %s" % (method, path)})


def extract_auth_value(header, key):
    """PVE::APIServer::Formatter::extract_auth_value."""
    if not header:
        return None
    m = re.search(r"(?:^|\s)%s(?:=| )([^;]*)" % re.escape(key), header)
    if not m or not m.group(1):
        return None
    return urllib.parse.unquote(m.group(1))


def state_dump(c):
    guests = {}
    for vmid, g in sorted(c.guests.items()):
        guests[str(vmid)] = {"vmid": vmid, "type": g.kind, "node": g.node, "status": g.status,
                             "config": dict(g.config), "snapshots": sorted(g.snapshots)}
    volumes = {}
    for name, n in c.nodes.items():
        volumes[name] = {}
        for sid in n["storages"]:
            volumes[name][sid] = {"%s:%s" % (sid, vn): {k: v for k, v in vol.items() if k != "path"}
                                  for vn, vol in sorted(c.vols(sid, name).items())}
    return {"guests": guests, "volumes": volumes, "tasks": len(c.tasks),
            "tasks_running": sum(1 for t in c.tasks.values() if t.status == "running"),
            "uploads_in_progress": c.uploads_in_progress, "backup_jobs": dict(c.backup_jobs),
            "version": c.version}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, ctx):
        self.ctx = ctx
        super().__init__(addr, Handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, (ssl.SSLError, ConnectionError, TimeoutError, socket.timeout, OSError)):
            return
        super().handle_error(request, client_address)


def make_cert(state, cn):
    """A self-signed server certificate like a node's pve-ssl.pem (CA:FALSE,
    serverAuth, SAN 127.0.0.1 and localhost); the key is 0600."""
    key, pem, cnf = (os.path.join(state, n) for n in ("pve-ssl.key", "pve-ssl.pem", "openssl.cnf"))
    with open(cnf, "w") as f:
        f.write("[req]\ndistinguished_name=dn\nprompt=no\nx509_extensions=v3\n[dn]\nCN=%s\n"
                "O=PVE Cluster Node\nOU=PVE Cluster Node\n"
                "[v3]\nbasicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost,DNS:%s\n" % (cn, cn))
    old = os.umask(0o077)
    try:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
                        "-days", "3650", "-keyout", key, "-out", pem, "-config", cnf],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    finally:
        os.umask(old)
    os.chmod(key, 0o600)
    os.chmod(pem, 0o644)
    with open(pem) as f:
        der = ssl.PEM_cert_to_DER_cert(f.read())
    fp = hashlib.sha256(der).hexdigest().upper()
    return key, pem, ":".join(fp[i:i + 2] for i in range(0, len(fp), 2))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True)
    ap.add_argument("--state", required=True)
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args(argv)
    with open(a.config, encoding="utf-8") as f:
        config = json.load(f)
    host, _, port = a.listen.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "::1", "[::1]"):
        ap.error("--listen must be a loopback address")
    os.makedirs(a.state, exist_ok=True)
    state = os.path.abspath(a.state)
    nodes = config.get("nodes") or [{"name": "pve"}]
    key, pem, fp = make_cert(state, nodes[0]["name"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pem, key)
    srv = Server((host.strip("[]"), int(port)), ctx)
    srv.verbose = a.verbose
    srv.state_dir = state
    srv.schemas = load_schemas()
    srv.paths = {v: compile_paths(s) for v, s in srv.schemas.items()}
    srv.cluster = cl.Cluster(config, state)
    srv.cluster.fingerprint = fp
    srv.cluster.schemas = srv.schemas
    srv.faults = Faults()
    srv.faults.set(config.get("faults", {}))
    srv.requests = []
    srv.reqlock = threading.Lock()

    def stop(*_):
        def down():
            handoff.stop_all(srv.cluster)  # nothing handed off outlives the stand-in
            srv.shutdown()
        threading.Thread(target=down, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stdout.write(json.dumps({"port": srv.server_address[1], "fingerprint": fp, "cert": pem}) + "\n")
    sys.stdout.flush()
    srv.serve_forever(poll_interval=0.2)
    srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
