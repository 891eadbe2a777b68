"""Fixtures of the package tests: the collection as a user gets it.

The tarball is built once per session (`ansible-galaxy collection build`), then installed with ONLY the
collections it declares (galaxy.yml `dependencies`, then theirs, read from each MANIFEST.json) into an
empty collections path. The copies of the dependencies come from the venv's `ansible` package, given
to `ansible-galaxy collection install --offline` as `type: dir` requirements (no Galaxy server here).
Every ansible command of these tests sees that path alone: no ansible.cfg from the checkout, no
collections from site-packages.
"""
import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import time

import pytest

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


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """Build the tarball from the checkout; a canary secret sits in lab/.secrets during the build."""
    out = tmp_path_factory.mktemp("build")
    created_dir = not os.path.isdir(SECRETS_DIR)
    os.makedirs(SECRETS_DIR, exist_ok=True)
    canary = os.path.join(SECRETS_DIR, "package-test-canary-%d" % os.getpid())
    with open(canary, "w") as f:
        f.write("not a real secret; tests/package puts it here to prove the tarball leaves it out\n")
    try:
        # git-ignored, as every secret in there must be (else the tarball test's git check is blind)
        ignored = subprocess.run(["git", "check-ignore", "-q", canary], cwd=REPO_ROOT).returncode == 0
        run(["ansible-galaxy", "collection", "build", "--output-path", str(out), REPO_ROOT],
            env=isolated_env(str(out), str(out / "none")), cwd=str(out))
    finally:
        os.remove(canary)
        if created_dir and not os.listdir(SECRETS_DIR):  # someone else's secret may have come meanwhile
            os.rmdir(SECRETS_DIR)
    tarballs = sorted(out.glob("greenflow-platform-*.tar.gz"))
    assert len(tarballs) == 1, tarballs
    return {"tarball": str(tarballs[0]), "canary": os.path.relpath(canary, REPO_ROOT),
            "canary_git_ignored": ignored}


@pytest.fixture(scope="session")
def installed(built, tmp_path_factory):
    """Install the tarball and only its declared dependencies into an empty collections path."""
    work = tmp_path_factory.mktemp("install")
    cols = work / "collections"
    info = manifest_of_tarball(built["tarball"])
    deps = declared_closure(info["dependencies"])
    requirements = {"collections": [{"name": built["tarball"], "type": "file"}]
                    + [{"name": src, "type": "dir"} for src in sorted(deps.values())]}
    req_file = work / "requirements.yml"
    req_file.write_text(json.dumps(requirements, indent=1))  # JSON is YAML
    env = isolated_env(str(work), str(cols))
    run(["ansible-galaxy", "collection", "install", "--offline", "-r", str(req_file), "-p", str(cols)],
        env=env, cwd=str(work))
    return {"work": str(work), "collections": str(cols), "env": env, "manifest": info,
            "dependencies": deps,
            "collection_dir": str(cols / "ansible_collections" / "greenflow" / "platform")}
