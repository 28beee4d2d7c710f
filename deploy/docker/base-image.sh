#!/usr/bin/env bash
# deploy/docker/base-image.sh: make the Debian base image the Dockerfiles name
# (debian:bookworm-slim) without an image registry.
#
# Normally `docker build` pulls debian:bookworm-slim from Docker Hub. Where no
# registry is reachable (this project's CI), this script builds the same tag
# from Debian's package archive: `debootstrap --variant=minbase bookworm` into
# a temporary folder, then `docker import`. It downloads Debian packages only.
#
#   deploy/docker/base-image.sh [TAG]     (default debian:bookworm-slim)
#
# Does nothing when TAG already exists locally. Needs root (debootstrap) and
# installs debootstrap with apt-get when it is missing.
# Env: FEDPEG_DEBIAN_MIRROR (default http://deb.debian.org/debian),
#      FEDPEG_DEBIAN_SECURITY_MIRROR (default http://deb.debian.org/debian-security).
set -euo pipefail
tag="${1:-debian:bookworm-slim}"
mirror="${FEDPEG_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
log() { printf 'base-image.sh: %s\n' "$*" >&2; }

if docker image inspect "$tag" >/dev/null 2>&1; then
    log "$tag is already here"
    exit 0
fi
suite="${tag#*:}"
suite="${suite%%-*}"
[ "$(id -u)" = 0 ] || { log "debootstrap needs root; run as root or pull $tag from a registry"; exit 1; }
if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
root=$(mktemp -d /tmp/fedpeg-rootfs.XXXXXX)
trap 'rm -rf --one-file-system "$root" "$root.log"' EXIT
log "debootstrap --variant=minbase $suite from $mirror (about 30 s)"
debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.log" 2>&1 || {
    tail -20 "$root.log" >&2
    exit 1
}
# As the official images: security and point-release updates too, and no
# apt caches or package lists in the image.
cat >"$root/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb ${FEDPEG_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security} $suite-security main
EOF
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import -c 'CMD ["bash"]' - "$tag" >/dev/null
log "made $tag from $mirror ($(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%d MB", $1/1e6}'))"
