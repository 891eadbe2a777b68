#!/usr/bin/env bash
# ansible-test sanity on what the collection ships, and nothing else.
#
# The scope is the tarball: `ansible-galaxy collection build` (galaxy.yml's build_ignore decides what
# ships) is unpacked into .cache/sanity/ansible_collections/greenflow/platform and ansible-test runs
# there. Tests, bench, lab and tooling do not ship, so sanity does not judge them.
#
# ansible-test makes one pinned venv per sanity test (its own requirement files, from PyPI) under
# ~/.ansible/test/venv; HOME is pointed at .cache/sanity/home for it, so those venvs and pip's cache
# live in this checkout, are reused on the next run and never touch .venv's own pins.
#
# Usage: scripts/sanity.sh          run every sanity test that can run here; exit 1 on any failure
#        scripts/sanity.sh --list   name the tests that run and those that cannot run here, and why
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started=$(date +%s)

cache=$root/.cache/sanity
layout=$cache/ansible_collections/greenflow/platform
sanity_home=$cache/home
# ansible-test's sub-processes see only HOME and PATH; keep pyenv's shims (if any) working without $HOME.
export PYENV_ROOT=${PYENV_ROOT:-$HOME/.pyenv}

# Tests that cannot run on this machine, with the reason (printed on every run).
declare -A cannot_run=(
  [pslint]="needs PowerShell and PSScriptAnalyzer: not packaged in Debian, and the collection ships no PowerShell"
)

python=$root/.venv/bin/python
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

lay_out() {
  # Build the tarball and unpack it as the collection ansible-test sees: exactly the shipped files.
  rm -rf "$cache/dist" "$cache/ansible_collections"
  mkdir -p "$cache/dist" "$layout"
  "$root/.venv/bin/ansible-galaxy" collection build --force --output-path "$cache/dist" "$root" >/dev/null
  tar -xzf "$cache"/dist/greenflow-platform-*.tar.gz -C "$layout"
  # ansible-test lists the collection's files with git from the nearest .git up the tree; without one of
  # its own here that would be this checkout's, where .cache/ is ignored (= no files at all).
  git init -q "$layout"
  # ansible-test's ignore file (reasons per line) is sanity's own configuration: it does not ship,
  # but ansible-test reads it from the collection's tests/sanity/.
  if [ -d "$root/tests/sanity" ]; then
    mkdir -p "$layout/tests" && cp -r "$root/tests/sanity" "$layout/tests/"
  fi
}

lay_out
cd "$layout"
# shellcheck disable=SC2207  # one test name a line, no spaces in names
all_tests=($(HOME=$sanity_home "$root/.venv/bin/ansible-test" sanity --list-tests 2>/dev/null))
if [ ${#all_tests[@]} -eq 0 ]; then
  echo "ansible-test sanity --list-tests named no test" >&2
  exit 1
fi
skip_args=()
run_tests=()
for t in "${all_tests[@]}"; do
  if [ -n "${cannot_run[$t]:-}" ]; then skip_args+=(--skip-test "$t"); else run_tests+=("$t"); fi
done

print_scope() {
  echo "sanity runs (Python $pyver): ${run_tests[*]}"
  for t in "${!cannot_run[@]}"; do echo "sanity cannot run here: $t — ${cannot_run[$t]}"; done
  echo "sanity cannot run here: compile and import on Python versions other than $pyver — no such interpreter on this machine"
}

if [ "${1:-}" = "--list" ]; then
  print_scope
  exit 0
fi

bootstrap_pip() {
  # ansible-test makes its venvs without pip and then fetches a get-pip.py from ci-files.testing.ansible.com,
  # which only PyPI-reachable machines cannot fetch. It looks in its cache first; a stand-in there
  # installs the same pinned pip from a wheel downloaded from PyPI.
  local pip_version stand_in wheels
  pip_version=$("$python" -c 'import types
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(types.SimpleNamespace(version="'"$pyver"'"))["pip"])')
  stand_in=$sanity_home/.ansible/test/cache/get_pip_${pip_version//./_}.py
  wheels=$cache/wheels
  [ -s "$stand_in" ] && return 0
  mkdir -p "$(dirname "$stand_in")" "$wheels"
  "$python" -m pip download -q --no-deps --only-binary :all: -d "$wheels" "pip==$pip_version"
  cat >"$stand_in.tmp" <<EOF
# Stand-in for get-pip.py written by scripts/sanity.sh: run pip from its own wheel (a wheel is a zip
# Python can run) to install pip==$pip_version into the interpreter running this file.
import glob, subprocess, sys
wheel = glob.glob("$wheels/pip-$pip_version-*.whl")[0]
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]  # get-pip.py's own options
sys.exit(subprocess.call([sys.executable, wheel + "/pip", "install", "--no-index", "--find-links", "$wheels"] + args))
EOF
  mv "$stand_in.tmp" "$stand_in"
}

bootstrap_pip
print_scope
echo "running ansible-test sanity in $layout"
set +e
HOME=$sanity_home "$root/.venv/bin/ansible-test" sanity --local --python "$pyver" --color no "${skip_args[@]}" 2>&1 \
  | tee "$cache/last.log"
rc=${PIPESTATUS[0]}
set -e

echo "--- sanity took $(( $(date +%s) - started )) s (exit $rc; full log: .cache/sanity/last.log)"
if [ "$rc" -ne 0 ]; then
  # ansible-test's own error lines, once more at the end where a CI record keeps them
  echo "--- what failed"
  grep -E '^(ERROR|FATAL):' "$cache/last.log" | cut -c1-400 | tail -n 80 || true
fi
exit "$rc"
