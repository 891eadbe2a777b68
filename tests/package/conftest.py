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

import pytest

from pkgtools import REPO_ROOT, SECRETS_DIR, declared_closure, isolated_env, manifest_of_tarball, run


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
