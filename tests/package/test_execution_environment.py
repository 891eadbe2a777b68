"""The execution environment's build context, made with ansible-builder (no image is built here).

`ansible-builder create` turns the checkout's execution-environment.yml into a build context. Inside
the image the build installs the collections of the context's requirements.yml, then runs the
context's own introspect script over them; here both steps run on the host: the context's requirement
installs our tarball, and the script runs over the `installed` fixture (the tarball plus its declared
dependencies), so what it collects is what the image would get.
"""
import os
import shutil
import sys

import pytest
import yaml

from pkgtools import REPO_ROOT, isolated_env, run

pytestmark = pytest.mark.skipif(shutil.which("ansible-builder") is None,
                                reason="ansible-builder missing: make test-package installs it (requirements.txt)")


def read_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def context(built, tmp_path_factory):
    work = tmp_path_factory.mktemp("ee")
    # the definition beside the tarball, as after `ansible-galaxy collection build` in a checkout
    shutil.copy(os.path.join(REPO_ROOT, "execution-environment.yml"), work)
    shutil.copy(built["tarball"], work)
    run(["ansible-builder", "create", "--output-filename", "Containerfile", "-c", "context"], cwd=str(work))
    return work / "context"


def test_definition_takes_the_tarball_of_this_version():
    version = read_yaml(os.path.join(REPO_ROOT, "galaxy.yml"))["version"]
    ee = read_yaml(os.path.join(REPO_ROOT, "execution-environment.yml"))
    assert ee["version"] == 3
    names = [c["name"] for c in ee["dependencies"]["galaxy"]["collections"]]
    assert names == ["collections/greenflow-platform-%s.tar.gz" % version]
    # ansible-core the collection says it runs on
    runtime = read_yaml(os.path.join(REPO_ROOT, "meta", "runtime.yml"))
    assert runtime["requires_ansible"].startswith(">=")
    minimum = tuple(int(x) for x in runtime["requires_ansible"][2:].split(".")[:2])
    pinned = ee["dependencies"]["ansible_core"]["package_pip"].split("==")[1]
    assert tuple(int(x) for x in pinned.split(".")[:2]) >= minimum


def test_context_builds_from_the_tarball(context, built, tmp_path):
    containerfile = (context / "Containerfile").read_text()
    assert "FROM $EE_BASE_IMAGE AS base" in containerfile
    assert "ansible-galaxy collection install" in containerfile
    assert "introspect.py introspect" in containerfile  # collections' own needs are collected
    assert "ansible-core==2.19" in containerfile
    build = context / "_build"
    requirements = read_yaml(build / "requirements.yml")["collections"]
    assert [r["type"] for r in requirements] == ["file"]
    # the tarball is in the context where the requirement points (the build runs in _build)
    assert (build / requirements[0]["name"]).read_bytes() == open(built["tarball"], "rb").read()
    # ... and that requirement installs: ansible-galaxy in the context's folder, as the build does
    cols = tmp_path / "cols"
    run(["ansible-galaxy", "collection", "install", "--offline", "--no-deps", "-r", "requirements.yml",
         "-p", str(cols)], env=isolated_env(str(tmp_path), str(cols)), cwd=str(build))
    assert (cols / "ansible_collections" / "greenflow" / "platform" / "meta" / "execution-environment.yml").is_file()


def test_introspection_collects_ours_and_the_dependencies_needs(context, installed, tmp_path):
    pip, bindep = tmp_path / "requirements.txt", tmp_path / "bindep.txt"
    # as the Containerfile's builder stage runs it, with the definition's exclusions
    assert "introspect --exclude-pip-reqs=exclude-requirements.txt " in (context / "Containerfile").read_text()
    run([sys.executable, str(context / "_build" / "scripts" / "introspect.py"), "introspect",
         "--exclude-pip-reqs=exclude-requirements.txt", "--write-pip", str(pip), "--write-bindep", str(bindep),
         installed["collections"]], cwd=str(context / "_build"))
    python = {line.split("#")[0].strip(): line for line in pip.read_text().splitlines() if line.strip()}
    system = bindep.read_text()
    print("\nintrospected Python requirements:\n  " + "\n  ".join(python.values()))
    # ours: the cutover's probes need requests on the controller; ssh to the managed hosts
    assert "greenflow.platform" in python["requests>=2.25"]
    assert "openssh-clients [platform:rpm]" in system and "greenflow.platform" in system
    # the dependencies' (declared in galaxy.yml, brought by ansible-galaxy)
    assert "community.docker" in python["docker"]
    assert "community.postgresql" in python["psycopg2-binary"]
    assert "community.crypto" in system
    assert "pytest-mock" not in python  # community.postgresql's test tool, excluded by the definition
