#!/usr/bin/env bash
# Build (once) the Debian bookworm base image the lab hosts run: systemd as PID 1, python3 for
# Ansible, nothing else. Prints "unchanged" when the image is already there, "built" otherwise.
#
# Where the root filesystem comes from:
#   1. `debian:bookworm` from a registry, when one answers;
#   2. otherwise debootstrap --variant=minbase from the Debian mirror this control node's apt uses.
# The control node's apt sources and its own apt settings are copied into the image so that apt
# inside the lab reaches the same mirror.
set -euo pipefail

IMAGE="${LAB_BASE_IMAGE:-greenflow-lab/host:bookworm}"
ROOTFS_IMAGE="${LAB_ROOTFS_IMAGE:-greenflow-lab/rootfs:bookworm}"
HERE="$(cd "$(dirname "$0")" && pwd)"
PACKAGES="systemd,systemd-sysv,dbus,python3,python3-apt,iproute2,procps,ca-certificates,gnupg,curl,less"

# the image is rebuilt when its Dockerfile changed (the revision is a label on the image)
REVISION=$(sha256sum "$HERE/images/host/Dockerfile" | cut -c1-16)
if [ "$(docker image inspect --format '{{ index .Config.Labels "greenflow.lab.image-revision" }}' "$IMAGE" 2>/dev/null)" = "$REVISION" ]; then
  echo "unchanged: $IMAGE"
  exit 0
fi

first_mirror() {
  # The first Debian mirror of the control node's apt configuration (deb822 or one-line style).
  local uri=""
  if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $0 ~ /bookworm/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || { echo "no Debian mirror found in /etc/apt: cannot debootstrap" >&2; return 1; }
  echo "$uri"
}

copy_apt_config() {
  # Copy the control node's apt sources and the apt.conf.d files no package owns (local settings).
  local root="$1" f
  mkdir -p "$root/etc/apt/sources.list.d" "$root/etc/apt/apt.conf.d"
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] && cp "$f" "$root$f"
  done
  # keep only one source of truth: the copied deb822 file replaces debootstrap's sources.list
  if compgen -G "$root/etc/apt/sources.list.d/*.sources" >/dev/null && [ ! -f /etc/apt/sources.list ]; then
    rm -f "$root/etc/apt/sources.list"
  fi
  for f in /etc/apt/apt.conf.d/*; do
    [ -f "$f" ] || continue
    dpkg -S "$f" >/dev/null 2>&1 || cp "$f" "$root$f"
  done
}

if timeout 60 docker pull debian:bookworm >/dev/null 2>&1; then
  echo "using debian:bookworm from a registry" >&2
  docker tag debian:bookworm "$ROOTFS_IMAGE"
  NEED_PACKAGES=1
elif docker image inspect "$ROOTFS_IMAGE" >/dev/null 2>&1; then
  NEED_PACKAGES=0
else
  command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }
  mirror=$(first_mirror)
  work=$(mktemp -d /var/tmp/greenflow-rootfs.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  echo "no registry answers: debootstrap bookworm (takes about a minute)" >&2
  debootstrap --variant=minbase --include="$PACKAGES" \
    --keyring /usr/share/keyrings/debian-archive-keyring.gpg \
    bookworm "$work/root" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  copy_apt_config "$work/root"
  rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
  tar -C "$work/root" -c . | docker import - "$ROOTFS_IMAGE" >/dev/null
  NEED_PACKAGES=0
fi

docker build -q -t "$IMAGE" --label "greenflow.lab.image-revision=$REVISION" \
  --build-arg ROOTFS="$ROOTFS_IMAGE" \
  --build-arg NEED_PACKAGES="$NEED_PACKAGES" \
  --build-arg PACKAGES="${PACKAGES//,/ }" \
  "$HERE/images/host" >/dev/null 2>"$HERE/.build.log" || { cat "$HERE/.build.log" >&2; exit 1; }
echo "built: $IMAGE"
