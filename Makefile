# greenflow.platform — the two commands a newcomer types are `make demo` and `make test`.
# Everything they need (a venv, Debian packages, a Docker engine, the lab) is set up on the way.

SHELL := /bin/bash
VENV := .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# molecule installs a copy of the collection under ANSIBLE_HOME (ansible-lint under one of its own: see lint);
# keep that copy in this checkout (not ~/.ansible, where a stale copy from another checkout would shadow this one).
export ANSIBLE_HOME := $(CURDIR)/.cache/ansible-home
# Our scenarios live in the top-level molecule/ folder (the collection layout). Recent molecule looks
# in extensions/molecule/ when it finds a galaxy.yml; this tells it where ours are.
export MOLECULE_GLOB := molecule/*/molecule.yml

LAB_INVENTORY := inventories/lab
# Control-node packages: the lab engine and image builder, nginx and PostgreSQL for the integration
# tests (they run real servers on 127.0.0.1).
# shellcheck is for ansible-test's shellcheck sanity test.
# nftables: the firewall render tests check every rendered rule set with `nft -c -f` (nothing is loaded).
# libnginx-mod-http-lua and lua-resty-core: the reload-free split (nginx_lb_reload_free) in the integration tests.
# prometheus (promtool), prometheus-alertmanager (amtool) and mtail: the monitoring role's rules, Alertmanager
# configuration and mtail program are checked and unit-tested with them (tests/integration/test_monitoring_rules.py).
# Debian enables their daemons on install; on a control node with systemd, `systemctl disable --now prometheus
# prometheus-alertmanager mtail` if you do not want them running.
DEBIAN_PACKAGES := docker.io debootstrap nginx-light libnginx-mod-http-lua lua-resty-core wrk postgresql pgbackrest python3-venv \
                   rsync curl openssl shellcheck nftables prometheus prometheus-alertmanager mtail

.PHONY: help demo test venv debian-packages docker lab-up lab-down lab-status lab-image \
        test-unit test-integration test-lab test-lb-pair test-data test-release test-firewall test-monitoring test-shared-lab test-package lint sanity \
        molecule clean

help:
	@echo "make demo        bring the local lab up and run the platform on it"
	@echo "make test        unit + integration tests, lint, then on one lab: molecule, releases under load, data, firewall"
	@echo "make lab-up | lab-down | lab-status"

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	touch $@

venv: $(VENV)/.installed

debian-packages:
	@scripts/ensure-debian-packages.sh $(DEBIAN_PACKAGES)

docker: debian-packages
	@scripts/ensure-docker.sh

lab-up: venv docker
	ansible-playbook -i $(LAB_INVENTORY) lab/lab-up.yml

# The lab hosts' base image alone (lab-up builds it too when it is missing; later runs reuse it).
lab-image: docker
	lab/build-base-image.sh

lab-down: venv
	ansible-playbook -i $(LAB_INVENTORY) lab/lab-down.yml

lab-status:
	@lab/lab-status.sh

demo: lab-up
	ansible-playbook -i $(LAB_INVENTORY) playbooks/site.yml
	scripts/demo-release.sh
	@lab/lab-status.sh
	@scripts/demo-summary.sh

test-unit: venv
	pytest -q tests/unit

test-integration: venv debian-packages
	pytest -q tests/integration

# The collection as users get it: builds the tarball, checks its file list, installs it with only its
# declared dependencies (offline, from the venv's ansible package) and runs ansible-doc, syntax checks and
# its community.crypto tasks on it; the EE's build context (ansible-builder); the changelog and the CI
# examples. Prints each command's time.
test-package: venv
	pytest -q -s tests/package

# ansible-test sanity on what the collection ships (the built tarball's files, unpacked under .cache/sanity);
# its pinned per-test venvs are cached there too (scripts/sanity.sh).
sanity: venv debian-packages
	scripts/sanity.sh

# ansible-lint has an ANSIBLE_HOME of its own: in `make test` it runs while molecule's playbooks read the copy
# of the collection that molecule installed under ANSIBLE_HOME, which nothing else may touch (removing it
# here once failed a converge: "Could not find or access .../enabled.yml"). It finds greenflow.platform
# through ./collections (ansible.cfg).
LINT_ANSIBLE_HOME := $(CURDIR)/.cache/ansible-home-lint
lint: venv
	yamllint -s .
	ANSIBLE_HOME=$(LINT_ANSIBLE_HOME) ansible-lint

# The lab's own life cycle (up, up again = no change, status, down = nothing left), in a prefixed lab.
test-lab: venv docker
	pytest -q tests/lab/test_lab_lifecycle.py

# The load balancers' floating address (keepalived) on a lab of its own: two load balancers and a client in the
# lab network; the address moves when nginx, keepalived or the network of the master go (tests/lab/test_lb_pair.py).
test-lb-pair: venv docker
	nice -n 10 pytest -q -s -p no:cacheprovider --durations=12 tests/lab/test_lb_pair.py

# Backups, point-in-time restore, verification, retention and failover on a prefixed lab of its own.
test-data: venv docker
	pytest -q -s tests/lab/test_data.py

# Releases under load (good, bad, never healthy, rollbacks, webhook) on a prefixed lab of its own.
test-release: venv docker
	pytest -q -s tests/lab/test_release.py

# The host firewall on a prefixed lab of its own: the reachability matrix, restarts, a reboot.
test-firewall: venv docker
	pytest -q -s tests/lab/test_firewall.py

# Monitoring on a prefixed lab of its own: every target scraped, per-colour traffic, the dashboards' queries,
# PostgreSQL stopped on the replica -> webhook notification, resolved after the repair (times printed).
test-monitoring: venv docker
	pytest -q -s tests/lab/test_monitoring.py

molecule: venv docker
	molecule test --all

# molecule, then the release and data scenarios side by side, on one shared lab (prefix ci-shared-):
# the lab is provisioned once instead of three times (scripts/test-shared-lab.sh).
test-shared-lab: venv docker
	scripts/test-shared-lab.sh

# The shared lab is the long pole: it starts as soon as the venv and the lab image are there. Beside it,
# one after another: unit tests and lint, the integration tests (mostly waiting, on real nginx on
# 127.0.0.1), sanity, the package tests and last the lab's own life cycle (it needs no other test
# container to come or go while it runs: the integration tests' containers are gone by then, and the
# shared lab only makes its firewall test's container much later), then the load balancer pair's lab (niced). Lines are prefixed with [checks]
# and [shared-lab] (scripts/side-by-side.sh); -k: one failing step does not hide the others' results.
# First of all the venv is installed while the Debian packages, the Docker engine and the lab image are set up.
test:
	scripts/side-by-side.sh venv "$(MAKE) --no-print-directory venv" \
	  lab-image "$(MAKE) --no-print-directory lab-image"
	scripts/side-by-side.sh checks "$(MAKE) --no-print-directory -k test-unit lint test-integration sanity test-package test-lab test-lb-pair" \
	  shared-lab "$(MAKE) --no-print-directory test-shared-lab"

clean: lab-down
	rm -rf $(VENV) .pytest_cache
