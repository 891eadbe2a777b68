"""pgBackRest is the only backup engine (0.2.0): an inventory still on 0.1.x's greenflow-pg-backup is refused
with a pointer to docs/upgrade-0.2.md before anything runs on a host, never silently ignored.

Real ansible-playbook runs of roles/pgbackrest's `engine` entry point and of the playbooks that touch backups,
on an inventory of made-up hosts reached with the local connection and a Python that does not exist: only
controller-side steps (assert, include_role, argument validation) can run, so a check that failed to refuse
would fail at its next module instead of touching this machine. Needs no service.
"""
import json
import os
import re
import subprocess
import sys

import pytest

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
REMOVED = "removed in 0.2.0"
NOTE = "docs/upgrade-0.2.md"
ENGINE_TASK = "Engine | pgBackRest is the backup engine (pg_backup_engine)"

INVENTORY = {
    "all": {
        "vars": {"ansible_connection": "local", "ansible_python_interpreter": "/nonexistent/python3",
                 "pg_backup_host": "db-2"},
        "children": {
            "postgresql": {"children": {"pg_primary": {"hosts": {"db-1": {}}},
                                        "pg_replica": {"hosts": {"db-2": {}}}}},
            "pg_backup": {"hosts": {}},
            "lb": {"hosts": {"lb-1": {}}},
        },
    },
}


@pytest.fixture(scope="module")
def inventory(tmp_path_factory):
    path = tmp_path_factory.mktemp("engine") / "hosts.json"
    path.write_text(json.dumps(INVENTORY))  # JSON is YAML
    return str(path)


def play(inventory, playbook, *args):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO_ROOT, "ansible.cfg"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_FORCE_COLOR="0", ANSIBLE_GATHERING="explicit", ANSIBLE_RETRY_FILES_ENABLED="0")
    proc = subprocess.run([ANSIBLE_PLAYBOOK, "-i", inventory, playbook] + list(args), cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


def entry_point(tmp_path, inventory, *args):
    playbook = tmp_path / "engine.yml"
    playbook.write_text(json.dumps([{
        "name": "The backup engine", "hosts": "postgresql", "gather_facts": False,
        "tasks": [{"name": "Check", "ansible.builtin.include_role": {"name": "greenflow.platform.pgbackrest",
                                                                      "tasks_from": "engine"}}],
    }]))
    return play(inventory, str(playbook), *args)


def flat(out):
    return re.sub(r"\s+", " ", out)


@pytest.mark.parametrize("extra", [[], ["-e", "pg_backup_engine=pgbackrest"], ["-e", "pg_backup_engine="]],
                         ids=["unset", "pgbackrest", "empty"])
def test_pgbackrest_or_no_engine_is_accepted(tmp_path, inventory, extra):
    rc, out = entry_point(tmp_path, inventory, *extra)
    assert rc == 0, out[-3000:]
    assert re.search(r"ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", out), out[-3000:]


def test_the_removed_engine_is_refused_with_the_upgrade_note(tmp_path, inventory):
    rc, out = entry_point(tmp_path, inventory, "-e", "pg_backup_engine=greenflow-pg-backup")
    assert rc != 0
    text = flat(out)
    assert "pg_backup_engine is greenflow-pg-backup" in text and REMOVED in text and NOTE in text, out[-3000:]
    assert "Remove pg_backup_engine from the inventory" in text and "Nothing was changed." in text
    # once for the play (run_once), not once per host
    assert len(re.findall(r"^fatal: \[", out, re.M)) == 1, out[-3000:]


def test_another_engine_is_refused(tmp_path, inventory):
    rc, out = entry_point(tmp_path, inventory, "-e", "pg_backup_engine=barman")
    assert rc != 0
    assert "pg_backup_engine must be pgbackrest, the only backup engine (or be left out); got 'barman'" in flat(out)


# The playbooks that touch backups. preflight.yml is site.yml's first import; its first play pings every
# host, so it runs with this Python (preflight changes nothing on any host, refused or not), and the
# postgresql role's checks before it want the passwords (and no app hosts' group: there is no swarm here). deploy.yml's check comes after `nginx -t` on the
# load balancer: the lab's release tests run it.
PLAYBOOKS = {
    "pg_backup.yml": [],
    "pgbackrest.yml": [],
    "backup.yml": [],
    "restore.yml": ["-e", "restore_confirm=main"],
    "pg_replica_reseed.yml": [],
    "preflight.yml": ["-e", "ansible_python_interpreter=%s" % sys.executable, "-e", "pg_app_password=not-used",
                      "-e", "pg_replication_password=not-used", "-e", "postgresql_app_hosts_group="],
}


@pytest.mark.parametrize("playbook", sorted(PLAYBOOKS))
def test_playbooks_refuse_the_removed_engine_first(inventory, playbook):
    rc, out = play(inventory, os.path.join("playbooks", playbook), "-e", "pg_backup_engine=greenflow-pg-backup",
                   *PLAYBOOKS[playbook])
    assert rc != 0
    assert REMOVED in flat(out) and NOTE in flat(out), out[-3000:]
    # the refusal is the first thing that failed, and no host was reached
    tasks = re.findall(r"^TASK \[(.*)\]", out, re.M)
    assert ENGINE_TASK in tasks[-1], tasks
    assert "unreachable=1" not in out and "/nonexistent/python3" not in out, out[-3000:]


def test_backup_yml_accepts_pgbackrest(inventory):
    """The same playbook with pgbackrest passes the check and goes on (to a host, which fails here)."""
    rc, out = play(inventory, "playbooks/backup.yml", "-e", "pg_backup_engine=pgbackrest", "-e",
                   "pg_backup_action=nonsense")
    text = flat(out)
    assert REMOVED not in text and "must be pgbackrest" not in text, out[-3000:]
    # the next check of backup.yml is what stops it
    assert rc != 0 and "pg_backup_action must be backup, verify, retention or list (got 'nonsense')" in text
