"""Every module of the collection has documentation that ansible-doc renders from the checkout."""
import json
import os
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODULES_DIR = os.path.join(REPO_ROOT, "plugins", "modules")
ANSIBLE_DOC = os.path.join(os.path.dirname(sys.executable), "ansible-doc")

MODULES = sorted(
    name[:-3]
    for name in os.listdir(MODULES_DIR)
    if name.endswith(".py") and not name.startswith("_")
)


def _ansible_doc(*args):
    env = dict(os.environ, ANSIBLE_CONFIG=os.path.join(REPO_ROOT, "ansible.cfg"))
    return subprocess.run(
        [ANSIBLE_DOC, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_collection_has_modules():
    assert MODULES, "plugins/modules holds no module"


def test_ansible_doc_lists_every_module():
    result = _ansible_doc("--list", "greenflow.platform", "--json")
    assert result.returncode == 0, result.stderr
    listed = set(json.loads(result.stdout))
    assert {f"greenflow.platform.{name}" for name in MODULES} <= listed


@pytest.mark.parametrize("module", MODULES)
def test_module_doc_renders_with_examples_and_return(module):
    result = _ansible_doc("--json", f"greenflow.platform.{module}")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)[f"greenflow.platform.{module}"]
    assert doc["doc"]["short_description"], "no short_description"
    assert doc["doc"].get("options") is not None, "no options documented"
    assert doc["examples"] and doc["examples"].strip(), "no EXAMPLES"
    assert doc["return"], "no RETURN"
    text = _ansible_doc(f"greenflow.platform.{module}")
    assert text.returncode == 0, text.stderr
    assert "EXAMPLES" in text.stdout
