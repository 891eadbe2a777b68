"""The built tarball carries the collection's content and nothing else.

What it must carry is derived from the checkout (git's view of it: tracked files plus new files git
does not ignore), so a new role, module, playbook or doc is checked without editing this test.
"""
import os
import subprocess
import tarfile

import pytest

from pkgtools import REPO_ROOT

# Top-level entries a user's copy of the collection consists of (galaxy.yml build_ignore leaves out the
# rest). A new top-level folder fails the test below until it is either shipped here or ignored there.
SHIPPED_TOP = ["meta", "plugins", "roles", "playbooks", "docs", "changelogs",
               "inventories/production", "inventories/staging", "README.md", "CHANGELOG.md", "CONTRIBUTING.md",
               "LICENSE"]
GENERATED = {"MANIFEST.json", "FILES.json"}  # written by ansible-galaxy build
NEVER = ("lab/", "tests/", "molecule/", "bench/", "scripts/", "inventories/lab/", "inventories/lab-lbpair/",
         "collections/")


def git_files(paths):
    """Tracked files plus untracked ones git does not ignore, under paths (those that exist)."""
    existing = [p for p in paths if os.path.exists(os.path.join(REPO_ROOT, p))]
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z", "--"] + existing,
                         cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    return {p for p in out.split("\0") if p and os.path.isfile(os.path.join(REPO_ROOT, p))}


def is_dot(path):
    return any(part.startswith(".") for part in path.split("/"))


@pytest.fixture(scope="module")
def contents(built):
    with tarfile.open(built["tarball"]) as tar:
        members = tar.getmembers()
    files = {m.name for m in members if m.isfile()}
    size = os.path.getsize(built["tarball"])
    print("\n%s: %d files, %d entries, %.1f KiB compressed, %.1f KiB unpacked"
          % (os.path.basename(built["tarball"]), len(files), len(members), size / 1024,
             sum(m.size for m in members) / 1024))
    return {"files": files, "names": {m.name.rstrip("/") for m in members},
            "symlinks": [m.name for m in members if m.issym() or m.islnk()]}


def test_nothing_but_collection_content(contents):
    names = contents["names"]
    assert not [n for n in names if n.startswith(NEVER) or n + "/" in NEVER], "tooling or lab shipped"
    assert not [n for n in names if is_dot(n)], "dot-files shipped"
    assert not contents["symlinks"], "symlinks shipped (the checkout's collections/ link?)"
    outside = [n for n in contents["files"] - GENERATED
               if not any(n == top or n.startswith(top + "/") for top in SHIPPED_TOP)]
    assert not outside, "files outside the collection's content: %s" % sorted(outside)


def test_secrets_left_out(built, contents):
    # the canary was in lab/.secrets while the tarball was built
    assert built["canary_git_ignored"], "lab/.secrets is not git-ignored"
    assert built["canary"] not in contents["files"]
    assert not [n for n in contents["names"] if ".secrets" in n]


def test_no_git_ignored_file(contents):
    listed = sorted(contents["names"] - GENERATED)
    proc = subprocess.run(["git", "check-ignore", "--stdin"], input="\n".join(listed), cwd=REPO_ROOT,
                          capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr  # 1: nothing ignored
    assert proc.stdout.split() == [], "git-ignored files shipped"


def test_exactly_the_collection_files_of_the_checkout(contents):
    expected = {p for p in git_files(SHIPPED_TOP) if not is_dot(p)}
    shipped = contents["files"] - GENERATED
    assert sorted(expected - shipped) == [], "content of the checkout missing from the tarball"
    assert sorted(shipped - expected) == [], "files in the tarball that git does not know"


@pytest.mark.parametrize("kind, paths, must", [
    ("role", ["roles"], lambda p: p.count("/") == 3 and p.split("/")[2:] in (["tasks", "main.yml"],
                                                                             ["meta", "main.yml"])),
    ("module", ["plugins/modules"], lambda p: p.endswith(".py")),
    ("plugin", ["plugins"], lambda p: p.endswith(".py") and not p.startswith("plugins/modules/")),
    ("playbook", ["playbooks"], lambda p: p.endswith(".yml")),
    ("doc", ["docs", "README.md", "LICENSE", "CHANGELOG.md"], lambda p: True),
    ("role readme or argument spec", ["roles"], lambda p: p.endswith(("README.md", "argument_specs.yml"))),
])
def test_carries_every(kind, paths, must, contents):
    wanted = sorted(p for p in git_files(paths) if must(p) and not is_dot(p))
    assert wanted, "found no %s in the checkout: the derivation is broken" % kind
    missing = [p for p in wanted if p not in contents["files"]]
    assert not missing, "%s files missing from the tarball: %s" % (kind, missing)
    print("%d %s files carried" % (len(wanted), kind))
