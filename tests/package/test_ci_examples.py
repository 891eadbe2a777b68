"""The CI examples in docs/examples/ (docs/examples/README.md) are valid pipelines that call this
collection correctly.

- Each file validates against its CI system's schema with check-jsonschema's bundled copies
  (`--builtin-schema vendor.github-workflows` / `vendor.gitlab-ci`: no download, works offline);
  GitLab's jobs once more with their hidden template merged in (the schema takes anything in `.x`).
- Every `ansible-playbook` they run names a playbook the collection has, and passes only variables
  that playbook (its task files, the roles it includes) uses; deploy gets release_version.
- Secrets and dispatch inputs reach the scripts through the environment only; deploy and rollback
  share one concurrency group / resource group and are never cancelled by a newer run; rollback is
  manual.
- Every shell script in them parses (`bash -n`); no file is a dot-file (build_ignore would drop it).
"""
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(REPO_ROOT, "docs", "examples")
GITHUB = os.path.join(EXAMPLES, "github-actions", "deploy.yml")
GITLAB = os.path.join(EXAMPLES, "gitlab-ci", "gitlab-ci.yml")
SCHEMAS = {GITHUB: "vendor.github-workflows", GITLAB: "vendor.gitlab-ci"}
# What a playbook cannot run without (deploy.yml's "Check the input" task; the app's own settings
# come from the inventory's group_vars).
REQUIRED = {"deploy": {"release_version"}}
# Extra vars every playbook accepts: ansible's own names.
ANSIBLE_VARS = {"ansible_user", "ansible_become", "ansible_python_interpreter"}


def load(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def tool(name):
    beside = os.path.join(os.path.dirname(sys.executable), name)
    found = beside if os.access(beside, os.X_OK) else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed: pip install -r requirements.txt")
    return found


def github_scripts(doc):
    """(job, shell script) of every `run:` step."""
    for job_name, job in doc["jobs"].items():
        for step in job.get("steps", []):
            if "run" in step:
                yield job_name, step["run"]


def gitlab_jobs(doc):
    """Job name -> job with its `extends` resolved (one level of hidden templates is all we use)."""
    jobs = {}
    for name, job in doc.items():
        if not isinstance(job, dict) or name in ("workflow", "variables", "default") or name.startswith("."):
            continue
        merged = {}
        for parent in [job["extends"]] if isinstance(job.get("extends"), str) else job.get("extends", []):
            merged.update(doc[parent])
        merged.update(job)
        jobs[name] = merged
    return jobs


def gitlab_scripts(doc):
    """(job, shell script) of every script line of every job."""
    for job_name, job in gitlab_jobs(doc).items():
        for key in ("before_script", "script", "after_script"):
            for line in job.get(key, []):
                yield job_name, line


def scripts(path):
    doc = load(path)
    return list(github_scripts(doc) if path == GITHUB else gitlab_scripts(doc))


def playbook_runs(path):
    """(job, playbook name, {extra var: value}) of every ansible-playbook command."""
    runs = []
    for job, script in scripts(path):
        text = script.replace("\\\n", " ")  # shell line continuations
        for line in text.splitlines():
            words = shlex.split(line, comments=True)
            if "ansible-playbook" not in words:
                continue
            words = words[words.index("ansible-playbook") + 1:]
            playbook, extra = None, {}
            i = 0
            while i < len(words):
                word = words[i]
                if word in ("-e", "--extra-vars"):
                    value = words[i + 1]
                    assert not value.startswith("@"), f"{job}: -e {value}: a vars file this test cannot check"
                    if value.lstrip().startswith("{"):
                        extra.update(json.loads(value))
                    else:
                        key, _, val = value.partition("=")
                        extra[key] = val
                    i += 2
                    continue
                if word in ("-i", "--inventory", "--vault-password-file", "--private-key", "-l", "--limit",
                            "-t", "--tags", "--skip-tags"):
                    i += 2
                    continue
                if not word.startswith("-"):
                    playbook = word
                i += 1
            runs.append((job, playbook, extra))
    return runs


def playbook_file(name):
    """greenflow.platform.deploy or playbooks/deploy.yml -> the collection's playbooks/deploy.yml."""
    if name.startswith("greenflow.platform."):
        base = name[len("greenflow.platform."):]
    else:
        base = os.path.splitext(os.path.basename(name))[0]
    return base, os.path.join(REPO_ROOT, "playbooks", base + ".yml")


def known_variables(path):
    """Every name that the playbook, its task files and the roles it uses mention."""
    texts = []
    with open(path, encoding="utf-8") as handle:
        playbook = handle.read()
    texts.append(playbook)
    tasks_dir = os.path.join(REPO_ROOT, "playbooks", "tasks")
    for name in os.listdir(tasks_dir):
        if f"tasks/{name}" in playbook:
            with open(os.path.join(tasks_dir, name), encoding="utf-8") as handle:
                texts.append(handle.read())
    for role in set(re.findall(r"greenflow\.platform\.(\w+)", playbook)):
        for rel in ("defaults/main.yml", "meta/argument_specs.yml"):
            role_file = os.path.join(REPO_ROOT, "roles", role, rel)
            if os.path.exists(role_file):
                with open(role_file, encoding="utf-8") as handle:
                    texts.append(handle.read())
    return set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", "\n".join(texts)))


EXAMPLE_FILES = [GITHUB, GITLAB]
IDS = ["github-actions", "gitlab-ci"]


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=IDS)
def test_valid_against_the_ci_schema(path):
    # the bundled schema: check-jsonschema does not download it (checked with `unshare -n`)
    proc = subprocess.run([tool("check-jsonschema"), "--builtin-schema", SCHEMAS[path], path],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"check-jsonschema {SCHEMAS[path]}:\n{proc.stdout}{proc.stderr}"


def test_gitlab_jobs_valid_with_their_template_merged(tmp_path):
    """The schema accepts anything in a hidden job (`.greenflow`): validate deploy and rollback again
    with the template's keys merged in, as GitLab runs them."""
    doc = load(GITLAB)
    resolved = {key: value for key, value in doc.items() if not key.startswith(".")}
    for name, job in gitlab_jobs(doc).items():
        resolved[name] = {key: value for key, value in job.items() if key != "extends"}
    path = tmp_path / "gitlab-ci-resolved.yml"
    path.write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
    proc = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci", str(path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"check-jsonschema vendor.gitlab-ci (template merged):\n{proc.stdout}{proc.stderr}"


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=IDS)
def test_playbooks_and_variables_exist(path):
    runs = playbook_runs(path)
    assert {playbook_file(p)[0] for _, p, _ in runs} == {"deploy", "rollback"}, runs
    for job, playbook, extra in runs:
        base, pb_path = playbook_file(playbook)
        assert os.path.exists(pb_path), f"{job}: {playbook}: no {os.path.relpath(pb_path, REPO_ROOT)}"
        unknown = sorted(set(extra) - known_variables(pb_path) - ANSIBLE_VARS)
        assert not unknown, f"{job}: {playbook} does not know {unknown}"
        # the webhook hears start, success and failure from the playbook itself
        missing = sorted((REQUIRED.get(base, set()) | {"release_webhook_url"}) - set(extra))
        assert not missing, f"{job}: {playbook} needs {missing}"


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=IDS)
def test_secrets_and_inputs_only_through_the_environment(path):
    for job, script in scripts(path):
        # ${{ secrets.X }} / ${{ inputs.X }} pasted into a script: shell injection, and a secret that
        # a `set -x` prints
        assert not re.search(r"\$\{\{\s*(secrets|inputs|github\.event)\.", script), f"{job}: {script[:80]}"
    for job, playbook, extra in playbook_runs(path):
        for key, value in extra.items():
            assert not re.search(r"PASSWORD|SSH_KEY|WEBHOOK_URL", str(value)) or "lookup(" in str(value), (
                f"{job}: {key} puts a secret on the command line")
    for job, script in scripts(path):
        if "ansible-playbook" in script:
            assert "--vault-password-file" in script, f"{job}: no --vault-password-file"


def test_github_one_release_operation_at_a_time():
    doc = load(GITHUB)
    groups = set()
    for name in ("deploy", "rollback"):
        concurrency = doc["jobs"][name]["concurrency"]
        assert concurrency["cancel-in-progress"] is False, name
        groups.add(concurrency["group"])
        assert doc["jobs"][name]["environment"], name
    assert len(groups) == 1, groups
    triggers = doc.get("on", doc.get(True))  # YAML 1.1 reads the key `on` as true
    assert "workflow_dispatch" in triggers, "rollback needs workflow_dispatch"
    assert "workflow_dispatch" in doc["jobs"]["rollback"]["if"]


def test_gitlab_one_release_operation_at_a_time():
    jobs = gitlab_jobs(load(GITLAB))
    assert jobs["deploy"]["resource_group"] == jobs["rollback"]["resource_group"]
    assert jobs["deploy"]["interruptible"] is False and jobs["rollback"]["interruptible"] is False
    assert [rule.get("when") for rule in jobs["rollback"]["rules"]] == ["manual"]
    assert jobs["rollback"]["needs"] == []


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=IDS)
def test_shell_scripts_parse(path):
    for job, script in scripts(path):
        proc = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, f"{job}: {proc.stderr}\n{script}"


def test_examples_ship_in_the_tarball():
    # galaxy.yml's build_ignore drops dot-files: .gitlab-ci.yml would silently be missing
    dotted = [os.path.relpath(os.path.join(top, name), REPO_ROOT)
              for top, dirs, files in os.walk(EXAMPLES) for name in dirs + files if name.startswith(".")]
    assert not dotted, f"dot-files are not built into the collection: {dotted}"
