#!/usr/bin/env bash
# Run commands side by side and wait for all of them; exit 1 if any failed.
#   scripts/side-by-side.sh NAME 'COMMAND' [NAME 'COMMAND' ...]
# Every output line is prefixed with its command's name ("[NAME] ...") and written whole, so the
# interleaved output stays readable and greppable. At the end, one line per command: exit code and
# wall time. Python output is unbuffered, so that lines come as they happen.
set -uo pipefail

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
trap 'kill 0 2>/dev/null' INT TERM

names=()
while [ $# -ge 2 ]; do
  name=$1 command=$2
  shift 2
  names+=("$name")
  (
    started=$(date +%s)
    PYTHONUNBUFFERED=1 bash -c "$command" 2>&1 | sed -u "s/^/[$name] /"
    echo "${PIPESTATUS[0]} $(( $(date +%s) - started ))" >"$tmp/$name"
  ) &
done
[ $# -eq 0 ] || { echo "side-by-side.sh: NAME without a COMMAND: $1" >&2; exit 2; }
wait

rc=0
for name in "${names[@]}"; do
  read -r code seconds <"$tmp/$name" 2>/dev/null || { code=1 seconds='?'; }
  echo "--- [$name] exit $code after $seconds s"
  [ "$code" = 0 ] || rc=1
done
exit $rc
