#!/usr/bin/env bash
# ansible-test sanity on what the collection ships, and nothing else.
#
# The scope is the tarball: `ansible-galaxy collection build` (galaxy.yml's build_ignore decides what
# ships) is unpacked into .cache/sanity/ansible_collections/greenflow/platform and ansible-test runs
# there. Tests, bench, lab and tooling do not ship, so sanity does not judge them.
#
# ansible-test makes one venv per sanity test, pinned by its own requirement files, from PyPI, under
# ~/.ansible/test/venv. HOME is pointed at .cache/sanity/home for it, so those venvs and pip's cache stay
# in this checkout, are reused by the next run, and never touch .venv (ansible-lint's and molecule's pins).
#
# Usage: scripts/sanity.sh          run every sanity test that can run here; exit non-zero on any failure
#        scripts/sanity.sh --list   name the tests that run and those that cannot run here, and why
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
started=$(date +%s)
mode=${1:-run}

cache=$root/.cache/sanity
sanity_home=$cache/home
python=$root/.venv/bin/python
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# ansible-test passes only HOME and PATH to its sub-processes; pyenv's shims (if any) need their root.
export PYENV_ROOT=${PYENV_ROOT:-$HOME/.pyenv}

# Tests that cannot run on this machine, and why (printed by every run).
declare -A cannot_run=(
  [pslint]="needs PowerShell and PSScriptAnalyzer, which Debian does not package (and the collection ships no PowerShell)"
)
# compile and import are per Python version; --python keeps them to the venv's (Debian 12's, as on the
# platform's hosts). Other versions would need their interpreters, which Debian 12 does not have.
cannot_run_elsewhere="compile and import on Python versions other than $pyver: Debian 12 has no other interpreter"

ansible_test() {
  HOME=$sanity_home "$root/.venv/bin/ansible-test" "$@"
}

lay_out() {  # DIR: build the tarball and unpack it as DIR/ansible_collections/greenflow/platform
  local dir=$1 coll=$1/ansible_collections/greenflow/platform
  rm -rf "$dir/dist" "$dir/ansible_collections"
  mkdir -p "$dir/dist" "$coll"
  "$root/.venv/bin/ansible-galaxy" collection build --force --output-path "$dir/dist" "$root" >/dev/null
  tar -xzf "$dir"/dist/greenflow-platform-*.tar.gz -C "$coll"
  # ansible-test lists the files with git, from the nearest .git up the tree. Without one of its own here
  # that would be this checkout's, where .cache/ is ignored: no files at all, and every test "passes".
  git init -q "$coll"
  # The ignore file (one reason per line) is sanity's own configuration: it does not ship, but
  # ansible-test reads it from the collection's tests/sanity/.
  if [ -d "$root/tests/sanity" ]; then
    mkdir -p "$coll/tests" && cp -r "$root/tests/sanity" "$coll/tests/"
  fi
  echo "$coll"
}

# Which tests run here: every test ansible-test has for a collection, less those named above.
pick_tests() {  # COLLECTION_DIR
  local t
  # shellcheck disable=SC2207  # one name a line, no spaces in names
  all_tests=($(cd "$1" && ansible_test sanity --list-tests 2>/dev/null))
  if [ ${#all_tests[@]} -eq 0 ]; then
    echo "sanity: ansible-test sanity --list-tests named no test" >&2
    exit 1
  fi
  run_tests=() skip_args=()
  for t in "${all_tests[@]}"; do
    if [ -n "${cannot_run[$t]:-}" ]; then skip_args+=(--skip-test "$t"); else run_tests+=("$t"); fi
  done
}

print_scope() {
  local t
  echo "sanity runs (Python $pyver): ${run_tests[*]}"
  for t in "${!cannot_run[@]}"; do echo "sanity cannot run here: $t: ${cannot_run[$t]}"; done
  echo "sanity cannot run here: $cannot_run_elsewhere"
}

if [ "$mode" = "--list" ]; then
  # A layout of its own, so that listing never disturbs a run in progress.
  mkdir -p "$root/.cache"
  tmp=$(mktemp -d "$root/.cache/sanity-list.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  pick_tests "$(lay_out "$tmp")"
  print_scope
  exit 0
elif [ "$mode" != "run" ]; then
  echo "usage: $0 [--list]" >&2
  exit 2
fi

# One run at a time: a second one would unpack over the first one's files.
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9

bootstrap_pip() {
  # ansible-test makes its venvs without pip, then fetches a get-pip.py from ci-files.testing.ansible.com,
  # which a machine that reaches only PyPI cannot. It looks in its cache first: a stand-in there installs
  # the same pinned pip from pip's own wheel, downloaded once from PyPI.
  local pip_version stand_in wheels=$cache/wheels
  pip_version=$("$python" -c 'import types
from ansible_test._internal.python_requirements import get_venv_packages
print(get_venv_packages(types.SimpleNamespace(version="'"$pyver"'"))["pip"])')
  stand_in=$sanity_home/.ansible/test/cache/get_pip_${pip_version//./_}.py
  [ -s "$stand_in" ] && return 0
  mkdir -p "$(dirname "$stand_in")" "$wheels"
  "$python" -m pip download -q --no-deps --only-binary :all: -d "$wheels" "pip==$pip_version"
  cat >"$stand_in.tmp" <<EOF
# Stand-in for get-pip.py, written by scripts/sanity.sh: run pip from its wheel (Python runs a wheel's
# zip directly) to install pip==$pip_version into the interpreter that runs this file.
import glob, subprocess, sys
wheel = glob.glob("$wheels/pip-$pip_version-*.whl")[0]
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]  # get-pip.py's own options
sys.exit(subprocess.call([sys.executable, wheel + "/pip", "install", "--no-index", "--find-links", "$wheels"] + args))
EOF
  mv "$stand_in.tmp" "$stand_in"
}

coll=$(lay_out "$cache")
pick_tests "$coll"
bootstrap_pip
print_scope
echo "sanity: ansible-test sanity in ${coll#"$root"/}"
log=$cache/last.log
set +e
(cd "$coll" && ansible_test sanity --local --python "$pyver" --color no "${skip_args[@]}") 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}
set -e

# ansible-test exits 0 when it finds nothing to test; insist that every test it listed did run.
for t in "${run_tests[@]}"; do
  if ! grep -q "^Running sanity test \"$t\"" "$log"; then
    echo "ERROR: sanity test \"$t\" did not run" | tee -a "$log"
    [ "$rc" -ne 0 ] || rc=1
  fi
done

echo "--- sanity took $(( $(date +%s) - started )) s (exit $rc; full log: ${log#"$root"/})"
if [ "$rc" -ne 0 ]; then
  # ansible-test's own error lines once more, at the end, where a CI record keeps them
  echo "--- what failed"
  grep -E '^(ERROR|FATAL):' "$log" | cut -c1-400 | tail -n 80 || true
fi
exit "$rc"
