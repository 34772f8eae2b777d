#!/usr/bin/python3
"""Turns what firstboot wrote under a `--root` copy of a guest into the
variables of scripts/ansible/site.yml, so the playbook writes the same files,
accounts, directories and units as the agent (for scripts/bench-ansible).

usage: stage.py STAGE MARKER TEMPLATE LABDIR > staged.json
  STAGE     a personalized template extracted, after `firstboot --root STAGE`
  MARKER    a file touched before the agent ran (newer paths are its work)
  TEMPLATE  the baked template the stage came from (.tar.zst): what was there
  LABDIR    the lab's directory (root_user, root_password files)
Files are copied next to the output, under STAGE/../ansible-files/ROLE/.
"""
import json
import os
import shutil
import subprocess
import sys
import tarfile

import yaml

# The agent's own bookkeeping, which the old way does not have; accounts are
# created by the playbook's user/group tasks, not copied.
SKIP_PREFIXES = ("etc/passwd", "etc/group", "etc/shadow", "etc/gshadow", "var/lib/imgbuild", "etc/imgbuild")
SKIP_FILES = {"var/lib/node_exporter/textfile/imgbuild_firstboot.prom"}


def role_of(name):
    if "minio" in name:
        return "object_store"
    if "spark" in name:
        return "spark"
    return "common"


def table(path):
    rows = {}
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split(":")
            if len(parts) >= 3:
                rows[parts[0]] = parts
    return rows


def template_tree(template):
    """(path -> (uid, gid, mode, isdir), passwd text) of the baked template."""
    tree, passwd = {}, ""
    z = subprocess.Popen(["zstd", "-dcq", template], stdout=subprocess.PIPE)
    with tarfile.open(fileobj=z.stdout, mode="r|") as t:
        for m in t:
            name = m.name[2:] if m.name.startswith("./") else m.name
            tree[name.rstrip("/")] = (m.uid, m.gid, m.mode & 0o7777, m.isdir())
            if name == "etc/passwd":
                passwd = t.extractfile(m).read().decode()
    if z.wait() != 0:
        sys.exit(f"stage.py: zstd failed on {template}")
    return tree, passwd


def main():
    stage, marker, template, labdir = sys.argv[1:5]
    since = os.stat(marker).st_mtime
    before, passwd_before = template_tree(template)
    old_users = {l.split(":")[0] for l in passwd_before.splitlines() if l}
    users = {n: p for n, p in table(os.path.join(stage, "etc/passwd")).items() if n not in old_users}
    by_uid = {int(p[2]): n for n, p in table(os.path.join(stage, "etc/passwd")).items()}
    groups = table(os.path.join(stage, "etc/group"))
    by_gid = {int(p[2]): n for n, p in groups.items()}
    seed = yaml.safe_load(open(os.path.join(stage, "etc/imgbuild/seed.yaml")))
    files_dir = os.path.join(os.path.dirname(os.path.abspath(stage)), "ansible-files")

    parts = {r: {"users": [], "dirs": [], "files": [], "units": []} for r in ("common", "object_store", "spark")}
    for name, p in sorted(users.items()):
        gid = int(p[3])
        parts[role_of(name)]["users"].append(
            {"name": name, "group": by_gid[gid], "home": p[5], "shell": p[6]})
    for top, dirs, files in os.walk(stage):
        dirs.sort()
        for entry in sorted(dirs) + sorted(files):
            full = os.path.join(top, entry)
            rel = os.path.relpath(full, stage)
            st = os.lstat(full)
            if st.st_mtime < since or rel.startswith(SKIP_PREFIXES) or rel in SKIP_FILES:
                continue
            meta = {"path": "/" + rel, "owner": by_uid[st.st_uid], "group": by_gid[st.st_gid],
                    "mode": "%04o" % (st.st_mode & 0o7777)}
            role = role_of(rel)
            if os.path.isdir(full) and not os.path.islink(full):
                was = before.get(rel)
                if was is None or was[:3] != (st.st_uid, st.st_gid, st.st_mode & 0o7777):
                    parts[role]["dirs"].append(meta)
            elif os.path.isfile(full):
                src = os.path.join(files_dir, role, rel)
                os.makedirs(os.path.dirname(src), exist_ok=True)
                shutil.copyfile(full, src)
                os.chmod(src, 0o600)
                parts[role]["files"].append({**meta, "src": src})
                if rel.startswith("etc/systemd/system/") and rel.endswith(".service"):
                    parts[role]["units"].append(os.path.basename(rel))
    # firstboot (re)starts the firewall and SSH with the files it wrote.
    parts["common"]["units"] = ["nftables.service", "ssh.service"] + parts["common"]["units"]
    parts["spark"]["units"].sort(key=lambda u: "worker" in u)  # the master first

    roles = seed.get("roles", {})
    store = roles.get("object_store", {})
    spark = roles.get("spark", {})
    port = next((o["port"] for o in seed.get("firewall", {}).get("open", [])
                 if "exporter" in o.get("comment", "")), 9100)
    staged = {
        **parts,
        "metrics_port": port,
        "s3_port": store.get("api_port", 9000),
        "buckets": store.get("buckets", []),
        "root_user_file": os.path.join(labdir, "root_user"),
        "root_password_file": os.path.join(labdir, "root_password"),
        "spark_ui_port": spark.get("master", {}).get("ui_port", 8080),
        "spark_worker_ui_port": spark.get("worker", {}).get("ui_port", 8081),
    }
    json.dump({"staged": staged}, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
