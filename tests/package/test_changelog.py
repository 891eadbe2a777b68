"""The changelog the Ansible ecosystem reads: changelogs/ is valid for antsibull-changelog, and
CHANGELOG.md is exactly what `antsibull-changelog generate` renders from it (so nobody edits the
rendered file by hand and it never drifts from its sources). How to add a change: CONTRIBUTING.md."""
import ast
import os
import shutil
import subprocess
import sys

import pytest
import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VENV_BIN = os.path.dirname(sys.executable)


def antsibull_changelog():
    """The antsibull-changelog beside this Python (the venv's), else the one on PATH."""
    beside = os.path.join(VENV_BIN, "antsibull-changelog")
    found = beside if os.access(beside, os.X_OK) else shutil.which("antsibull-changelog")
    if not found:
        pytest.fail("antsibull-changelog is not installed: pip install -r requirements.txt")
    return found


def run(args, cwd):
    proc = subprocess.run([antsibull_changelog()] + args, cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def test_fragments_lint_clean():
    rc, out = run(["lint"], REPO_ROOT)
    assert rc == 0 and not out.strip(), f"antsibull-changelog lint:\n{out}"


def test_changelog_yaml_lint_clean():
    rc, out = run(["lint-changelog-yaml", os.path.join("changelogs", "changelog.yaml")], REPO_ROOT)
    assert rc == 0 and not out.strip(), f"antsibull-changelog lint-changelog-yaml:\n{out}"


def test_rendered_changelog_matches_its_sources(tmp_path):
    # generate on a copy: what the collection root needs is galaxy.yml and changelogs/
    shutil.copy(os.path.join(REPO_ROOT, "galaxy.yml"), tmp_path)
    shutil.copytree(os.path.join(REPO_ROOT, "changelogs"), tmp_path / "changelogs")
    rc, out = run(["generate"], tmp_path)
    assert rc == 0, f"antsibull-changelog generate:\n{out}"
    with open(os.path.join(REPO_ROOT, "CHANGELOG.md"), encoding="utf-8") as committed:
        expected = committed.read()
    rendered = (tmp_path / "CHANGELOG.md").read_text(encoding="utf-8")
    assert rendered == expected, (
        "CHANGELOG.md differs from what antsibull-changelog generate renders from changelogs/: "
        "edit changelogs/changelog.yaml or add a fragment, then run `antsibull-changelog generate` "
        "(never edit CHANGELOG.md by hand)")


def module_version_added(path):
    """version_added of a module's DOCUMENTATION (read from its source, not imported)."""
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "DOCUMENTATION" for t in node.targets):
            return str(yaml.safe_load(node.value.value).get("version_added", ""))
    return ""


def test_released_modules_are_in_their_release():
    """A module whose version_added names a release in changelog.yaml is listed in that release
    (`antsibull-changelog release` finds new modules by version_added; this catches a hand-made
    release entry that forgot one, or a wrong version_added)."""
    with open(os.path.join(REPO_ROOT, "changelogs", "changelog.yaml"), encoding="utf-8") as handle:
        releases = yaml.safe_load(handle)["releases"]
    folder = os.path.join(REPO_ROOT, "plugins", "modules")
    wrong = []
    for name in sorted(os.listdir(folder)):
        if not name.endswith(".py") or name.startswith("_"):
            continue
        version = module_version_added(os.path.join(folder, name))
        if version in releases:
            listed = [entry["name"] for entry in releases[version].get("modules", [])]
            if name[:-3] not in listed:
                wrong.append(f"{name[:-3]} (version_added {version})")
    assert not wrong, f"modules missing from their release in changelogs/changelog.yaml: {wrong}"
