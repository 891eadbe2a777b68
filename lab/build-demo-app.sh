#!/usr/bin/env bash
# Build the demo app image for each version given (default: 1 2): greenflow/demo-app:<version>.
# Skips versions already built from the same app.py. Needs the lab's root filesystem image
# (lab/build-base-image.sh makes it).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="${DEMO_APP_REPOSITORY:-greenflow/demo-app}"
ROOTFS="${LAB_ROOTFS_IMAGE:-greenflow-lab/rootfs:bookworm}"
digest=$(sha256sum "$HERE/images/demo-app/app.py" "$HERE/images/demo-app/Dockerfile" | sha256sum | cut -c1-12)
[ $# -gt 0 ] || set -- 1 2
for version in "$@"; do
  have=$(docker image inspect -f '{{index .Config.Labels "greenflow.source"}}' "$REPO:$version" 2>/dev/null || true)
  if [ "$have" = "$digest" ]; then
    echo "unchanged: $REPO:$version"
    continue
  fi
  docker build -q -t "$REPO:$version" --label "greenflow.source=$digest" \
    --build-arg ROOTFS="$ROOTFS" --build-arg VERSION="$version" "$HERE/images/demo-app" >/dev/null 2>"$HERE/.build.log" \
    || { cat "$HERE/.build.log" >&2; exit 1; }
  echo "built: $REPO:$version"
done
