"""Helpers of the package tests: isolated ansible commands, timings, manifests."""
import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The venv's `ansible` package: where the declared dependencies are copied from.
SITE_COLLECTIONS = os.path.join(sysconfig.get_paths()["purelib"], "ansible_collections")
# The lab's secrets directory (git-ignored): the tarball test puts a canary file there during the build.
SECRETS_DIR = os.path.join(REPO_ROOT, "lab", ".secrets")


def run(cmd, env=None, cwd=None, check=True, timeout=300):
    """Run a command, print how long it took, return the CompletedProcess (text output)."""
    start = time.monotonic()
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    print("[%5.1fs] %s" % (time.monotonic() - start, " ".join(cmd)[:160]))
    if check and proc.returncode != 0:
        raise AssertionError("%s exited %d\n--- stdout\n%s\n--- stderr\n%s"
                             % (" ".join(cmd), proc.returncode, proc.stdout[-6000:], proc.stderr[-6000:]))
    return proc


def isolated_env(workdir, collections_path):
    """Environment in which ansible sees collections_path only.

    ANSIBLE_* from the caller (the Makefile exports ANSIBLE_CONFIG=<checkout>/ansible.cfg) are dropped;
    ANSIBLE_CONFIG points at an empty file, so neither the checkout's nor a user's config applies.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    empty_cfg = os.path.join(workdir, "empty-ansible.cfg")
    if not os.path.exists(empty_cfg):
        open(empty_cfg, "w").close()
    env.update({
        "ANSIBLE_CONFIG": empty_cfg,
        "ANSIBLE_HOME": os.path.join(workdir, "ansible-home"),
        "ANSIBLE_COLLECTIONS_PATH": collections_path,
        "ANSIBLE_COLLECTIONS_SCAN_SYS_PATH": "false",
        "ANSIBLE_NOCOLOR": "1",
        # the venv's ansible commands, whoever calls pytest
        "PATH": os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
    })
    return env


def manifest_of_tarball(path):
    with tarfile.open(path) as tar:
        return json.load(tar.extractfile("MANIFEST.json"))["collection_info"]


def manifest_of_dir(path):
    with open(os.path.join(path, "MANIFEST.json")) as f:
        return json.load(f)["collection_info"]


def declared_closure(dependencies):
    """{fqcn: source dir in the venv} for the declared dependencies and theirs, transitively."""
    found, todo = {}, list(dependencies)
    while todo:
        fqcn = todo.pop()
        if fqcn in found:
            continue
        source = os.path.join(SITE_COLLECTIONS, *fqcn.split("."))
        assert os.path.isfile(os.path.join(source, "MANIFEST.json")), \
            "declared dependency %s is not in the venv's ansible package (%s)" % (fqcn, source)
        found[fqcn] = source
        todo.extend(manifest_of_dir(source)["dependencies"])
    return found
