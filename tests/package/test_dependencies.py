"""The built tarball with ONLY its declared dependencies is a working collection.

`installed` (conftest.py) holds the tarball and the closure of galaxy.yml's `dependencies`, installed
offline into an empty collections path; every command here sees that path alone.
"""
import glob
import json
import os
import pwd
import re
import shutil
import textwrap

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from pkgtools import REPO_ROOT, isolated_env, manifest_of_dir, run

# A collection's content called from YAML: a task's module or action (`ns.name.x:`, also a
# module_defaults group `group/ns.name.x:`), a filter or test (`| ns.name.x`, `is ns.name.x`), or one
# named as a string (`lookup('ns.name.x'`, `map('ns.name.x'`, ...).
_FQCN = r"([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\.[a-z][a-z0-9_]*"
FQCN_USE = re.compile(r"^\s*-?\s*(?:group/)?%s\s*:|(?:\||\bis(?: not)?)\s*%s|\(\s*['\"]%s" % (_FQCN, _FQCN, _FQCN),
                      re.MULTILINE)


def names(pattern):
    """Base names (no extension) of the checkout's files matching pattern, e.g. the modules."""
    found = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(REPO_ROOT, pattern)))
    assert found, "nothing matches %s in the checkout" % pattern
    return found


def test_only_the_declared_collections_are_installed(installed):
    listing = run(["ansible-galaxy", "collection", "list", "--format", "json"],
                  env=installed["env"], cwd=installed["work"]).stdout
    seen = {}
    for path, collections in json.loads(listing).items():
        if path.startswith(installed["collections"]):
            seen.update({fqcn: c["version"] for fqcn, c in collections.items()})
    expected = {"greenflow.platform"} | set(installed["dependencies"])
    assert set(seen) == expected
    assert "community.crypto" in installed["dependencies"], "community.crypto is not declared"
    for fqcn in installed["dependencies"]:
        source = manifest_of_dir(installed["dependencies"][fqcn])
        assert seen[fqcn] == source["version"], fqcn
    # the installed copies are intact (files against their FILES.json checksums)
    run(["ansible-galaxy", "collection", "verify", "--offline"] + sorted(expected),
        env=installed["env"], cwd=installed["work"])


def test_every_collection_used_is_declared(installed):
    """Static: every `ns.name.x:` the roles and playbooks call is ansible.builtin, ours or declared."""
    used = {}
    top = installed["collection_dir"]
    for path in glob.glob(os.path.join(top, "roles", "**", "*.yml"), recursive=True) \
            + glob.glob(os.path.join(top, "playbooks", "**", "*.yml"), recursive=True):
        with open(path) as f:
            for match in FQCN_USE.findall(f.read()):
                ns, name = [g for g in match if g][:2]
                used.setdefault("%s.%s" % (ns, name), set()).add(os.path.relpath(path, top))
    # the scan sees the roles' modules and filters
    assert {"community.crypto", "community.docker", "community.general"} <= set(used), sorted(used)
    undeclared = {c: sorted(p) for c, p in used.items()
                  if c not in ("ansible.builtin", "greenflow.platform") and c not in installed["manifest"]["dependencies"]}
    assert not undeclared, "used but not in galaxy.yml dependencies: %s" % undeclared


def test_ansible_doc_every_module(installed):
    modules = names("plugins/modules/*.py")
    listed = json.loads(run(["ansible-doc", "-t", "module", "-l", "-j", "greenflow.platform"],
                            env=installed["env"], cwd=installed["work"]).stdout)
    assert sorted(n.split(".")[-1] for n in listed) == modules
    docs = json.loads(run(["ansible-doc", "-t", "module", "-j"] + ["greenflow.platform." + m for m in modules],
                          env=installed["env"], cwd=installed["work"]).stdout)
    for m in modules:
        assert docs["greenflow.platform." + m]["doc"]["short_description"], m


def test_ansible_doc_every_role(installed):
    roles = [os.path.basename(p) for p in sorted(glob.glob(os.path.join(REPO_ROOT, "roles", "*")))]
    assert roles
    for role in roles:
        doc = json.loads(run(["ansible-doc", "-t", "role", "-j", "greenflow.platform." + role],
                             env=installed["env"], cwd=installed["work"]).stdout)
        entry_points = doc["greenflow.platform." + role]["entry_points"]
        assert "main" in entry_points and entry_points["main"]["short_description"], role


def test_every_playbook_by_fqcn_passes_syntax_check(installed, tmp_path):
    # playbooks/*.yml are playbooks; playbooks/tasks/ holds task files they include
    playbooks = ["greenflow.platform." + p for p in names("playbooks/*.yml")]
    # and the wrapper an AWX project holds (docs/awx.md): a playbook file importing ours by FQCN
    wrapper = tmp_path / "deploy.yml"
    wrapper.write_text("---\n- name: Release\n  ansible.builtin.import_playbook: greenflow.platform.deploy\n")
    proc = run(["ansible-playbook", "--syntax-check", "-i", "localhost,"] + playbooks + [str(wrapper)],
               env=installed["env"], cwd=installed["work"])
    assert proc.stdout.count("playbook: ") == len(playbooks) + 1, proc.stdout


def test_install_from_a_git_checkout(installed, tmp_path):
    """README's `ansible-galaxy collection install git+<url>`: the committed HEAD of this checkout."""
    cols = tmp_path / "collections"
    run(["ansible-galaxy", "collection", "install", "--offline", "--no-deps", "git+file://%s,HEAD" % REPO_ROOT,
         "-p", str(cols)], env=isolated_env(str(tmp_path), str(cols)), cwd=str(tmp_path))
    top = cols / "ansible_collections" / "greenflow" / "platform"
    shipped = sorted(p.name for p in top.iterdir())
    # the same build_ignore applies: collection content only
    assert not set(shipped) & {"lab", "tests", "molecule", "bench", "scripts", "Makefile", "collections"}, shipped
    assert not [p.name for p in top.iterdir() if p.name.startswith(".")]
    assert {"roles", "plugins", "playbooks", "meta", "LICENSE"} <= set(shipped)
    assert manifest_of_dir(str(top))["dependencies"] == installed["manifest"]["dependencies"]


# Two of the places that need community.crypto, run for real on localhost inside a temp dir:
# nginx_lb's self-signed certificate (the task file itself, with a stand-in for the role's "Reload nginx"
# handler, which would reload this machine's nginx) and pgbackrest's CA and host certificate (the role by
# FQCN, its TLS directory overridden by include_role vars; with a single host its server-restart handler
# is skipped).
CRYPTO_PLAYBOOK = textwrap.dedent("""\
    ---
    - name: Run the collection's community.crypto tasks in {{ work }}
      hosts: localhost
      connection: local
      gather_facts: false
      vars:
        ansible_python_interpreter: "{{ ansible_playbook_python }}"
      handlers:
        - name: Reload nginx
          ansible.builtin.copy:
            content: "notified\\n"
            dest: "{{ work }}/reload-notified"
            mode: "0644"
      tasks:
        - name: Self-signed certificate of the load balancer
          ansible.builtin.include_tasks: "{{ collection_dir }}/roles/nginx_lb/tasks/tls.yml"
          vars:
            nginx_lb_tls_source: selfsigned
            nginx_lb_tls_dir: "{{ work }}/tls"
            nginx_lb_tls_key_path: "{{ work }}/tls/greenflow-selfsigned.key"
            nginx_lb_tls_cert_path: "{{ work }}/tls/greenflow-selfsigned.crt"
            nginx_lb_tls_selfsigned_names: ["DNS:localhost", "IP:127.0.0.1"]
            nginx_lb_tls_selfsigned_days: 825
            nginx_lb_apps: [{name: shop, server_name: [shop.example.test]}]

        - name: pgBackRest's CA and this host's certificate (the repository host signs it)
          ansible.builtin.include_role:
            name: greenflow.platform.pgbackrest
            tasks_from: tls.yml
          vars:
            pgbackrest_repo_host: localhost
            pgbackrest_tls_dir: "{{ work }}/pgbackrest-tls"
    """)


def crypto_run(installed, collections_path, work):
    # the pgbackrest role makes its TLS directory before tls.yml (tasks/main.yml)
    os.makedirs(os.path.join(work, "pgbackrest-tls"))
    playbook = os.path.join(work, "crypto.yml")
    with open(playbook, "w") as f:
        f.write(CRYPTO_PLAYBOOK)
    env = isolated_env(work, collections_path)
    cmd = ["ansible-playbook", "-i", "localhost,", playbook, "-e",
           json.dumps({"work": work, "collection_dir": os.path.join(collections_path, "ansible_collections",
                                                                     "greenflow", "platform")})]
    return env, cmd


@pytest.fixture
def root_only():
    if os.geteuid() != 0:
        pytest.skip("the role tasks set owner root on what they make")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("pgbackrest's TLS files belong to postgres: no such user here (apt-get install postgresql)")


def test_crypto_tasks_make_a_key_and_a_certificate(installed, tmp_path, root_only):
    work = str(tmp_path)
    env, cmd = crypto_run(installed, installed["collections"], work)
    first = run(cmd, env=env, cwd=work)
    assert "failed=0" in first.stdout

    with open(os.path.join(work, "tls", "greenflow-selfsigned.crt"), "rb") as f:
        cert = x509.load_pem_x509_certificate(f.read())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"localhost", "shop.example.test"}
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert cert.issuer == cert.subject  # self-signed
    assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)
    assert oct(os.stat(os.path.join(work, "tls", "greenflow-selfsigned.key")).st_mode & 0o777) == "0o600"
    assert os.path.exists(os.path.join(work, "reload-notified")), "the role's reload was not notified"

    tls = os.path.join(work, "pgbackrest-tls")
    for key in ("ca.key", "host.key"):
        assert oct(os.stat(os.path.join(tls, key)).st_mode & 0o777) == "0o600", key
    with open(os.path.join(tls, "ca.crt"), "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    with open(os.path.join(tls, "host.crt"), "rb") as f:
        host = x509.load_pem_x509_certificate(f.read())
    assert ca.issuer == ca.subject and ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert host.issuer == ca.subject
    host.verify_directly_issued_by(ca)
    assert host.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "localhost"

    # a second run keeps the keys and the certificates (renewal only under 30 days left)
    second = run(cmd, env=env, cwd=work)
    assert re.search(r"localhost\s*:.* changed=0 .*failed=0", second.stdout), second.stdout[-2000:]


def test_without_community_crypto_the_key_task_fails(installed, tmp_path, root_only):
    """The same play on a collections path lacking community.crypto: proves the test above needs it."""
    work = str(tmp_path / "work")
    os.makedirs(work)
    partial = tmp_path / "collections" / "ansible_collections"
    for fqcn in ["greenflow.platform"] + [c for c in installed["dependencies"] if c != "community.crypto"]:
        ns, name = fqcn.split(".")
        os.makedirs(partial / ns, exist_ok=True)
        os.symlink(os.path.join(installed["collections"], "ansible_collections", ns, name), partial / ns / name)
    env, cmd = crypto_run(installed, str(tmp_path / "collections"), work)
    proc = run(cmd, env=env, cwd=work, check=False)
    assert proc.returncode != 0
    assert "couldn't resolve module/action 'community.crypto.openssl_privatekey'" in proc.stdout + proc.stderr
    assert not os.path.exists(os.path.join(work, "tls", "greenflow-selfsigned.crt"))
    shutil.rmtree(work)
